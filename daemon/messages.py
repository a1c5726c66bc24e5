"""MQTT payloads other than the lattice, as frozen dataclasses with a dict round trip.

Every payload is a JSON object whose ``schema`` field names its schema and version (``harkd.wake/1``); the
JSON Schema files live in ``daemon/schemas/`` so that subscribers can validate what they receive.
``from_dict`` validates against that schema and raises :class:`PayloadError` with every problem found and
where it is; ``to_dict`` gives a document that validates. :func:`encode` and :func:`decode` add the JSON
step (UTF-8, compact, no NaN).

The lattice (``daemon/lattice.py``) uses the same helpers: :func:`validate_payload`, :func:`load_schema`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import jsonschema

__all__ = [
    "SCHEMA_DIR",
    "BiasEntry",
    "BiasSet",
    "MediaDuck",
    "Metrics",
    "PayloadError",
    "Reset",
    "Result",
    "Status",
    "Wake",
    "decode",
    "decode_json",
    "encode",
    "encode_json",
    "load_schema",
    "validate_payload",
]

#: Where the JSON Schema files live: ``<name>.schema.json``.
SCHEMA_DIR = Path(__file__).with_name("schemas")

#: How many schema errors a :class:`PayloadError` message lists before "and N more".
_MAX_ERRORS_SHOWN = 5


class PayloadError(ValueError):
    """A payload that is not JSON, or does not match its schema. The message says what and where."""


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``daemon/schemas/<name>.schema.json`` as a dict (``name`` e.g. ``"lattice"``)."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))
        raise KeyError(f"no schema named {name!r} (known: {', '.join(known)})") from None
    return schema


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _error_path(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return "$" + path


def validate_payload(name: str, document: object) -> None:
    """Check ``document`` against schema ``name``; raise :class:`PayloadError` listing every problem."""
    errors = sorted(_validator(name).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    shown = [f"{_error_path(e)}: {e.message}" for e in errors[:_MAX_ERRORS_SHOWN]]
    more = len(errors) - len(shown)
    if more:
        shown.append(f"and {more} more")
    raise PayloadError(f"not a valid {name} payload: " + "; ".join(shown))


def encode_json(document: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (JSON has no such numbers)."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except ValueError as exc:
        raise PayloadError(f"cannot encode payload: {exc}") from exc


def decode_json(payload: bytes | str) -> object:
    """Parse a JSON payload; :class:`PayloadError` says why when it is not UTF-8 JSON."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8: {exc}") from exc
    if not text.strip():
        raise PayloadError("payload is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"payload is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


_M = TypeVar("_M", bound="_Message")


class _Message(Protocol):
    SCHEMA_NAME: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls: type[_M], document: object) -> _M: ...


def encode(message: _Message) -> bytes:
    """A message as the bytes published on MQTT."""
    return encode_json(message.to_dict())


def decode(cls: type[_M], payload: bytes | str) -> _M:
    """Parse and validate bytes received on MQTT as message class ``cls``."""
    return cls.from_dict(decode_json(payload))


def _check_finite(name: str, **values: float | None) -> None:
    for key, value in values.items():
        if value is not None and not math.isfinite(value):
            raise PayloadError(f"{name}.{key} must be a finite number, not {value!r}")


def _optional(document: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """``document`` plus the entries of ``values`` that are not None (optional fields are left out)."""
    out = dict(document)
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def _as_mapping(name: str, document: object) -> Mapping[str, Any]:
    validate_payload(name, document)
    if not isinstance(document, Mapping):  # the schemas all require an object; this keeps mypy informed
        raise PayloadError(f"not a valid {name} payload: expected a JSON object")
    return document


@dataclass(frozen=True)
class Status:
    """Retained device status; ``state="offline"`` is also the Last Will."""

    SCHEMA_NAME: ClassVar[str] = "status"
    SCHEMA_ID: ClassVar[str] = "harkd.status/1"

    device_id: str
    state: Literal["online", "offline"]
    version: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)  # model name -> version
    uptime_s: float | None = None  # seconds since the daemon started

    def to_dict(self) -> dict[str, Any]:
        _check_finite("status", uptime_s=self.uptime_s)
        return _optional(
            {"schema": self.SCHEMA_ID, "device_id": self.device_id, "state": self.state},
            version=self.version,
            models=dict(self.models) if self.models else None,
            uptime_s=self.uptime_s,
        )

    @classmethod
    def from_dict(cls, document: object) -> Status:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        return cls(d["device_id"], d["state"], d.get("version"), dict(d.get("models", {})), d.get("uptime_s"))


@dataclass(frozen=True)
class Wake:
    """The wake phrase was heard; the utterance that follows has ``utterance_id``."""

    SCHEMA_NAME: ClassVar[str] = "wake"
    SCHEMA_ID: ClassVar[str] = "harkd.wake/1"

    device_id: str
    utterance_id: str
    phrase: str
    score: float  # smoothed detector score, 0..1
    time: float  # seconds on the audio clock at the end of the wake phrase

    def to_dict(self) -> dict[str, Any]:
        _check_finite("wake", score=self.score, time=self.time)
        return {
            "schema": self.SCHEMA_ID,
            "device_id": self.device_id,
            "utterance_id": self.utterance_id,
            "phrase": self.phrase,
            "score": self.score,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, document: object) -> Wake:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        return cls(d["device_id"], d["utterance_id"], d["phrase"], float(d["score"]), float(d["time"]))


@dataclass(frozen=True)
class Reset:
    """Downstream work started from speculative lattice ``speculative_seq`` must be thrown away."""

    SCHEMA_NAME: ClassVar[str] = "reset"
    SCHEMA_ID: ClassVar[str] = "harkd.reset/1"

    device_id: str
    utterance_id: str
    speculative_seq: int
    reason: str  # e.g. "final_differs", "speech_resumed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.SCHEMA_ID,
            "device_id": self.device_id,
            "utterance_id": self.utterance_id,
            "speculative_seq": self.speculative_seq,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, document: object) -> Reset:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        return cls(d["device_id"], d["utterance_id"], d["speculative_seq"], d["reason"])


@dataclass(frozen=True)
class Result:
    """The words chosen for an utterance (normally by the rescorer)."""

    SCHEMA_NAME: ClassVar[str] = "result"
    SCHEMA_ID: ClassVar[str] = "harkd.result/1"

    utterance_id: str
    text: str
    device_id: str | None = None
    seq: int | None = None  # seq of the lattice the words were chosen from
    kind: Literal["speculative", "final"] | None = None
    score: float | None = None
    source: str | None = None  # e.g. "rescorer"

    def to_dict(self) -> dict[str, Any]:
        _check_finite("result", score=self.score)
        return _optional(
            {"schema": self.SCHEMA_ID, "utterance_id": self.utterance_id, "text": self.text},
            device_id=self.device_id,
            seq=self.seq,
            kind=self.kind,
            score=self.score,
            source=self.source,
        )

    @classmethod
    def from_dict(cls, document: object) -> Result:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        score = d.get("score")
        return cls(
            d["utterance_id"],
            d["text"],
            d.get("device_id"),
            d.get("seq"),
            d.get("kind"),
            None if score is None else float(score),
            d.get("source"),
        )


@dataclass(frozen=True)
class BiasEntry:
    """One name in a bias list: written as a plain string, or as ``{"name": ..., "boost": ...}``."""

    name: str  # as the user wrote it; the recogniser normalises it (daemon.textnorm)
    boost: float | None = None  # log-score bonus per matched token; None: the configured default

    def to_json(self) -> str | dict[str, Any]:
        """The plain name when there is no boost, else an object."""
        _check_finite("bias entry", boost=self.boost)
        return self.name if self.boost is None else {"name": self.name, "boost": self.boost}

    @classmethod
    def from_json(cls, item: str | Mapping[str, Any]) -> BiasEntry:
        if isinstance(item, str):
            return cls(item)
        boost = item.get("boost")
        return cls(item["name"], None if boost is None else float(boost))


@dataclass(frozen=True)
class BiasSet:
    """The bias list document: taken on ``bias/set``, from the state directory, and by ``--bias FILE``.

    ``{"contacts": [...], "appliances": [...]}`` where each entry is a name or ``{"name", "boost"}``;
    ``schema`` and ``version`` are optional. A new document replaces the previous one whole.
    """

    SCHEMA_NAME: ClassVar[str] = "bias_set"
    SCHEMA_ID: ClassVar[str] = "harkd.bias/1"

    contacts: tuple[BiasEntry, ...] = ()
    appliances: tuple[BiasEntry, ...] = ()
    version: str | None = None  # opaque version of the list (e.g. a hash), logged when applied

    @classmethod
    def of(cls, contacts: Iterable[str | BiasEntry] = (), appliances: Iterable[str | BiasEntry] = (),
           version: str | None = None) -> BiasSet:
        """Build from names or entries: ``BiasSet.of(["Siobhan Okafor"], ["aquarium pump"])``."""

        def entries(items: Iterable[str | BiasEntry]) -> tuple[BiasEntry, ...]:
            return tuple(i if isinstance(i, BiasEntry) else BiasEntry(i) for i in items)

        return cls(entries(contacts), entries(appliances), version)

    @property
    def phrases(self) -> tuple[BiasEntry, ...]:
        """Every entry, contacts first."""
        return self.contacts + self.appliances

    def to_dict(self) -> dict[str, Any]:
        return _optional(
            {
                "schema": self.SCHEMA_ID,
                "contacts": [e.to_json() for e in self.contacts],
                "appliances": [e.to_json() for e in self.appliances],
            },
            version=self.version,
        )

    @classmethod
    def from_dict(cls, document: object) -> BiasSet:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        return cls(
            tuple(BiasEntry.from_json(i) for i in d.get("contacts", ())),
            tuple(BiasEntry.from_json(i) for i in d.get("appliances", ())),
            d.get("version"),
        )


@dataclass(frozen=True)
class MediaDuck:
    """Ask media playback to duck (``duck=True``) or to restore its volume (``duck=False``)."""

    SCHEMA_NAME: ClassVar[str] = "media_duck"
    SCHEMA_ID: ClassVar[str] = "harkd.media_duck/1"

    device_id: str
    duck: bool
    utterance_id: str | None = None
    level: float | None = None  # volume to duck to, fraction of the current one

    def to_dict(self) -> dict[str, Any]:
        _check_finite("media_duck", level=self.level)
        return _optional(
            {"schema": self.SCHEMA_ID, "device_id": self.device_id, "duck": self.duck},
            utterance_id=self.utterance_id,
            level=self.level,
        )

    @classmethod
    def from_dict(cls, document: object) -> MediaDuck:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        level = d.get("level")
        return cls(d["device_id"], d["duck"], d.get("utterance_id"), None if level is None else float(level))


@dataclass(frozen=True)
class Metrics:
    """Periodic health figures."""

    SCHEMA_NAME: ClassVar[str] = "metrics"
    SCHEMA_ID: ClassVar[str] = "harkd.metrics/1"

    device_id: str
    uptime_s: float  # seconds since the daemon started
    real_time_factor: float | None = None  # processing time / audio time over the period
    lag_s: float | None = None  # seconds the pipeline is behind the audio
    dropped_frames: int | None = None  # audio frames lost to ring-buffer overflow since start
    cpu_percent: float | None = None  # percent of one core over the period
    outbox_pending: int | None = None  # messages waiting for the broker
    outbox_dropped: int | None = None  # messages dropped because the outbox was full, ever
    extra: Mapping[str, float | int | str | bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        _check_finite(
            "metrics",
            uptime_s=self.uptime_s,
            real_time_factor=self.real_time_factor,
            lag_s=self.lag_s,
            cpu_percent=self.cpu_percent,
        )
        return _optional(
            {"schema": self.SCHEMA_ID, "device_id": self.device_id, "uptime_s": self.uptime_s},
            real_time_factor=self.real_time_factor,
            lag_s=self.lag_s,
            dropped_frames=self.dropped_frames,
            cpu_percent=self.cpu_percent,
            outbox_pending=self.outbox_pending,
            outbox_dropped=self.outbox_dropped,
            extra=dict(self.extra) if self.extra else None,
        )

    @classmethod
    def from_dict(cls, document: object) -> Metrics:
        d = _as_mapping(cls.SCHEMA_NAME, document)
        return cls(
            d["device_id"],
            float(d["uptime_s"]),
            d.get("real_time_factor"),
            d.get("lag_s"),
            d.get("dropped_frames"),
            d.get("cpu_percent"),
            d.get("outbox_pending"),
            d.get("outbox_dropped"),
            dict(d.get("extra", {})),
        )
