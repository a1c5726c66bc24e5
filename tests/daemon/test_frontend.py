from __future__ import annotations

import numpy as np
import pytest

from daemon.frontend import Frontend, FrontendConfig, MeanNormConfig, RunningMeanNorm


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


def _norm_cfg(frames: float = 50.0, n_mels: int = 40) -> MeanNormConfig:
    return MeanNormConfig(frames, tuple(float(v) for v in np.linspace(-8.0, -2.0, n_mels)))


@pytest.mark.parametrize("chunk", [1, 7, 24, 333])
def test_mean_norm_streaming_equals_whole_bit_for_bit(chunk: int) -> None:
    feats = Frontend().compute(_signal(2.0))
    whole = RunningMeanNorm(_norm_cfg()).apply(feats)
    norm = RunningMeanNorm(_norm_cfg())
    streamed = np.concatenate([norm.apply(feats[i : i + chunk]) for i in range(0, len(feats), chunk)])
    assert np.array_equal(streamed, whole)
    batched = RunningMeanNorm(_norm_cfg()).apply(np.stack([feats, feats[::-1]]))
    assert np.array_equal(batched[0], whole)
    assert np.array_equal(batched[1], RunningMeanNorm(_norm_cfg()).apply(feats[::-1]))


def test_mean_norm_is_the_documented_moving_average() -> None:
    cfg = _norm_cfg(frames=20.0, n_mels=3)
    rng = np.random.default_rng(1)
    feats = rng.normal(-5.0, 2.0, size=(200, 3)).astype(np.float32)
    a = np.exp(-1.0 / cfg.frames)
    mean = np.array(cfg.initial_mean)
    expected = np.empty((200, 3))
    for t, frame in enumerate(feats.astype(np.float64)):
        mean = a * mean + (1 - a) * frame
        expected[t] = frame - (mean - np.array(cfg.initial_mean))
    assert np.allclose(RunningMeanNorm(cfg).apply(feats), expected, atol=1e-4)


def test_mean_norm_removes_a_lasting_offset_per_band_and_starts_from_the_initial_mean() -> None:
    cfg = _norm_cfg(frames=50.0)
    feats = Frontend().compute(_signal(4.0))
    offset = np.linspace(-3.0, 3.0, 40).astype(np.float32)  # another microphone's (or voice's) colour
    plain = RunningMeanNorm(cfg).apply(feats)
    coloured = RunningMeanNorm(cfg).apply(feats + offset)
    first, last = np.abs(coloured - plain)[0], np.abs(coloured - plain)[-1]
    assert np.allclose(first, np.abs(offset) * np.exp(-1.0 / 50.0), rtol=1e-3)  # one frame in: barely moved
    assert np.max(last) < 0.01 * np.max(np.abs(offset))  # 4 s in: the offset is gone
    at_mean = np.broadcast_to(np.asarray(cfg.initial_mean, np.float32), (10, 40))
    assert np.allclose(RunningMeanNorm(cfg).apply(at_mean), at_mean)  # the initial mean passes unchanged


def test_mean_norm_config_round_trip_and_errors() -> None:
    cfg = _norm_cfg()
    again = MeanNormConfig.from_dict(cfg.to_dict())
    assert again.frames == cfg.frames and np.allclose(again.initial_mean, cfg.initial_mean, atol=1e-6)
    with pytest.raises(ValueError, match="frames > 0"):
        MeanNormConfig.from_dict({"frames": 0, "initial_mean": [0.0]})
    with pytest.raises(KeyError):
        MeanNormConfig.from_dict({"frames": 10})
    with pytest.raises(ValueError, match="32 bands, the normaliser 40"):
        RunningMeanNorm(MeanNormConfig(10.0, (0.0,) * 40)).apply(np.zeros((5, 32), np.float32))
