"""Model cards: what a model directory holds, how it was made, and the sha256 of every file.

The card is ``card.yaml`` in the model directory (a human-readable ``README.md`` is generated beside it).
The runtime refuses a directory whose files do not match the card, naming the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CARD_NAME = "card.yaml"


class ModelError(Exception):
    """A model directory that cannot be used: missing card, missing file, hash mismatch, bad graph."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    name: str
    kind: str  # "recognizer" or "wake"
    version: str
    files: dict[str, str]  # file name -> sha256
    frontend: dict[str, Any]
    model: dict[str, Any]  # architecture settings the runtime needs (chunk sizes, dims, ...)
    details: dict[str, Any] = field(default_factory=dict)  # data, voices, metrics, commands: for people

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "files": dict(self.files),
            "frontend": dict(self.frontend),
            "model": dict(self.model),
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "card") -> ModelCard:
        missing = [k for k in ("name", "kind", "version", "files", "frontend", "model") if k not in data]
        if missing:
            raise ModelError(f"{where}: missing field(s) {', '.join(missing)}")
        files = data["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()
        ):
            raise ModelError(f"{where}: 'files' must map file names to sha256 hex digests")
        known = {"name", "kind", "version", "files", "frontend", "model"}
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            version=str(data["version"]),
            files=dict(files),
            frontend=dict(data["frontend"]),
            model=dict(data["model"]),
            details={k: v for k, v in data.items() if k not in known},
        )

    def save(self, directory: Path) -> Path:
        path = directory / CARD_NAME
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path


def load_card(directory: Path, verify: bool = True) -> ModelCard:
    """Read ``directory/card.yaml``; with ``verify``, check every listed file exists and matches its hash."""
    path = directory / CARD_NAME
    if not path.is_file():
        raise ModelError(f"{directory}: no model card ({CARD_NAME}); is this a harkd model directory?")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model card: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model card must be a YAML mapping")
    card = ModelCard.from_dict(data, where=str(path))
    if verify:
        for name, expected in card.files.items():
            file = directory / name
            if not file.is_file():
                raise ModelError(f"{file}: listed in the model card but missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ModelError(
                    f"{file}: sha256 {actual} does not match the model card ({expected}); "
                    "the file is corrupt or was replaced"
                )
    return card
