"""Reading audio files (WAV, FLAC, anything libsndfile reads) as 16 kHz mono int16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from daemon.frontend import SAMPLE_RATE


class AudioFileError(Exception):
    """A file that cannot be read as audio; the message names the file and the reason."""


def read_audio(path: Path) -> npt.NDArray[np.int16]:
    """Decode ``path``, mix to mono and resample to 16 kHz if needed."""
    import soundfile as sf

    from daemon.resample import resample

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"{path}: cannot read audio: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: no audio samples")
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = resample(mono, int(rate), SAMPLE_RATE)
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
