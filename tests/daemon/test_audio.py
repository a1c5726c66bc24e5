from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from daemon.audio import (
    AudioChunk,
    AudioSource,
    AudioSourceError,
    FileSource,
    FrameRing,
    MicSource,
    open_source,
)
from daemon.config import AudioConfig

RNG = np.random.default_rng(7)
NO_RESAMPLER = "daemon/resample.py (the shared resampler) is not in the tree yet"


def noise(n: int, channels: int = 1) -> npt.NDArray[np.int16]:
    """Full-scale random samples, extremes included, so any rescaling or rounding shows."""
    shape = (n,) if channels == 1 else (n, channels)
    x = RNG.integers(-32768, 32768, size=shape, dtype=np.int64).astype(np.int16)
    x.flat[:2] = [-32768, 32767]
    return x


# ------------------------------------------------------------------------------------------ AudioChunk


def test_chunk_is_read_only_and_validated() -> None:
    chunk = AudioChunk(np.arange(5, dtype=np.int16), start=10)
    assert (len(chunk), chunk.end, chunk.duration_s) == (5, 15, 5 / 16000)
    with pytest.raises(ValueError):
        chunk.samples[0] = 3
    with pytest.raises(TypeError):
        AudioChunk(np.zeros(4, dtype=np.float32), start=0)
    with pytest.raises(TypeError):
        AudioChunk(np.zeros((4, 2), dtype=np.int16), start=0)
    with pytest.raises(ValueError):
        AudioChunk(np.zeros(4, dtype=np.int16), start=-1)


def test_chunk_bytes_round_trip_and_equality() -> None:
    chunk = AudioChunk(noise(300), start=4800)
    again = AudioChunk.from_bytes(chunk.to_bytes(), chunk.start)
    assert again == chunk
    assert again != AudioChunk(chunk.samples.copy(), start=4801)
    assert len(chunk.to_bytes()) == 600


# ------------------------------------------------------------------------------------------ FrameRing


def test_ring_keeps_order_across_wraparound() -> None:
    ring = FrameRing(capacity=10, channels=1)
    out = []
    for k in range(7):
        ring.write(np.arange(k * 4, k * 4 + 4, dtype=np.int16)[:, None])
        first, frames = ring.read(3)
        out.append((first, frames[:, 0].tolist()))
    flat = [v for _, vals in out for v in vals]
    assert flat == list(range(21))
    assert [first for first, _ in out] == list(range(0, 21, 3))
    assert ring.overflows == 0 and ring.dropped == 0 and len(ring) == 28 - 21


def test_ring_drops_oldest_and_counts() -> None:
    ring = FrameRing(capacity=8, channels=2)
    frames = np.arange(24, dtype=np.int16).reshape(12, 2)
    assert ring.write(frames[:6]) == 0
    assert ring.write(frames[6:]) == 4  # 12 frames into 8 places
    first, kept = ring.read()
    assert first == 4 and np.array_equal(kept, frames[4:])
    assert (ring.overflows, ring.dropped, len(ring)) == (1, 4, 0)
    # One write bigger than the whole ring keeps its newest frames.
    big = np.arange(40, dtype=np.int16).reshape(20, 2)
    assert ring.write(big) == 12
    first, kept = ring.read()
    assert first == 12 + 12 and np.array_equal(kept, big[12:])
    assert ring.dropped == 16


# ------------------------------------------------------------------------------------------ FileSource


def write_wav(path: Path, samples: npt.NDArray[np.int16], rate: int = 16000, fmt: str = "WAV") -> Path:
    sf.write(str(path), samples, rate, subtype="PCM_16", format=fmt)
    return path


def read_all(source: AudioSource, timeout: float | None = None) -> list[AudioChunk]:
    chunks = []
    source.start()
    while not source.ended:
        chunk = source.read(timeout)
        if chunk is not None:
            chunks.append(chunk)
    source.stop()
    return chunks


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_file_source_fast_is_bit_exact_and_contiguous(tmp_path: Path, fmt: str) -> None:
    x = noise(16000 + 123)
    path = write_wav(tmp_path / f"a.{fmt.lower()}", x, fmt=fmt)
    source = FileSource(path, pace="fast", block_ms=20)
    assert isinstance(source, AudioSource)
    started = time.monotonic()
    chunks = read_all(source)
    assert time.monotonic() - started < 1.0
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), x)
    assert [len(c) for c in chunks[:-1]] == [320] * (len(chunks) - 1)
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks)) and chunks[0].start == 0
    stats = source.stats
    assert (stats.state, stats.samples, stats.chunks) == ("ended", len(x), len(chunks))
    assert stats.device_rate == 16000
    assert source.read(0) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_file_source_realtime_pacing_with_a_clock(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", noise(1600))  # 0.1 s = 5 blocks of 20 ms
    clock = FakeClock()
    source = FileSource(path, pace="realtime", block_ms=20, clock=clock, sleep=clock.sleep)
    source.start()
    first = source.read()
    assert first is not None and first.start == 0 and clock.sleeps == []  # due at once
    assert source.read(timeout=0.005) is None  # the next one is due in 20 ms: give up after 5 ms
    assert clock.now == pytest.approx(100.005)
    second = source.read(timeout=1.0)
    assert second is not None and second.start == 320 and clock.now == pytest.approx(100.02)
    rest = []
    while not source.ended:
        chunk = source.read()
        if chunk is not None:
            rest.append(chunk)
    assert [c.start for c in rest] == [640, 960, 1280]
    assert clock.now == pytest.approx(100.1)  # the end is noticed when the sixth block is due


def test_file_source_realtime_takes_real_time(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", noise(3200))  # 0.2 s
    started = time.monotonic()
    chunks = read_all(FileSource(path, pace="realtime", block_ms=20), timeout=1.0)
    assert sum(len(c) for c in chunks) == 3200
    assert time.monotonic() - started >= 0.17


def test_file_source_converts_rate_and_channels(tmp_path: Path) -> None:
    pytest.importorskip("daemon.resample", reason=NO_RESAMPLER)
    from daemon.audiofile import read_audio

    stereo = (noise(44100, channels=2) // 4).astype(np.int16)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, 44100, subtype="PCM_16")
    chunks = read_all(FileSource(path, pace="fast", block_ms=10))
    got = np.concatenate([c.samples for c in chunks])
    assert np.array_equal(got, read_audio(path))  # the same conversion as `harkd transcribe`
    assert abs(len(got) - 16000) <= 16


def test_file_source_mixes_channels_at_16k(tmp_path: Path) -> None:
    stereo = noise(1600, channels=2)
    path = tmp_path / "stereo16k.wav"
    sf.write(str(path), stereo, 16000, subtype="PCM_16")
    pytest.importorskip("daemon.resample", reason=NO_RESAMPLER + " (daemon.audiofile needs it)")
    got = np.concatenate([c.samples for c in read_all(FileSource(path, pace="fast"))])
    expected = np.clip(np.round(stereo.astype(np.float64).mean(axis=1)), -32768, 32767).astype(np.int16)
    assert np.array_equal(got, expected)


def test_file_source_unreadable_files_give_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "not-audio.wav"
    garbage.write_bytes(b"RIFF nonsense, not a wave file at all")
    for path in (garbage, tmp_path / "missing.flac"):
        source = FileSource(path)
        with pytest.raises(AudioSourceError, match="cannot read audio file") as info:
            source.start()
        assert str(path) in str(info.value)


def test_open_source_follows_the_config(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", noise(160))
    assert isinstance(open_source(AudioConfig(source="file", file=path, pace="fast")), FileSource)
    mic = open_source(AudioConfig(device="USB", block_ms=40, buffer_ms=1000))
    assert isinstance(mic, MicSource) and isinstance(mic, AudioSource)
    assert (mic.device_spec, mic.block_ms, mic.buffer_ms) == ("USB", 40, 1000)
    assert mic.stats.state == "stopped" and mic.read(0) is None


# ------------------------------------------------------------------------------------------ MicSource
# Real PortAudio through ALSA file-backed devices, in subprocesses (see tests/alsa_fixtures.py).

FIFO_CAPTURE = r"""
import fcntl, json, os, sys, time
import numpy as np
from daemon.audio import MicSource
fifo, inp, out = sys.argv[1:4]
kwargs, want = json.loads(sys.argv[4]), int(sys.argv[5])
data = np.load(inp)
fd = os.open(fifo, os.O_RDWR)  # read-write: opening never blocks and the reader never sees end-of-file
fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
os.write(fd, data.astype("<i2").tobytes())
source = MicSource(**kwargs)
source.start()
chunks, got, deadline = [], 0, time.monotonic() + 20
while got < want and time.monotonic() < deadline:
    chunk = source.read(0.5)
    if chunk is not None:
        chunks.append(chunk)
        got += len(chunk)
stats = source.stats.to_dict()
os.close(fd)  # now the reader gets end-of-file and the stream can be stopped
source.stop()
np.save(out, np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.int16))
print(json.dumps({"starts": [c.start for c in chunks], "lens": [len(c) for c in chunks], "stats": stats,
                  "ended": source.ended}))
"""


def fifo_capture(alsa_devices: Any, data: npt.NDArray[np.int16], want: int,
                 **kwargs: Any) -> tuple[npt.NDArray[np.int16], dict[str, Any]]:
    fifo = alsa_devices.add_fifo_device("harkdtestmic")
    inp, out = alsa_devices.directory / "in.npy", alsa_devices.directory / "out.npy"
    np.save(inp, data)
    kwargs = {"device": "harkdtestmic", "block_ms": 10, "buffer_ms": 10000, **kwargs}
    args = [str(fifo), str(inp), str(out), json.dumps(kwargs), str(want)]
    result = alsa_devices.run_python(FIFO_CAPTURE, *args)
    captured: npt.NDArray[np.int16] = np.load(out)
    return captured, result


def test_mic_capture_is_bit_exact(alsa_devices: Any) -> None:
    x = noise(32000)
    got, result = fifo_capture(alsa_devices, x, want=len(x))
    assert np.array_equal(got[: len(x)], x)
    starts, lens = result["starts"], result["lens"]
    assert starts[0] == 0
    assert all(s + n == t for (s, t), n in zip(itertools.pairwise(starts), lens, strict=False))
    stats = result["stats"]
    assert stats["state"] == "running" and "harkdtestmic" in stats["status"]
    assert (stats["device"], stats["device_rate"], stats["overflows"], stats["dropped_frames"]) == (
        "harkdtestmic", 16000, 0, 0)
    assert result["ended"] is True


def test_mic_mixes_channels_to_mono(alsa_devices: Any) -> None:
    stereo = noise(8000, channels=2)
    got, result = fifo_capture(alsa_devices, stereo, want=8000, channels=2)
    expected = np.clip(np.round(stereo.astype(np.float64).mean(axis=1)), -32768, 32767).astype(np.int16)
    assert np.array_equal(got[:8000], expected)
    assert "2 channels" in result["stats"]["status"]


def test_mic_resamples_a_device_that_runs_at_48k(alsa_devices: Any) -> None:
    resample_module = pytest.importorskip("daemon.resample", reason=NO_RESAMPLER)
    t = np.arange(48000) / 48000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    got, result = fifo_capture(alsa_devices, tone, want=15000, sample_rate=48000)
    assert result["stats"]["device_rate"] == 48000 and "resampled" in result["stats"]["status"]
    reference = resample_module.resample(tone / 32768.0, 48000, 16000) * 32768.0
    assert len(got) >= 15000
    # A streaming resampler may lag the batch one by a few samples: compare at the best lag, not at the ends.
    middle = got[2000:12000].astype(np.float64)
    errors = {lag: np.max(np.abs(middle - reference[2000 - lag:12000 - lag])) for lag in range(-64, 65)}
    assert min(errors.values()) <= 64


OVERFLOW = r"""
import json, sys, time
from daemon.audio import MicSource
source = MicSource("harkdfast", block_ms=10, buffer_ms=200)
source.start()
time.sleep(1.0)  # the file device delivers far faster than real time: the 200 ms ring overflows
chunks = [source.read(2.0) for _ in range(3)]
stats = source.stats.to_dict()
source.stop()
print(json.dumps({"chunks": [[c.start, len(c)] if c is not None else None for c in chunks], "stats": stats}))
"""


def test_mic_ring_overflow_is_bounded_and_counted(alsa_devices: Any) -> None:
    alsa_devices.add_file_device("harkdfast", noise(16000))
    result = alsa_devices.run_python(OVERFLOW)
    stats, chunks = result["stats"], result["chunks"]
    assert stats["overflows"] > 0 and stats["dropped_frames"] > 16000
    assert all(c is not None for c in chunks)
    assert all(length <= 3200 for _, length in chunks)  # never more than the ring holds (200 ms)
    assert chunks[0][0] > 0  # audio before the first chunk was dropped: its start index says so
    assert all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(chunks))


HOTPLUG = r"""
import fcntl, json, os, sys, time
import numpy as np
from pathlib import Path
from daemon.audio import MicSource
conf, entry, fifo, inp = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
source = MicSource("harkdlate", block_ms=10, buffer_ms=5000, retry_max_s=0.2)
source.start()
deadline = time.monotonic() + 15
while source.stats.open_failures < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
waiting = source.stats.to_dict()
early = source.read(0.2)
fd = os.open(fifo, os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
os.write(fd, np.load(inp).astype("<i2").tobytes())
with conf.open("a") as handle:  # the microphone is "plugged in"
    handle.write(entry)
chunk = None
deadline = time.monotonic() + 30  # a loaded machine may take seconds to rescan ALSA and open the device
while chunk is None and time.monotonic() < deadline:
    chunk = source.read(0.5)
after = source.stats.to_dict()
os.close(fd)
source.stop()
print(json.dumps({"waiting": waiting, "early_is_none": early is None, "after": after,
                  "start": None if chunk is None else chunk.start,
                  "first": None if chunk is None else chunk.samples.tolist()}))
"""


def test_missing_mic_backs_off_then_opens_when_plugged_in(alsa_devices: Any) -> None:
    x = noise(4000)
    fifo = alsa_devices.directory / "late.fifo"
    import os

    os.mkfifo(fifo)
    inp = alsa_devices.directory / "in.npy"
    np.save(inp, x)
    entry = (f'pcm.harkdlate {{ type file; slave {{ pcm "null" }} file "/dev/null"; '
             f'infile "{fifo}"; format "raw" }}\n')
    result = alsa_devices.run_python(HOTPLUG, str(alsa_devices.conf), entry, str(fifo), str(inp))
    waiting = result["waiting"]
    assert waiting["state"] == "waiting" and waiting["open_failures"] >= 2
    assert "waiting for microphone 'harkdlate'" in waiting["status"]
    assert "next attempt in" in waiting["status"]
    assert result["early_is_none"] is True
    after = result["after"]
    first = result["first"]
    assert first is not None, f"no audio within 30 s of plugging in; the source says {after}"
    assert after["state"] == "running" and after["device"] == "harkdlate"
    # A slow reader may get more than the fifo held (the file plugin pads with silence); compare what overlaps.
    n = min(len(first), len(x))
    assert result["start"] == 0 and n >= 160 and first[:n] == x[:n].tolist()


def test_devices_command_lists_input_devices(alsa_devices: Any) -> None:
    alsa_devices.add_file_device("harkdlisted", noise(160))
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", "devices", "--json"], env=alsa_devices.env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    devices = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    listed = [d for d in devices if d["name"] == "harkdlisted"]
    assert listed and listed[0]["channels"] >= 1 and listed[0]["default_rate"] > 0
    table = subprocess.run([sys.executable, "-m", "daemon.cli", "devices"], env=alsa_devices.env(),
                           capture_output=True, text=True, timeout=60, check=False)
    assert table.returncode == 0 and "harkdlisted" in table.stdout and "index" in table.stdout
