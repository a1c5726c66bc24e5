"""Audio sources: a microphone through PortAudio, or a WAV/FLAC file, as 16 kHz mono int16 chunks.

Every source has the small :class:`AudioSource` interface: ``start()``, ``read(timeout)`` (the next
:class:`AudioChunk`, or None when nothing came in time), ``stop()``, ``stats`` and ``ended``.

:class:`MicSource` keeps the PortAudio callback trivial: it copies the device's frames into a bounded ring
buffer (:class:`FrameRing`) and counts what it had to drop; mixing to mono and resampling to 16 kHz
happen in ``read()``, on the caller's thread. When the ring is full the oldest frames are dropped (the
pipeline would rather hear what is being said now), counted in ``stats``. A microphone that is missing,
cannot be opened or goes away is retried with exponential back-off in a supervisor thread; the status
string says what is going on; nothing raises into the pipeline.

Chunk ``start`` indices count 16 kHz samples since the source started: a jump between two chunks means
audio was lost there (ring overflow, or the microphone was away), so clock-free logic downstream can tell.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from daemon.frontend import SAMPLE_RATE

if TYPE_CHECKING:
    from daemon.config import AudioConfig

log = logging.getLogger(__name__)

INITIAL_RETRY_S = 0.5  # seconds before the first retry of a missing microphone; doubles up to retry_max_s

SourceState = Literal["stopped", "starting", "running", "waiting", "stalled", "ended", "failed"]


class AudioSourceError(Exception):
    """An audio source cannot work at all (unreadable file, no such device); the message says why."""


@dataclass(frozen=True, eq=False)
class AudioChunk:
    samples: npt.NDArray[np.int16]  # mono, 16 kHz, read-only
    start: int  # index of the first sample, in 16 kHz samples since the source started

    sample_rate = SAMPLE_RATE  # hertz (class constant)

    def __post_init__(self) -> None:
        samples = self.samples
        if not isinstance(samples, np.ndarray) or samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError("AudioChunk.samples must be a one-dimensional int16 numpy array")
        if self.start < 0:
            raise ValueError(f"AudioChunk.start must not be negative, got {self.start}")
        self.samples.setflags(write=False)

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioChunk):
            return NotImplemented
        return self.start == other.start and np.array_equal(self.samples, other.samples)

    __hash__ = None  # type: ignore[assignment]  # holds an array: equal chunks need not hash alike

    @property
    def end(self) -> int:
        """Index just after the last sample."""
        return self.start + len(self)

    @property
    def duration_s(self) -> float:
        return len(self) / SAMPLE_RATE

    def to_bytes(self) -> bytes:
        """The samples as little-endian 16-bit PCM."""
        return self.samples.astype("<i2", copy=False).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, start: int) -> AudioChunk:
        return cls(np.frombuffer(data, dtype="<i2").astype(np.int16), start)


@dataclass(frozen=True)
class SourceStats:
    state: SourceState  # machine-readable state
    status: str  # one line for people (systemctl status, metrics)
    chunks: int = 0  # chunks returned by read()
    samples: int = 0  # 16 kHz samples returned by read()
    overflows: int = 0  # times the ring buffer was full and audio was dropped
    dropped_frames: int = 0  # device frames dropped because the ring buffer was full
    input_overflows: int = 0  # callbacks where PortAudio flagged an input overflow (lost before harkd saw it)
    open_failures: int = 0  # failed attempts to open the device
    device: str | None = None  # name of the device or file in use
    device_rate: int | None = None  # hertz the device or file runs at

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class AudioSource(Protocol):
    """What the pipeline needs from a source of 16 kHz mono audio."""

    def start(self) -> None: ...

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        """The next chunk; None if none came within ``timeout`` seconds (None: wait) or the source ended."""
        ...

    def stop(self) -> None: ...

    @property
    def stats(self) -> SourceStats: ...

    @property
    def ended(self) -> bool:
        """True once no more audio will come (a file played out, or the source was stopped)."""
        ...


def _to_int16(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.int16]:
    """[-1, 1) floats to int16, rounded, clipped."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


class _Converter:
    """Device frames (any rate, any channels) -> 16 kHz mono int16, bit-exact when nothing needs changing."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: Any = None
        if rate != SAMPLE_RATE:
            from daemon.resample import StreamResampler

            self._resampler = StreamResampler(rate, SAMPLE_RATE)

    def convert(self, frames: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if frames.shape[1] == 1 and self._resampler is None:
            return frames[:, 0].copy()  # the common case: untouched, bit-exact
        if frames.shape[1] == 1:
            mono = frames[:, 0] / 32768.0
        else:
            mono = frames.astype(np.float64).mean(axis=1) / 32768.0
        if self._resampler is not None:
            mono = np.asarray(self._resampler.process(mono), dtype=np.float64)
        return _to_int16(mono)


# ------------------------------------------------------------------------------------------ ring buffer


class FrameRing:
    """A bounded buffer of int16 frames; writing past its capacity drops the oldest frames.

    Frames carry absolute indices (counted from the ring's creation, dropped ones included), so a reader
    sees where audio went missing. Not locked: :class:`MicSource` guards it with its condition.
    """

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError("FrameRing needs a capacity and channels of at least 1")
        self.capacity = capacity
        self._data = np.zeros((capacity, channels), dtype=np.int16)
        self.head = 0  # absolute index of the oldest frame held
        self.tail = 0  # absolute index just after the newest frame held
        self.overflows = 0  # writes that had to drop frames
        self.dropped = 0  # frames dropped, in all

    def __len__(self) -> int:
        return self.tail - self.head

    def write(self, frames: npt.NDArray[np.int16]) -> int:
        """Append ``frames`` (n × channels); return how many frames were dropped to make room."""
        n = int(frames.shape[0])
        if n == 0:
            return 0
        new_tail = self.tail + n
        keep = frames[-self.capacity:] if n > self.capacity else frames
        first = new_tail - keep.shape[0]
        pos = first % self.capacity
        split = min(keep.shape[0], self.capacity - pos)
        self._data[pos:pos + split] = keep[:split]
        self._data[: keep.shape[0] - split] = keep[split:]
        self.tail = new_tail
        dropped = 0
        if self.tail - self.head > self.capacity:
            new_head = self.tail - self.capacity
            dropped = new_head - self.head
            self.head = new_head
            self.overflows += 1
            self.dropped += dropped
        return dropped

    def read(self, max_frames: int | None = None) -> tuple[int, npt.NDArray[np.int16]]:
        """Remove and return up to ``max_frames`` of the oldest frames, with the index of the first."""
        n = len(self) if max_frames is None else min(len(self), max_frames)
        start = self.head
        pos = start % self.capacity
        split = min(n, self.capacity - pos)
        out = np.concatenate([self._data[pos:pos + split], self._data[: n - split]])
        self.head += n
        return start, out


# ------------------------------------------------------------------------------------------ devices


@dataclass(frozen=True)
class InputDevice:
    index: int  # PortAudio device index
    name: str
    channels: int  # most input channels it offers
    default_rate: int  # hertz
    host_api: str  # e.g. "ALSA"
    is_default: bool  # the default input device


def _sounddevice() -> Any:
    """Import sounddevice (initialises PortAudio); an OSError here means PortAudio is not installed."""
    import sounddevice

    return sounddevice


def list_input_devices() -> list[InputDevice]:
    """Every PortAudio device that can record, in index order."""
    sd = _sounddevice()
    default_in = sd.default.device[0]
    hostapis = sd.query_hostapis()
    found = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_input_channels"] < 1:
            continue
        found.append(InputDevice(index=index, name=str(info["name"]),
                                 channels=int(info["max_input_channels"]),
                                 default_rate=int(info["default_samplerate"]),
                                 host_api=str(hostapis[info["hostapi"]]["name"]),
                                 is_default=index == default_in))
    return found


def find_input_device(spec: str | int | None) -> InputDevice:
    """Resolve a configured device: an index, a (case-insensitive) part of a name, or None for the default.

    An exact name wins over a partial one; among several partial matches the first is taken.
    Raises :class:`AudioSourceError` naming the devices there are when nothing fits.
    """
    devices = list_input_devices()
    listing = ", ".join(f"{d.index}: {d.name}" for d in devices) or "none"
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if spec is None:
        for device in devices:
            if device.is_default:
                return device
        if devices:
            return devices[0]
        raise AudioSourceError("no input device found (PortAudio lists none)")
    if isinstance(spec, int):
        for device in devices:
            if device.index == spec:
                return device
        raise AudioSourceError(f"no input device with index {spec} (input devices: {listing})")
    wanted = spec.lower()
    exact = [d for d in devices if d.name.lower() == wanted]
    partial = [d for d in devices if wanted in d.name.lower()]
    if exact:
        return exact[0]
    if partial:
        if len(partial) > 1:
            log.info("input device %r matches %s; using %r", spec, [d.name for d in partial], partial[0].name)
        return partial[0]
    raise AudioSourceError(f"no input device matching {spec!r} (input devices: {listing})")


def _reinitialise_portaudio(sd: Any) -> None:
    """Make PortAudio list devices afresh, so a microphone plugged in after start-up can be found.

    sounddevice has no public call for this; its private _terminate/_initialize pair is what its own
    documentation points to. Only called while this source has no stream open.
    """
    try:
        sd._terminate()
        sd._initialize()
    except (AttributeError, OSError) as exc:
        log.debug("could not re-initialise PortAudio: %s", exc)


# ------------------------------------------------------------------------------------------ microphone


class MicSource:
    """Live audio from a PortAudio input device (see the module docstring)."""

    def __init__(self, device: str | int | None = None, *, sample_rate: int | None = None, channels: int = 1,
                 block_ms: int = 20, buffer_ms: int = 2000, retry_max_s: float = 30.0,
                 stall_s: float = 5.0) -> None:
        """``sample_rate`` None: 16 kHz if the device takes it, else its default rate (resampled).
        ``stall_s``: how long without a callback before the status says the device stalled."""
        self.device_spec = device
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_ms = block_ms
        self.buffer_ms = buffer_ms
        self.retry_max_s = retry_max_s
        self.stall_s = stall_s
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ring: FrameRing | None = None
        self._ring_origin = 0  # 16 kHz index of the ring's absolute frame 0
        self._converter: _Converter | None = None
        self._next_out = 0  # 16 kHz index of the next sample read() returns
        self._expected_frame = 0  # ring index read() expects next (a mismatch is a gap)
        self._last_callback = 0.0  # time.monotonic() of the last callback
        self._state: SourceState = "stopped"
        self._status = "stopped"
        self._device_name: str | None = None
        self._device_rate: int | None = None
        self._chunks = self._samples = self._input_overflows = self._open_failures = 0
        self._overflows_before = self._dropped_before = 0  # from rings of earlier streams

    @classmethod
    def from_config(cls, config: AudioConfig) -> MicSource:
        return cls(config.device, sample_rate=config.sample_rate, channels=config.channels,
                   block_ms=config.block_ms, buffer_ms=config.buffer_ms, retry_max_s=config.retry_max_s)

    # -- interface

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._set_state("starting", f"opening microphone {self._describe_spec()}")
        self._thread = threading.Thread(target=self._supervise, name="harkd-mic", daemon=True)
        self._thread.start()

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            taken = self._take(deadline)
            if taken is None:
                return None
            first, frames, converter, rate = taken
            if first != self._expected_frame:  # frames were dropped: restart where the audio resumes
                converter = self._converter = _Converter(rate)
                self._next_out = self._ring_origin + round(first * SAMPLE_RATE / rate)
            self._expected_frame = first + frames.shape[0]
            out_start = self._next_out
        samples = converter.convert(frames)  # outside the lock: the callback never waits for this
        chunk = AudioChunk(samples, out_start)
        with self._cond:
            self._next_out = chunk.end
            self._chunks += 1
            self._samples += len(chunk)
        return chunk

    def _take(self, deadline: float | None) -> tuple[int, npt.NDArray[np.int16], _Converter, int] | None:
        """Wait (holding the condition) for a block of frames; remove and return them, or None."""
        while not self._stopping.is_set():
            ring, converter, rate = self._ring, self._converter, self._device_rate
            available = len(ring) if ring is not None else 0
            remaining = None if deadline is None else deadline - time.monotonic()
            ready = available >= self._block_frames() or (available > 0 and remaining is not None
                                                          and remaining <= 0)
            if ready and ring is not None and converter is not None and rate is not None:
                first, frames = ring.read()
                return first, frames, converter, rate
            if remaining is not None and remaining <= 0:
                return None
            self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
        return None

    def stop(self) -> None:
        thread = self._thread
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=10.0)
            if thread.is_alive():
                log.warning("microphone thread did not stop within 10 s (device blocked?)")
        self._thread = None
        self._set_state("stopped", "stopped")

    @property
    def ended(self) -> bool:
        return self._stopping.is_set()

    @property
    def stats(self) -> SourceStats:
        with self._cond:
            ring = self._ring
            overflows = self._overflows_before + (ring.overflows if ring is not None else 0)
            dropped = self._dropped_before + (ring.dropped if ring is not None else 0)
            state, status = self._state, self._status
            silent = time.monotonic() - self._last_callback
            if state == "running" and silent > self.stall_s:
                state = "stalled"
                status = f"no audio from {self._device_name!r} for {silent:.1f} s"
            return SourceStats(state=state, status=status, chunks=self._chunks, samples=self._samples,
                               overflows=overflows, dropped_frames=dropped,
                               input_overflows=self._input_overflows, open_failures=self._open_failures,
                               device=self._device_name, device_rate=self._device_rate)

    def __enter__(self) -> MicSource:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- internals

    def _describe_spec(self) -> str:
        return "(default)" if self.device_spec is None else repr(self.device_spec)

    def _block_frames(self) -> int:
        rate = self._device_rate or SAMPLE_RATE
        return max(1, round(self.block_ms * rate / 1000))

    def _set_state(self, state: SourceState, status: str) -> None:
        with self._cond:
            changed = status != self._status
            self._state, self._status = state, status
        if changed:
            (log.warning if state in ("waiting", "failed") else log.info)("microphone: %s", status)

    def _callback(self, indata: npt.NDArray[np.int16], frames: int, time_info: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy into the ring, count, wake the reader. Nothing else.
        with self._cond:
            if status.input_overflow:
                self._input_overflows += 1
            if self._ring is not None:
                self._ring.write(indata)
            self._last_callback = time.monotonic()
            self._cond.notify()

    def _open(self, sd: Any) -> Any:
        device = find_input_device(self.device_spec)
        channels = min(self.channels, device.channels)
        if self.sample_rate is not None:
            rate = self.sample_rate
        else:
            try:
                sd.check_input_settings(device=device.index, channels=channels, dtype="int16",
                                        samplerate=SAMPLE_RATE)
                rate = SAMPLE_RATE
            except Exception:  # PortAudioError or ValueError: the device does not take 16 kHz
                rate = device.default_rate
        block = max(1, round(self.block_ms * rate / 1000))
        stream = sd.InputStream(device=device.index, channels=channels, samplerate=rate, dtype="int16",
                                blocksize=block, callback=self._callback)
        capacity = max(4 * block, round(self.buffer_ms * rate / 1000))
        with self._cond:
            old = self._ring
            if old is not None:  # frames the old stream left unread are lost too
                self._overflows_before += old.overflows
                self._dropped_before += old.dropped + len(old)
            # Audio resumes after a gap as long as the device was away (0 on the first open).
            away = time.monotonic() - self._last_callback if old is not None else 0.0
            self._ring_origin = self._next_out + round(max(0.0, away) * SAMPLE_RATE)
            self._ring = FrameRing(capacity, channels)
            self._expected_frame = -1  # forces read() to place the first chunk at the ring origin
            self._converter = _Converter(rate)
            self._device_name, self._device_rate = device.name, rate
            self._last_callback = time.monotonic()
        # "running" before the first callback, so that no reader sees audio from a source still "waiting";
        # if start() fails, the supervisor sets "waiting" again.
        note = "" if rate == SAMPLE_RATE else f", resampled to {SAMPLE_RATE} Hz"
        self._set_state("running", f"capturing from {device.name!r} (index {device.index}) at {rate} Hz, "
                                   f"{channels} channel{'s' if channels > 1 else ''}{note}")
        try:
            stream.start()
        except Exception:
            stream.close()
            raise
        return stream

    def _supervise(self) -> None:
        delay = INITIAL_RETRY_S
        sd: Any = None
        while not self._stopping.is_set():
            stream = None
            try:
                if sd is None:
                    sd = _sounddevice()
                stream = self._open(sd)
            except Exception as exc:  # any failure to open must end in a retry, never in a crash
                self._open_failures += 1
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._set_state("waiting", f"waiting for microphone {self._describe_spec()}: {reason}; "
                                           f"next attempt in {delay:.1f} s")
                if self._stopping.wait(delay):
                    break
                delay = min(delay * 2, self.retry_max_s)
                if sd is not None:
                    _reinitialise_portaudio(sd)
                continue
            delay = INITIAL_RETRY_S
            try:
                while not self._stopping.wait(0.2):
                    if not stream.active:
                        lost = f"microphone {self._device_name!r} stopped delivering audio (unplugged?)"
                        self._set_state("waiting", f"{lost}; reopening")
                        break
            finally:
                try:
                    stream.abort()
                    stream.close()
                except Exception as exc:  # a device that vanished may fail to close; it is gone either way
                    log.debug("closing the microphone stream failed: %s", exc)
            if not self._stopping.is_set():
                _reinitialise_portaudio(sd)


# ------------------------------------------------------------------------------------------ file


class FileSource:
    """Audio from a WAV/FLAC file (anything libsndfile reads), converted to 16 kHz mono.

    ``pace="realtime"`` hands out each chunk no earlier than its time since ``start()``, like a
    microphone; ``"fast"`` hands them out as fast as they are read. A 16-bit 16 kHz mono file is streamed
    block by block, bit-exact; other files are decoded and converted whole (the same conversion as
    ``harkd transcribe``).
    """

    def __init__(self, path: str | Path, *, pace: Literal["realtime", "fast"] = "realtime",
                 block_ms: int = 20, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if pace not in ("realtime", "fast"):
            raise ValueError(f"pace must be 'realtime' or 'fast', not {pace!r}")
        self.path = Path(path)
        self.pace = pace
        self.block = max(1, round(block_ms * SAMPLE_RATE / 1000))
        self._clock = clock
        self._sleep = sleep
        self._file: Any = None  # soundfile.SoundFile while streaming a 16 kHz mono file
        self._whole: npt.NDArray[np.int16] | None = None  # the converted file otherwise
        self._pos = 0  # 16 kHz samples handed out
        self._t0 = 0.0
        self._ended = False
        self._started = False
        self._chunks = 0
        self._rate: int | None = None

    @classmethod
    def from_config(cls, config: AudioConfig) -> FileSource:
        if config.file is None:
            raise AudioSourceError("audio.source is 'file' but audio.file is not set")
        return cls(config.file, pace=config.pace, block_ms=config.block_ms)

    def start(self) -> None:
        """Open the file; raise :class:`AudioSourceError` if it cannot be read as audio."""
        import soundfile as sf

        if self._started:
            return
        try:
            handle = sf.SoundFile(str(self.path))
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioSourceError(f"cannot read audio file {self.path}: {exc}") from exc
        self._rate = int(handle.samplerate)
        if handle.samplerate == SAMPLE_RATE and handle.channels == 1 and handle.subtype == "PCM_16":
            self._file = handle
        else:
            handle.close()
            from daemon.audiofile import AudioFileError, read_audio

            try:
                self._whole = read_audio(self.path)
            except AudioFileError as exc:
                raise AudioSourceError(f"cannot read audio file {self.path}: {exc}") from exc
        self._started = True
        self._t0 = self._clock()
        log.info("reading audio from %s (%s Hz, %s)", self.path, self._rate, self.pace)

    def _next_samples(self) -> npt.NDArray[np.int16]:
        if self._file is not None:
            data = self._file.read(self.block, dtype="int16", always_2d=True)
            return np.ascontiguousarray(data[:, 0])
        if self._whole is None:
            return np.zeros(0, dtype=np.int16)
        return self._whole[self._pos:self._pos + self.block].copy()

    def read(self, timeout: float | None = None) -> AudioChunk | None:
        if not self._started:
            raise AudioSourceError("FileSource.read() before start()")
        if self._ended:
            return None
        if self.pace == "realtime":
            due = self._t0 + self._pos / SAMPLE_RATE
            wait = due - self._clock()
            if wait > 0:
                if timeout is not None and wait > timeout:
                    self._sleep(timeout)
                    return None
                self._sleep(wait)
        samples = self._next_samples()
        if samples.shape[0] == 0:
            self._finish()
            return None
        chunk = AudioChunk(samples, self._pos)
        self._pos += len(chunk)
        self._chunks += 1
        return chunk

    def _finish(self) -> None:
        self._ended = True
        if self._file is not None:
            self._file.close()
            self._file = None
        self._whole = None

    def stop(self) -> None:
        if not self._ended:
            self._finish()

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def stats(self) -> SourceStats:
        if not self._started:
            state: SourceState = "stopped"
            status = f"not started ({self.path})"
        elif self._ended:
            state, status = "ended", f"finished {self.path} ({self._pos / SAMPLE_RATE:.2f} s)"
        else:
            state, status = "running", f"reading {self.path} ({self.pace}) at {self._pos / SAMPLE_RATE:.2f} s"
        return SourceStats(state=state, status=status, chunks=self._chunks, samples=self._pos,
                           device=str(self.path), device_rate=self._rate)

    def __enter__(self) -> FileSource:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def open_source(config: AudioConfig) -> AudioSource:
    """The source ``audio.source`` names, built from the audio section of the configuration (not started)."""
    if config.source == "file":
        return FileSource.from_config(config)
    return MicSource.from_config(config)
