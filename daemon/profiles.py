"""Firmware profiles: per-board settings (threads, audio block sizes, CPU share, model choice).

A profile is a YAML file named ``<name>.yaml``::

    description: Raspberry Pi 4 Model B, Pi 400, Compute Module 4
    match:
      models: ["Raspberry Pi 4 *", "Raspberry Pi 400*"]   # device-tree model string, shell-style, any case
      machines: []                                         # platform.machine() when no model matches
    cpu_weight: 400                                        # systemd CPUWeight suggested for harkd.slice
    settings:                                              # a config layer, same shape as harkd.yaml
      recognizer: {threads: 2}

Detection reads the model string from ``/proc/device-tree/model`` (or
``/sys/firmware/devicetree/base/model``); the profile with the longest matching pattern wins, so a
specific pattern beats a broad one. Without a device tree (x86-64 PCs) the machine architecture decides.

The directory is found in an installed wheel (``daemon/firmware_profiles``, mapped there by pyproject.toml),
in a source checkout (``firmware_profiles/`` beside ``daemon/``) or in ``/usr/share/harkd/firmware_profiles``.
"""

from __future__ import annotations

import difflib
import fnmatch
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEVICE_TREE_MODEL_PATHS = (Path("/proc/device-tree/model"), Path("/sys/firmware/devicetree/base/model"))
_PACKAGE_DIR = Path(__file__).resolve().parent
PROFILE_DIRS = (
    _PACKAGE_DIR / "firmware_profiles",  # installed wheel
    _PACKAGE_DIR.parent / "firmware_profiles",  # source checkout
    Path("/usr/share/harkd/firmware_profiles"),  # distribution package
)
_TOP_KEYS = {"description", "match", "cpu_weight", "settings"}
_MATCH_KEYS = {"models", "machines"}


class ProfileError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(f"{message} ({hint})" if hint else message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class FirmwareProfile:
    name: str  # the file name without ".yaml", e.g. "pi-4"
    description: str  # one line for people
    models: tuple[str, ...]  # shell-style patterns on the device-tree model string, case-insensitive
    machines: tuple[str, ...]  # platform.machine() values (lower case) used when no model pattern matches
    cpu_weight: int  # systemd CPUWeight (1–10000) suggested for harkd.slice on this board
    settings: Mapping[str, Any] = field(compare=False)  # config layer applied over the packaged defaults
    path: Path = Path()  # the file it was read from

    def model_match(self, model: str) -> str | None:
        """The longest of this profile's patterns that matches ``model``, or None."""
        hits = [p for p in self.models if fnmatch.fnmatchcase(model.lower(), p.lower())]
        return max(hits, key=len) if hits else None


def profiles_dir() -> Path:
    """The first existing profile directory (see the module docstring)."""
    for candidate in PROFILE_DIRS:
        if candidate.is_dir():
            return candidate
    raise ProfileError("no firmware profile directory found",
                       "looked in " + ", ".join(str(p) for p in PROFILE_DIRS))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProfileError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def read_profile(path: Path) -> FirmwareProfile:
    """Parse one profile file; raise :class:`ProfileError` naming the file for any structural problem."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read firmware profile {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"firmware profile {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"firmware profile {path} must be a mapping")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        guess = difflib.get_close_matches(unknown[0], sorted(_TOP_KEYS), n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else None
        raise ProfileError(f"{path}: unknown key {unknown[0]!r}", hint)
    match = data.get("match") or {}
    if not isinstance(match, dict) or set(map(str, match)) - _MATCH_KEYS:
        raise ProfileError(f"{path}: 'match' must be a mapping with 'models' and/or 'machines'")
    cpu_weight = data.get("cpu_weight", 100)
    if not isinstance(cpu_weight, int) or isinstance(cpu_weight, bool) or not 1 <= cpu_weight <= 10000:
        raise ProfileError(f"{path}: cpu_weight must be an integer from 1 to 10000")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ProfileError(f"{path}: 'settings' must be a mapping (a harkd.yaml layer)")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{path}: 'description' must be a string")
    return FirmwareProfile(
        name=path.stem,
        description=description,
        models=_strings(match.get("models"), f"{path}: match.models"),
        machines=tuple(m.lower() for m in _strings(match.get("machines"), f"{path}: match.machines")),
        cpu_weight=cpu_weight,
        settings=settings,
        path=path,
    )


def list_profiles(directory: Path | None = None) -> list[FirmwareProfile]:
    """Every profile in the directory, sorted by name."""
    folder = directory if directory is not None else profiles_dir()
    return [read_profile(p) for p in sorted(folder.glob("*.yaml"))]


def load_profile(name: str, directory: Path | None = None) -> FirmwareProfile:
    folder = directory if directory is not None else profiles_dir()
    path = folder / f"{name}.yaml"
    if "/" in name or not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        guess = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else "available: " + ", ".join(names)
        raise ProfileError(f"no firmware profile named {name!r} in {folder}", hint)
    return read_profile(path)


def read_device_model(paths: Sequence[Path] = DEVICE_TREE_MODEL_PATHS) -> str | None:
    """The board's device-tree model string (NUL terminator removed), or None without a device tree."""
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
        if text:
            return text
    return None


def detect_profile(model: str | None, machine: str | None = None,
                   directory: Path | None = None) -> FirmwareProfile | None:
    """The profile for this board: longest matching model pattern, else the machine architecture.

    Raises :class:`ProfileError` when two profiles match equally well (a defect in the profiles).
    """
    available = list_profiles(directory)
    if model:
        scored = [(len(hit), prof) for prof in available if (hit := prof.model_match(model)) is not None]
        if scored:
            best = max(score for score, _ in scored)
            winners = [prof for score, prof in scored if score == best]
            if len(winners) > 1:
                raise ProfileError(f"model {model!r} matches profiles "
                                   + " and ".join(p.name for p in winners) + " equally",
                                   "name one with 'profile:' in the config file")
            return winners[0]
    arch = (machine if machine is not None else platform.machine()).lower()
    for prof in available:
        if arch in prof.machines:
            return prof
    return None
