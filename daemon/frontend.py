"""Streaming log-mel front end: the one feature implementation shared by the device and by training.

Settings (see :class:`FrontendConfig`): 16 kHz input, 25 ms Hann window (400 samples) zero-padded to a
512-point FFT, 10 ms hop (160 samples), 40 triangular mel filters (HTK mel scale) from 20 Hz to 7600 Hz on
the power spectrum, natural log with a floor of 1e-6. Samples are scaled to [-1, 1) (int16 / 32768).

Frame ``i`` covers samples ``[i * hop, i * hop + window)``; there is no padding at the start, so a stream
of ``n`` samples yields ``max(0, 1 + (n - window) // hop)`` frames whether it arrives at once or in pieces.
Each frame's features are computed on their own (one row at a time through the same numpy calls), so
batch and chunk-by-chunk streaming give bit-identical results.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000  # hertz


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = SAMPLE_RATE  # hertz
    window: int = 400  # samples (25 ms)
    hop: int = 160  # samples (10 ms)
    n_fft: int = 512  # FFT points
    n_mels: int = 40  # mel filters
    f_min: float = 20.0  # hertz
    f_max: float = 7600.0  # hertz
    log_floor: float = 1e-6  # added to mel energies before the log

    def to_dict(self) -> dict[str, float | int]:
        return {
            "sample_rate": self.sample_rate,
            "window": self.window,
            "hop": self.hop,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "log_floor": self.log_floor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, float | int]) -> FrontendConfig:
        return cls(
            sample_rate=int(data["sample_rate"]),
            window=int(data["window"]),
            hop=int(data["hop"]),
            n_fft=int(data["n_fft"]),
            n_mels=int(data["n_mels"]),
            f_min=float(data["f_min"]),
            f_max=float(data["f_max"]),
            log_floor=float(data["log_floor"]),
        )


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(cfg: FrontendConfig) -> npt.NDArray[np.float32]:
    """Triangular filters, shape (n_fft // 2 + 1, n_mels)."""
    n_bins = cfg.n_fft // 2 + 1
    bin_hz = np.arange(n_bins) * cfg.sample_rate / cfg.n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(cfg.f_min)), _hz_to_mel(np.array(cfg.f_max)),
                                   cfg.n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights.T.astype(np.float32)


class Frontend:
    """Computes log-mel features; holds no per-stream state (see :class:`FeatureStream`)."""

    def __init__(self, cfg: FrontendConfig | None = None) -> None:
        self.cfg = cfg or FrontendConfig()

    @cached_property
    def _window(self) -> npt.NDArray[np.float32]:
        n = self.cfg.window
        return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)

    @cached_property
    def _filters(self) -> npt.NDArray[np.float32]:
        return mel_filterbank(self.cfg)

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.cfg.window:
            return 0
        return 1 + (num_samples - self.cfg.window) // self.cfg.hop

    def frame_features(self, frame: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Log-mel of one frame of ``window`` float samples in [-1, 1)."""
        spectrum = np.fft.rfft(frame * self._window, n=self.cfg.n_fft)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        mel = power @ self._filters
        return np.log(mel + np.float32(self.cfg.log_floor)).astype(np.float32)

    def compute(self, samples: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Features of a whole signal, shape (frames, n_mels). int16 input is scaled by 1/32768."""
        signal = as_float(samples)
        n = self.num_frames(len(signal))
        out = np.empty((n, self.cfg.n_mels), dtype=np.float32)
        hop, win = self.cfg.hop, self.cfg.window
        for i in range(n):
            out[i] = self.frame_features(signal[i * hop : i * hop + win])
        return out

    def stream(self) -> FeatureStream:
        return FeatureStream(self)


def as_float(samples: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """int16 PCM -> float32 in [-1, 1); float input is passed through as float32."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    return np.asarray(samples, dtype=np.float32)


class FeatureStream:
    """Chunk-by-chunk front end: keeps the samples of the frame not yet complete between calls."""

    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self._pending = np.zeros(0, dtype=np.float32)

    def accept(self, samples: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Add samples; return the features of every frame they complete, shape (k, n_mels)."""
        buffered = np.concatenate([self._pending, as_float(samples)])
        feats = self.frontend.compute(buffered)
        consumed = len(feats) * self.frontend.cfg.hop
        self._pending = buffered[consumed:]
        return feats


@dataclass(frozen=True)
class MeanNormConfig:
    """Streaming mean normalisation of log-mel features (a recogniser setting: its card carries it).

    A voice's or a microphone's lasting colour is a near-constant offset per mel band in the log domain.
    The normaliser tracks each band's running mean with an exponential moving average of time constant
    ``frames`` (10 ms frames), starting from ``initial_mean`` (the training data's mean) at the start of each
    stream, and subtracts its departure from ``initial_mean``: ``out = x - (m_t - initial_mean)``, with
    ``m_t = a * m_(t-1) + (1 - a) * x_t`` and ``a = exp(-1 / frames)``. It is causal, so a stream needs no
    look-ahead, and it runs in numpy beside the front end (not inside the int8 encoder, where its state
    would be re-quantised every chunk).
    """

    frames: float  # time constant of the running mean, frames
    initial_mean: tuple[float, ...]  # (n_mels,) the running mean at the start of a stream

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "initial_mean": [round(float(v), 6) for v in self.initial_mean]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeanNormConfig:
        frames = float(data["frames"])
        mean = tuple(float(v) for v in data["initial_mean"])
        if frames <= 0 or not mean:
            raise ValueError(f"mean normalisation needs frames > 0 and an initial mean, got {data!r}")
        return cls(frames, mean)


class RunningMeanNorm:
    """The state of :class:`MeanNormConfig` for one stream (or for a batch of streams of equal length).

    Frames are processed one at a time through the same numpy calls, so a whole utterance and the same
    utterance fed in pieces give bit-identical results. Inputs are (T, n_mels) or (B, T, n_mels).
    """

    def __init__(self, cfg: MeanNormConfig) -> None:
        self.cfg = cfg
        self._initial = np.asarray(cfg.initial_mean, dtype=np.float32)
        self._decay = np.float32(np.exp(-1.0 / cfg.frames))
        self._mean: npt.NDArray[np.float32] | None = None

    def apply(self, feats: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        feats = np.asarray(feats, dtype=np.float32)
        if feats.shape[-1] != len(self._initial):
            raise ValueError(f"features have {feats.shape[-1]} bands, the normaliser {len(self._initial)}")
        if self._mean is None:
            self._mean = np.broadcast_to(self._initial, feats.shape[:-2] + self._initial.shape).copy()
        out = np.empty_like(feats)
        mean, decay, rest = self._mean, self._decay, np.float32(1.0) - self._decay
        for t in range(feats.shape[-2]):
            frame = feats[..., t, :]
            mean = decay * mean + rest * frame
            out[..., t, :] = frame - (mean - self._initial)
        self._mean = mean
        return out
