"""harkd configuration: a typed schema, layered YAML, every error reported at once.

Layers, each overriding the one before:

1. the packaged defaults (``daemon/defaults.yaml``),
2. a firmware profile (``firmware_profiles/*.yaml``): auto-detected from the device-tree model string, or
   named by ``profile:`` in the config file, by ``--set profile=NAME`` or by ``profile_name``,
3. the config file (``/etc/harkd/harkd.yaml`` unless another path is given),
4. command-line overrides, ``--set section.key=value`` (the value is read as YAML: ``3`` is a number,
   ``true`` a boolean, ``'"3"'`` a string).

:func:`load_config` returns a frozen :class:`Config` or raises :class:`ConfigError` listing every problem
(unknown keys with a "did you mean" hint, wrong types, values out of range, settings that contradict each
other), each with its dotted path and the layer it came from. Secrets are masked in :meth:`Config.dump`.
Relative paths in a config file are taken relative to that file's directory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import logging
import os
import re
import socket
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from daemon import profiles
from daemon.paths import default_model_dir

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/harkd/harkd.yaml")
DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
MASK = "********"

# Field metadata keys: "min"/"max" bound numbers (inclusive), "unit" names the unit in messages, "secret"
# masks the value in dumps, "null_default" lets YAML ``null`` stand for the field's computed default.


def _spec(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          unit: str = "", secret: bool = False, factory: Any = dataclasses.MISSING,
          null_default: bool = False) -> Any:
    meta = {"min": lo, "max": hi, "unit": unit, "secret": secret, "null_default": null_default}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta, repr=not secret)  # secrets stay out of repr() too


def default_device_id() -> str:
    """The host name, reduced to characters that are safe in an MQTT topic level."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]).strip("-")
    return name or "harkd"


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class AudioConfig:
    source: Literal["mic", "file"] = "mic"  # "mic": a PortAudio input device; "file": a WAV/FLAC file
    device: str | int | None = None  # PortAudio device index, or a substring of its name; None: default input
    file: Path | None = None  # audio file read when source is "file"
    pace: Literal["realtime", "fast"] = "realtime"  # file source: real-time pacing or as fast as possible
    sample_rate: int | None = _spec(None, lo=8000, hi=192000, unit="hertz")  # device rate; None: 16000 if
    # the device takes it, else its default rate (resampled to 16 kHz)
    channels: int = _spec(1, lo=1, hi=32, unit="channels")  # channels opened; more than one are averaged
    block_ms: int = _spec(20, lo=5, hi=500, unit="milliseconds")  # audio per device callback and per chunk
    buffer_ms: int = _spec(2000, lo=100, hi=60000, unit="milliseconds")  # ring buffer between the device
    # callback and the pipeline; when full the oldest audio is dropped and counted
    retry_max_s: float = _spec(30.0, lo=0.1, hi=3600, unit="seconds")  # longest wait between attempts to
    # (re)open a missing microphone; waits start at 0.5 s and double


@dataclass(frozen=True)
class WakeConfig:
    engine: Literal["model", "vad"] = "model"  # what starts an utterance. "model": the wake-word model
    # (daemon.wake.WakeTrigger); "vad": any speech onset heard by the energy voice activity detector
    # (daemon.trigger.VadTrigger), for push-to-talk style set-ups, quiet rooms and test benches
    pre_roll_ms: int = _spec(300, lo=0, hi=1000, unit="milliseconds")  # engine vad: audio from before
    # the speech onset fed to the recogniser first, so the start of the first word is not cut off (the
    # model engine starts at its trigger point, just after the wake phrase)
    model: str = "wake"  # name of a shipped model, looked up by daemon.paths.default_model_dir
    model_dir: Path | None = None  # explicit model directory (model card inside); None: found from ``model``
    threshold: float | None = _spec(None, lo=0.01, hi=0.99, unit="probability")  # smoothed score that fires
    # the wake word; lower is more sensitive (more false wakes). None: the threshold calibrated for the model
    # (its card's model.threshold; 0.6 for a card without one)
    smoothing_frames: int = _spec(5, lo=1, hi=100, unit="model output frames")  # scores averaged before
    # the threshold
    refractory_ms: int = _spec(2000, lo=0, hi=60000, unit="milliseconds")  # no second wake within this
    threads: int = _spec(1, lo=1, hi=16, unit="threads")  # TFLite threads for the wake-word model

    @property
    def model_path(self) -> Path:
        """``model_dir`` if set, else where the shipped model ``model`` is installed."""
        return self.model_dir or default_model_dir(self.model)


@dataclass(frozen=True)
class RecognizerConfig:
    model: str = "recognizer"  # name of a shipped model, looked up by daemon.paths.default_model_dir
    model_dir: Path | None = None  # explicit model directory (graphs, tokens, card); None: from ``model``
    threads: int = _spec(2, lo=1, hi=16, unit="threads")  # TFLite threads for the encoder
    beam_size: int = _spec(4, lo=1, hi=32, unit="hypotheses")  # beam search width
    vocabulary_penalty: float = _spec(2.0, lo=0.0, hi=20.0, unit="nats")  # charged once per word outside the
    # model's vocabulary and the bias list (daemon.vocabulary); 0 turns it off
    max_utterance_s: float = _spec(10.0, lo=1.0, hi=60.0, unit="seconds")  # an utterance is cut here

    @property
    def model_path(self) -> Path:
        """``model_dir`` if set, else where the shipped model ``model`` is installed."""
        return self.model_dir or default_model_dir(self.model)


@dataclass(frozen=True)
class EndpointConfig:
    final_silence_ms: int = _spec(600, lo=100, hi=5000, unit="milliseconds")  # trailing non-speech that
    # ends the utterance (final lattice)
    speculative_lead_ms: int = _spec(200, lo=0, hi=2000, unit="milliseconds")  # the speculative end point
    # fires this much before the final one; 0 turns speculation off
    min_speech_ms: int = _spec(200, lo=0, hi=5000, unit="milliseconds")  # shorter speech is not an utterance
    max_leading_silence_ms: int = _spec(4000, lo=100, hi=30000, unit="milliseconds")  # after the wake
    # phrase, give up when no speech starts within this


@dataclass(frozen=True)
class BiasConfig:
    file: Path | None = None  # bias list document (JSON, the bias/set schema) loaded at start
    boost: float = _spec(1.0, lo=0.0, hi=20.0, unit="nats per matched token")  # log-probability bonus
    hold: float = _spec(0.25, lo=0.0, hi=1.0, unit="share of the boost")  # share of each token's bonus given
    # while a name is still being matched (the rest when it completes; see daemon.bias)
    verify: bool = False  # at the end of an utterance, try bias phrases that sound like a span of the best
    # words and keep them if the model's own likelihood plus the bias says so (daemon.bias_verify; costs
    # about 55% more decode time with 1,000 names: README, "Context biasing")


@dataclass(frozen=True)
class MqttTlsConfig:
    enabled: bool = False  # connect with TLS
    ca: Path | None = None  # CA bundle (PEM) that signed the broker's certificate; None: system store
    cert: Path | None = None  # client certificate (PEM) for mutual TLS
    key: Path | None = None  # private key of the client certificate (PEM)
    insecure: bool = False  # skip the broker host-name check (testing only)


@dataclass(frozen=True)
class OutboxConfig:
    path: Path | None = None  # persistent outbox file; None: <state_dir>/outbox.db
    max_messages: int = _spec(10000, lo=1, hi=10_000_000, unit="messages")  # messages kept while offline
    max_bytes: int = _spec(64 * 1024 * 1024, lo=1024, hi=1024**3, unit="bytes")  # payloads and topics, in all
    policy: Literal["drop-oldest"] = "drop-oldest"  # when full, the oldest lattices go first (stale
    # lattices are worth least), then the oldest other messages; the only policy so far


@dataclass(frozen=True)
class MqttConfig:
    host: str = "localhost"  # broker host name or address
    port: int = _spec(1883, lo=1, hi=65535, unit="TCP port")  # 8883 is the usual TLS port
    protocol: Literal["5", "3.1.1"] = "5"  # MQTT protocol version
    client_id: str | None = None  # None: "harkd-<device_id>"
    username: str | None = None  # broker user name
    password: str | None = _spec(None, secret=True)  # broker password (never printed)
    keepalive_s: int = _spec(30, lo=5, hi=3600, unit="seconds")  # MQTT keep-alive interval
    reconnect_min_s: float = _spec(1.0, lo=0.1, hi=3600, unit="seconds")  # first reconnect delay; doubles
    reconnect_max_s: float = _spec(60.0, lo=0.1, hi=3600, unit="seconds")  # longest reconnect delay
    max_inflight: int = _spec(10, lo=1, hi=1000, unit="messages")  # sent but not yet acknowledged
    prefix: str = "harkd"  # topics are <prefix>/<device_id>/...
    qos: int = _spec(1, lo=0, hi=2, unit="QoS level")  # QoS of published messages
    hermes: bool = False  # also publish Rhasspy/Snips Hermes topics
    hermes_wakeword_id: str = "default"  # <id> in hermes/hotword/<id>/detected
    tls: MqttTlsConfig = field(default_factory=MqttTlsConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)


@dataclass(frozen=True)
class MetricsConfig:
    interval_s: float = _spec(30.0, lo=0.0, hi=86400.0, unit="seconds")  # metrics publishing period; 0: off


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"  # lowest level logged
    journald: Literal["auto", "on", "off"] = "auto"  # "auto": native journald records when run by systemd


@dataclass(frozen=True)
class ContactsConfig:
    vcard_paths: tuple[Path, ...] = ()  # vCard files or directories read into the bias list
    carddav_url: str | None = None  # CardDAV address book URL
    carddav_username: str | None = None  # CardDAV user name
    carddav_password: str | None = _spec(None, secret=True)  # CardDAV password (never printed)
    sync_interval_s: float = _spec(3600.0, lo=60.0, hi=604800.0, unit="seconds")  # address book refresh


@dataclass(frozen=True)
class Config:
    device_id: str = _spec(factory=default_device_id, null_default=True)  # <device_id> in MQTT topics;
    # null: the host name
    profile: str = "auto"  # firmware profile: "auto" (device tree), "none", or a profile name
    state_dir: Path = Path("/var/lib/harkd")  # writable state: outbox, received bias list
    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    recognizer: RecognizerConfig = field(default_factory=RecognizerConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    contacts: ContactsConfig = field(default_factory=ContactsConfig)
    # Where the values came from, in layer order (not a setting; shown by check-config).
    sources: tuple[str, ...] = field(default=(), compare=False, metadata={"internal": True})

    @property
    def topic_prefix(self) -> str:
        """``<mqtt.prefix>/<device_id>``: the root of every topic this device uses."""
        return f"{self.mqtt.prefix}/{self.device_id}"

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"harkd-{self.device_id}"

    @property
    def outbox_path(self) -> Path:
        return self.mqtt.outbox.path or self.state_dir / "outbox.db"

    def to_dict(self, *, mask_secrets: bool = True) -> dict[str, Any]:
        """Plain YAML/JSON-ready data (paths as strings); secrets replaced by ``********`` when set."""
        return _to_plain(self, mask_secrets)

    def dump(self) -> str:
        """The effective configuration as YAML, secrets masked."""
        return yaml.safe_dump(self.to_dict(mask_secrets=True), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    path: str  # dotted key, e.g. "mqtt.port"; "" for the whole document
    message: str
    hint: str | None = None  # e.g. "did you mean 'mqtt.host'?"
    source: str | None = None  # the layer the offending value came from

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        if self.source:
            text += f" [from {self.source}]"
        return text


class ConfigError(Exception):
    """The configuration is invalid; :attr:`issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        count = len(self.issues)
        lines = [f"{count} problem{'s' if count != 1 else ''} in the configuration:"]
        lines += [f"  - {issue}" for issue in self.issues]
        super().__init__("\n".join(lines))


class _Invalid(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# --------------------------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class _Layer:
    name: str  # shown in messages
    base_dir: Path | None  # relative paths are resolved against this; None: they are rejected
    rank: int = 0  # 0 defaults, 1 firmware profile, 2 config file, 3 --set


_SECTION_TYPES = (AudioConfig, WakeConfig, RecognizerConfig, EndpointConfig, BiasConfig, MqttTlsConfig,
                  OutboxConfig, MqttConfig, MetricsConfig, LoggingConfig, ContactsConfig, Config)
_HINTS: dict[type, dict[str, Any]] = {cls: typing.get_type_hints(cls) for cls in _SECTION_TYPES}


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def known_paths(cls: type = Config, prefix: str = "") -> list[str]:
    """Every settable dotted key of the schema, e.g. ``mqtt.tls.ca``."""
    paths: list[str] = []
    for name in _fields(cls):
        tp = _HINTS[cls][name]
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            paths += known_paths(typing.cast(type, tp), dotted + ".")
        else:
            paths.append(dotted)
    return paths


def _read_yaml(path: Path, layer: str, issues: list[ConfigIssue]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issues.append(ConfigIssue("", f"cannot read {path}: {exc.strerror or exc}", source=layer))
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        issues.append(ConfigIssue("", f"not valid YAML{where}: {problem}", source=layer))
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue("", f"the top level must be a mapping of sections, not {_kind(data)}",
                                  source=layer))
        return {}
    return data


def parse_overrides(overrides: Sequence[str], issues: list[ConfigIssue]) -> dict[str, Any]:
    """``["mqtt.port=1884", "audio.device=USB"]`` -> nested mapping; bad items are added to ``issues``."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            issues.append(ConfigIssue("", f"--set {item!r}: expected section.key=value", source="--set"))
            continue
        parts = key.split(".")
        if any(not part for part in parts):
            issues.append(ConfigIssue(key, f"--set {key!r}: empty part in the key", source="--set"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML on its own (e.g. "a: b"): take the text as it is
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], overlay: Mapping[str, Any], layer: _Layer,
           origins: dict[str, _Layer], prefix: str = "") -> None:
    for key, value in overlay.items():
        key = str(key)
        dotted = f"{prefix}{key}"
        current = base.get(key)
        if isinstance(current, dict) and value is None:
            continue  # "section:" with everything commented out
        if isinstance(value, dict) and (isinstance(current, dict) or key not in base):
            target = current if isinstance(current, dict) else base.setdefault(key, {})
            _merge(target, value, layer, origins, dotted + ".")
            continue
        for old in [p for p in origins if p.startswith(dotted + ".")]:
            del origins[old]
        base[key] = copy.deepcopy(value)
        origins[dotted] = layer


# --------------------------------------------------------------------------------------------- checks


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}s"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", Path: "a path",
             type(None): "null"}
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _close(word: str, choices: Sequence[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def _children(parent: str) -> list[str]:
    cls: Any = Config
    for part in [p for p in parent.split(".") if p]:
        cls = _HINTS[cls].get(part)
        if cls is None or not dataclasses.is_dataclass(cls):
            return []
    return list(_fields(cls))


def _unknown_key_hint(dotted: str) -> str | None:
    """A "did you mean" for an unknown key: a sibling spelled alike, else the same key in another section."""
    parent, _, key = dotted.rpartition(".")
    guess = _close(key, _children(parent))
    if guess is not None:
        return f"did you mean '{parent + '.' if parent else ''}{guess}'?"
    all_paths = known_paths()
    last = {p: p.rpartition(".")[2] for p in all_paths}
    same = [p for p, name in last.items() if name == key]
    if not same:
        near = _close(key, sorted(set(last.values())))
        same = [p for p, name in last.items() if name == near] if near else []
    if not same:
        near = _close(dotted, all_paths)
        same = [near] if near else []
    return "did you mean " + " or ".join(f"'{p}'" for p in same) + "?" if same else None


def _convert(value: Any, tp: Any, meta: Mapping[str, Any], layer: _Layer | None) -> Any:
    """Check ``value`` against the annotation ``tp``; return the typed value or raise :class:`_Invalid`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _Invalid(f"must be {_describe(tp)}, not null")
        problems: list[_Invalid] = []
        # The option of the value's own type first, so 3 stays an int in ``str | int`` rather than "3".
        for option in sorted(options, key=lambda opt: opt is not type(value)):
            if option is type(None):
                continue
            try:
                return _convert(value, option, meta, layer)
            except _Invalid as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        raise _Invalid(f"must be {_describe(tp)}, not {_kind(value)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        candidate = value
        if isinstance(value, bool) and "on" in choices and "off" in choices:
            candidate = "on" if value else "off"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            candidate = str(value)
        elif isinstance(value, str) and value not in choices and value.upper() in choices:
            candidate = value.upper()
        if candidate in choices:
            return candidate
        guess = _close(str(value), [str(c) for c in choices])
        raise _Invalid(f"{value!r} is not one of {', '.join(repr(c) for c in choices)}",
                       f"did you mean {guess!r}?" if guess else None)
    if origin is tuple:
        (item_type, _) = typing.get_args(tp)
        items = value if isinstance(value, list) else [value] if isinstance(value, str) else None
        if items is None:
            raise _Invalid(f"must be {_describe(tp)}, not {_kind(value)}")
        return tuple(_convert(item, item_type, meta, layer) for item in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Invalid(f"must be a boolean (true or false), not {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _in_range(value, meta)
        if isinstance(value, float) and value.is_integer():
            return _in_range(int(value), meta)
        raise _Invalid(f"must be an integer, not {_kind(value)} ({value!r})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _in_range(float(value), meta)
        raise _Invalid(f"must be a number, not {_kind(value)} ({value!r})")
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, not {_kind(value)}")
        if not value:
            raise _Invalid("must not be empty", "leave the key out or write null for the default")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise _Invalid(f"must be a path (a non-empty string), not {_kind(value)}")
        path = Path(value)
        if not path.is_absolute():
            if layer is None or layer.base_dir is None:
                raise _Invalid(f"{value!r} must be an absolute path")
            path = layer.base_dir / path
        return path
    raise _Invalid(f"unsupported setting type {tp!r}")  # a schema bug, reported rather than hidden


def _in_range(value: float, meta: Mapping[str, Any]) -> Any:
    lo, hi, unit = meta.get("min"), meta.get("max"), meta.get("unit") or ""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo:g}–{hi:g}" if lo is not None and hi is not None else (
            f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise _Invalid(f"{value:g} is out of range ({bounds}{' ' + unit if unit else ''})")
    return value


def _build(cls: type, raw: Any, prefix: str, origins: Mapping[str, _Layer], issues: list[ConfigIssue],
           failed: set[str]) -> Any:
    """Build a section from raw data, adding problems to ``issues``.

    A field with a problem keeps its default so that the checks across fields can still run; its path
    goes into ``failed`` so those checks stay quiet about it.
    """

    def source_of(dotted: str) -> str | None:
        layer = origins.get(dotted)
        if layer is None:  # a mapping: take the layer of any key below it
            layer = next((lyr for p, lyr in origins.items() if p.startswith(dotted + ".")), None)
        return layer.name if layer else None

    section_path = prefix.rstrip(".")
    if not isinstance(raw, dict):
        issues.append(ConfigIssue(section_path, f"must be a mapping of settings, not {_kind(raw)}",
                                  source=source_of(section_path)))
        failed.add(section_path)
        raw = {}
    known = _fields(cls)
    for key in raw:
        if str(key) not in known:
            dotted = f"{prefix}{key}"
            hint = _unknown_key_hint(dotted)
            issues.append(ConfigIssue(dotted, "unknown setting", hint, source_of(dotted)))
    values: dict[str, Any] = {}
    for name, fld in known.items():
        dotted = f"{prefix}{name}"
        tp = _HINTS[cls][name]
        if name not in raw:
            continue  # the dataclass default
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(typing.cast(type, tp), {} if value is None else value, dotted + ".",
                                  origins, issues, failed)
            continue
        if value is None and fld.metadata.get("null_default"):
            continue
        try:
            values[name] = _convert(value, tp, fld.metadata, origins.get(dotted))
        except _Invalid as exc:
            issues.append(ConfigIssue(dotted, exc.message, exc.hint, source_of(dotted)))
            failed.add(dotted)
    return cls(**values)


_TOPIC_LEVEL = re.compile(r"^[^/+#\s]+$")


def _cross_checks(config: Config, origins: Mapping[str, _Layer], failed: set[str]) -> list[ConfigIssue]:
    found: list[ConfigIssue] = []

    def add(path: str, message: str, hint: str | None = None, *, also: Sequence[str] = ()) -> None:
        involved = (path, *also)
        if any(p in failed or any(p.startswith(f + ".") for f in failed) for p in involved):
            return  # already reported as a bad value; the default in its place proves nothing
        layers = [origins[p] for p in involved if p in origins]
        layer = max(layers, key=lambda lyr: lyr.rank) if layers else None  # the layer that made the clash
        found.append(ConfigIssue(path, message, hint, layer.name if layer else None))

    if not _TOPIC_LEVEL.match(config.device_id):
        add("device_id", f"{config.device_id!r} cannot be an MQTT topic level",
            "use letters, digits, '.', '_' or '-'; no '/', '+', '#' or spaces")
    if not all(_TOPIC_LEVEL.match(level) for level in config.mqtt.prefix.split("/")):
        add("mqtt.prefix", f"{config.mqtt.prefix!r} is not a valid topic prefix",
            "no '+', '#', spaces, empty levels or leading/trailing '/'")
    for section in ("wake", "recognizer"):
        name = getattr(config, section).model
        if "/" in name or name in (".", ".."):
            add(f"{section}.model", f"{name!r} must be a model name, not a path",
                f"set {section}.model_dir for a directory")
    audio = config.audio
    if audio.source == "file" and audio.file is None:
        add("audio.file", "must be set when audio.source is 'file'", also=["audio.source"])
    if audio.buffer_ms < 4 * audio.block_ms:
        add("audio.buffer_ms", f"{audio.buffer_ms} ms holds fewer than 4 blocks of {audio.block_ms} ms",
            "make audio.buffer_ms at least 4 × audio.block_ms", also=["audio.block_ms"])
    ep = config.endpoint
    if ep.speculative_lead_ms >= ep.final_silence_ms:
        add("endpoint.speculative_lead_ms",
            f"{ep.speculative_lead_ms} ms must be shorter than endpoint.final_silence_ms "
            f"({ep.final_silence_ms} ms)", also=["endpoint.final_silence_ms"])
    mqtt = config.mqtt
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        add("mqtt.reconnect_min_s", f"{mqtt.reconnect_min_s:g} s is longer than mqtt.reconnect_max_s "
            f"({mqtt.reconnect_max_s:g} s)", also=["mqtt.reconnect_max_s"])
    if not _TOPIC_LEVEL.match(mqtt.hermes_wakeword_id):
        add("mqtt.hermes_wakeword_id", f"{mqtt.hermes_wakeword_id!r} cannot be an MQTT topic level")
    if mqtt.password is not None and mqtt.username is None:
        add("mqtt.password", "is set but mqtt.username is not", also=["mqtt.username"])
    tls = mqtt.tls
    if not tls.enabled:
        for name in ("ca", "cert", "key", "insecure"):
            if getattr(tls, name) not in (None, False):
                add(f"mqtt.tls.{name}", "is set but TLS is off", "set mqtt.tls.enabled: true",
                    also=["mqtt.tls.enabled"])
    if tls.key is not None and tls.cert is None:
        add("mqtt.tls.key", "is set but mqtt.tls.cert is not", also=["mqtt.tls.cert"])
    contacts = config.contacts
    if contacts.carddav_url is None and (contacts.carddav_username or contacts.carddav_password):
        add("contacts.carddav_url", "must be set when a CardDAV user name or password is",
            also=["contacts.carddav_username", "contacts.carddav_password"])
    return found


def _to_plain(section: Any, mask: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fld in dataclasses.fields(section):
        if fld.metadata.get("internal"):
            continue
        value = getattr(section, fld.name)
        if dataclasses.is_dataclass(value):
            out[fld.name] = _to_plain(value, mask)
        elif mask and fld.metadata.get("secret") and value is not None:
            out[fld.name] = MASK
        elif isinstance(value, Path):
            out[fld.name] = str(value)
        elif isinstance(value, tuple):
            out[fld.name] = [str(v) if isinstance(v, Path) else v for v in value]
        else:
            out[fld.name] = value
    return out


# --------------------------------------------------------------------------------------------- loading


def parse_config(data: Mapping[str, Any], source: str = "<mapping>", base_dir: Path | None = None) -> Config:
    """Validate one mapping on top of the schema defaults (no defaults file, no profile)."""
    layer = _Layer(source, base_dir, 2)
    tree: dict[str, Any] = {}
    origins: dict[str, _Layer] = {}
    _merge(tree, data, layer, origins)
    return _finish(tree, origins, [], (source,))


def _finish(tree: dict[str, Any], origins: dict[str, _Layer], issues: list[ConfigIssue],
            sources: tuple[str, ...]) -> Config:
    failed: set[str] = set()
    config = _build(Config, tree, "", origins, issues, failed)
    issues += _cross_checks(config, origins, failed)
    if issues:
        raise ConfigError(issues)
    result: Config = dataclasses.replace(config, sources=sources)
    return result


def load_config(path: str | os.PathLike[str] | None = DEFAULT_CONFIG_PATH, overrides: Sequence[str] = (),
                profile_name: str | None = None, *, device_model: str | None = None,
                profiles_dir: Path | None = None) -> Config:
    """Build the effective configuration from every layer; raise :class:`ConfigError` listing all problems.

    ``path`` None skips the config file; the default path may be absent, any other path must exist.
    ``profile_name`` (e.g. from ``--profile``) wins over ``profile:`` in the file or ``--set``.
    ``device_model`` replaces the device-tree model string read for auto-detection (tests, diagnosis).
    """
    issues: list[ConfigIssue] = []
    origins: dict[str, _Layer] = {}
    tree: dict[str, Any] = {}
    sources: list[str] = []

    defaults_layer = _Layer(f"defaults ({DEFAULTS_PATH})", None)
    _merge(tree, _read_yaml(DEFAULTS_PATH, defaults_layer.name, issues), defaults_layer, origins)
    sources.append(defaults_layer.name)

    file_data: dict[str, Any] = {}
    file_layer: _Layer | None = None
    if path is not None:
        file_path = Path(path)
        if file_path.exists() or file_path != DEFAULT_CONFIG_PATH:
            file_layer = _Layer(str(file_path), file_path.resolve().parent, 2)
            file_data = _read_yaml(file_path, file_layer.name, issues)
        else:
            log.info("no config file at %s; using defaults and the firmware profile", file_path)
    override_data = parse_overrides(overrides, issues)

    wanted = profile_name or override_data.get("profile") or file_data.get("profile") or tree.get("profile")
    chosen = _choose_profile(wanted, device_model, profiles_dir, issues)
    if chosen is not None:
        profile_layer = _Layer(f"firmware profile {chosen.name} ({chosen.path})", None, 1)
        _merge(tree, chosen.settings, profile_layer, origins)
        sources.append(profile_layer.name)
    if file_layer is not None:
        _merge(tree, file_data, file_layer, origins)
        sources.append(file_layer.name)
    if override_data:
        _merge(tree, override_data, _Layer("--set", Path.cwd(), 3), origins)
        sources.append("--set")
    # Record the profile actually used rather than "auto".
    tree["profile"] = chosen.name if chosen is not None else "none"
    return _finish(tree, origins, issues, tuple(sources))


def _choose_profile(wanted: Any, device_model: str | None, profiles_dir: Path | None,
                    issues: list[ConfigIssue]) -> profiles.FirmwareProfile | None:
    if wanted is None or wanted == "auto":
        model = device_model if device_model is not None else profiles.read_device_model()
        try:
            found = profiles.detect_profile(model, directory=profiles_dir)
        except profiles.ProfileError as exc:
            issues.append(ConfigIssue("profile", str(exc)))
            return None
        if found is None:
            log.warning("no firmware profile matches this machine (model %r); using the defaults", model)
        else:
            log.info("firmware profile %s detected (model %r)", found.name, model)
        return found
    if not isinstance(wanted, str):
        issues.append(ConfigIssue("profile", f"must be a string, not {_kind(wanted)}"))
        return None
    if wanted == "none":
        return None
    try:
        return profiles.load_profile(wanted, directory=profiles_dir)
    except profiles.ProfileError as exc:
        issues.append(ConfigIssue("profile", exc.message, exc.hint))
        return None


# --------------------------------------------------------------------------------------------- CLI glue


def add_config_arguments(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """Add ``--config`` (or a positional FILE), ``--set KEY=VALUE`` and ``--profile`` to a sub-command."""
    if positional:
        parser.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG_PATH), metavar="FILE",
                            help=f"config file (default: {DEFAULT_CONFIG_PATH})")
    else:
        parser.add_argument("--config", "-c", default=str(DEFAULT_CONFIG_PATH), metavar="FILE",
                            help=f"config file (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set mqtt.port=1884 (repeatable)")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="firmware profile to use instead of auto-detection ('none' for no profile)")


def load_config_from_args(args: argparse.Namespace) -> Config:
    """:func:`load_config` with the arguments added by :func:`add_config_arguments`."""
    return load_config(args.config, args.overrides, args.profile)
