"""Where harkd finds its shipped models: $HARKD_MODELS, then the system location, then the source tree."""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_MODELS = Path("/usr/share/harkd/models")
SOURCE_MODELS = Path(__file__).resolve().parents[1] / "models"


def default_model_dir(name: str) -> Path:
    """The directory of model ``name`` (e.g. "recognizer"); the first candidate that exists wins."""
    candidates = [Path(p) / name for p in os.environ.get("HARKD_MODELS", "").split(os.pathsep) if p]
    candidates += [SYSTEM_MODELS / name, SOURCE_MODELS / name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[-1]
