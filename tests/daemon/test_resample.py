from __future__ import annotations

import numpy as np
import pytest

from daemon.resample import StreamResampler, resample

RATE_PAIRS = [(48000, 16000), (44100, 16000), (22050, 16000), (8000, 16000), (16000, 48000), (17600, 16000)]


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / rate)[np.argmax(spectrum)])


def _level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-30)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_sine_frequency_and_amplitude_preserved(src: int, dst: int) -> None:
    x = _sine(1000.0, src, 1.0)
    y = resample(x, src, dst)
    assert y.dtype == np.float32
    assert len(y) == int(np.ceil(len(x) * dst / src))
    assert abs(_peak_frequency(y, dst) - 1000.0) <= 1.5
    ideal = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / dst)
    edge = dst // 50  # the first and last 20 ms see the silence outside the signal
    np.testing.assert_allclose(y[edge:-edge], ideal[edge:-edge], atol=1e-4)


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (44100, 16000), (22050, 16000)])
def test_downsampling_rejects_aliases_and_keeps_the_passband(src: int, dst: int) -> None:
    nyquist = dst / 2
    above = resample(_sine(1.05 * nyquist, src, 0.5), src, dst)  # would fold back to 0.95 x Nyquist
    assert _level_db(above[200:-200]) - _level_db(_sine(1000, src, 0.5)) < -70.0
    passband = resample(_sine(0.8 * nyquist, src, 0.5), src, dst)
    assert abs(_level_db(passband[200:-200]) - _level_db(_sine(1000, dst, 0.5))) < 0.1


def test_int16_input_is_scaled_to_unit_range() -> None:
    x = (_sine(440.0, 48000, 0.2) * 32767 * 2).astype(np.int16)  # amplitude ~ full scale
    y = resample(x, 48000, 16000)
    assert 0.95 < float(np.max(np.abs(y[100:-100]))) <= 1.01


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_matches_batch(src: int, dst: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(src // 2).astype(np.float32) * 0.1
    batch = resample(x, src, dst)
    stream = StreamResampler(src, dst)
    pieces = []
    pos = 0
    while pos < len(x):
        size = int(rng.choice([0, 1, 7, 160, 441, 480, 3000]))
        pieces.append(stream.process(x[pos : pos + size]))
        pos += size
    pieces.append(stream.flush())
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(batch)
    np.testing.assert_allclose(streamed, batch, atol=1e-6)


def test_stream_latency_is_bounded_and_flush_restarts() -> None:
    stream = StreamResampler(48000, 16000)
    x = _sine(300.0, 48000, 0.1)
    produced = sum(len(stream.process(x[i : i + 480])) for i in range(0, len(x), 480))
    expected = len(x) // 3
    held_back = expected - produced
    assert 0 <= held_back <= np.ceil(stream.latency_s * 16000) + 1
    assert stream.latency_s < 0.005
    assert len(stream.flush()) == held_back
    again = np.concatenate([stream.process(x), stream.flush()])  # a fresh stream after flush
    np.testing.assert_allclose(again, resample(x, 48000, 16000), atol=1e-6)


def test_equal_rates_return_a_float_copy() -> None:
    x = np.arange(10, dtype=np.int16)
    y = resample(x, 16000, 16000)
    np.testing.assert_array_equal(y, x / 32768.0)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((2, 10), dtype=np.float32), 48000, 16000)
    with pytest.raises(TypeError, match="int16"):
        resample(np.zeros(10, dtype=np.int32), 48000, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        StreamResampler(0, 16000)
    with pytest.raises(ValueError, match="positive integer"):
        resample(np.zeros(10, dtype=np.float32), 44100.5, 16000)  # type: ignore[arg-type]
