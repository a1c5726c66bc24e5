from __future__ import annotations

import numpy as np
import pytest

from daemon.frontend import Frontend, FrontendConfig


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    return (tone * 32767).astype(np.int16)


@pytest.mark.parametrize("chunk", [1, 160, 333, 1600, 4001])
def test_streaming_equals_batch_bit_for_bit(chunk: int) -> None:
    frontend = Frontend()
    samples = _signal(1.3)
    batch = frontend.compute(samples)
    stream = frontend.stream()
    parts = [stream.accept(samples[i : i + chunk]) for i in range(0, len(samples), chunk)]
    streamed = np.concatenate(parts)
    assert streamed.shape == batch.shape == (frontend.num_frames(len(samples)), 40)
    assert np.array_equal(streamed, batch)


def test_frame_count_and_settings() -> None:
    cfg = FrontendConfig()
    assert (cfg.window, cfg.hop, cfg.n_mels, cfg.sample_rate) == (400, 160, 40, 16000)
    frontend = Frontend(cfg)
    assert frontend.num_frames(399) == 0
    assert frontend.num_frames(400) == 1
    assert frontend.num_frames(16000) == 98
    assert FrontendConfig.from_dict(cfg.to_dict()) == cfg


def test_tone_energy_lands_in_the_right_mel_band() -> None:
    frontend = Frontend()
    t = np.arange(16000) / 16000
    low = frontend.compute((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)).mean(axis=0)
    high = frontend.compute((0.5 * np.sin(2 * np.pi * 4000 * t)).astype(np.float32)).mean(axis=0)
    assert np.argmax(low) < 10 < np.argmax(high)


def test_silence_hits_the_log_floor() -> None:
    feats = Frontend().compute(np.zeros(1600, dtype=np.int16))
    assert np.allclose(feats, np.log(1e-6))
