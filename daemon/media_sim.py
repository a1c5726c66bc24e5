"""The media-playback simulator behind ``harkd media-sim``: a music player that shares the CPU with harkd.

On a real device harkd runs beside a music player. :class:`MediaSimulator` reproduces one so that harkd can
be measured under that contention, and it obeys harkd's ``media/duck`` requests like a player should:

* **Plays in real time.** A :class:`Playlist` decodes music files (anything libsndfile reads: WAV, FLAC,
  OGG/Vorbis) a block at a time, mixes or spreads the channels to the output's and resamples to the output
  rate, looping over the list. Without files it plays the music of installed Debian packages (found by
  :func:`training.augment.discover_sources`), and without those a synthesised chord sequence
  (:class:`SynthMusic`). Each block goes to a sink that sets the pace: a PortAudio output device
  (:class:`DeviceSink`, paced by the device's clock), or a WAV file or nothing (:class:`ClockSink`, paced by
  the monotonic clock).
* **Loads the CPU like a player.** Decoding and resampling are real work; ``cpu_load`` adds busy work of
  that percentage of one core per block, standing for a heavier player or decoder, so benchmarks can dial
  the contention.
* **Ducks.** :class:`DuckListener` subscribes to ``<prefix>/<device_id>/media/duck``; each valid request is
  queued and applied by the playback loop at the next block through :class:`~daemon.ducking.DuckGain`
  (ramps, release, timeout). Malformed requests are logged and ignored. The broker being away never stops
  the music: paho reconnects in the background.

What was played (after ducking, as int16) can be written to a WAV file, for tests and for echo-path
experiments that need the loudspeaker reference signal.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from daemon.ducking import DuckGain, DuckSettings, DuckState
from daemon.messages import MediaDuck, PayloadError, decode
from daemon.mqtt import MqttSettings, Topics, connect_in_background, make_client
from daemon.resample import StreamResampler
from daemon.systemd_notify import Notifier

__all__ = [
    "AUDIO_SUFFIXES",
    "ClockSink",
    "DeviceSink",
    "DuckListener",
    "MediaSimError",
    "MediaSimulator",
    "MusicSource",
    "Playlist",
    "SimSettings",
    "SimStats",
    "Sink",
    "SynthMusic",
    "busy_work",
    "expand_playlist",
    "installed_music",
    "to_int16",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]

#: File name endings taken from a directory given as a playlist entry.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")

_LATE_TOLERANCE_S = 0.2  # clock pacing: further behind than this counts as an underrun and re-anchors
_UNPACED_CHECK_S = 5.0  # device output: after this much audio, warn if the device takes it far too fast


class MediaSimError(Exception):
    """The simulator cannot start or go on (no playable file, no output device); the message says why."""


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class SimSettings:
    sample_rate: int = 48000  # output rate, hertz
    channels: int = 2  # output channels
    block_ms: float = 20.0  # audio decoded, ducked and written per step, milliseconds
    cpu_load: float = 0.0  # extra busy work per block, percent of one core (a heavier player/decoder)
    duration_s: float | None = None  # stop after this much audio, seconds; None: play until stopped
    duck: DuckSettings = field(default_factory=DuckSettings)

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 192000:
            raise ValueError(f"sample rate must be 8000..192000 Hz, not {self.sample_rate}")
        if not 1 <= self.channels <= 8:
            raise ValueError(f"channels must be 1..8, not {self.channels}")
        if not 1.0 <= self.block_ms <= 500.0:
            raise ValueError(f"block must be 1..500 ms, not {self.block_ms}")
        if not 0.0 <= self.cpu_load <= 95.0:
            raise ValueError(f"cpu load must be 0..95 percent of one core, not {self.cpu_load}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration must be positive, not {self.duration_s}")

    @property
    def block_frames(self) -> int:
        return max(1, round(self.sample_rate * self.block_ms / 1000.0))


# ------------------------------------------------------------------------------------------ music


class MusicSource(Protocol):
    """Endless music at the output rate and channel count."""

    @property
    def name(self) -> str:
        """What is playing now (for logs and ``systemctl status``)."""
        ...

    def read(self, n: int) -> FloatArray:
        """The next ``n`` frames, shape (n, channels), float32 in [-1, 1]."""
        ...

    def close(self) -> None: ...


def _map_channels(data: FloatArray, channels: int) -> FloatArray:
    """(frames, c_in) to (frames, channels): averaged to mono, mono spread, extra channels dropped."""
    c_in = data.shape[1]
    if c_in == channels:
        return data
    if channels == 1:
        return data.mean(axis=1, keepdims=True, dtype=np.float32)
    return np.ascontiguousarray(data[:, np.arange(channels) % c_in])


def expand_playlist(entries: Sequence[Path]) -> list[Path]:
    """Files as given; directories replaced by their audio files (by name, not recursive)."""
    paths: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            paths += sorted(p for p in entry.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        else:
            paths.append(entry)
    return paths


def installed_music() -> list[Path]:
    """Music files of installed Debian packages (hedgewars-data, asterisk-moh-opsound-wav), or none.

    The same discovery as the training recipes' augmentation (:func:`training.augment.discover_sources`).
    """
    try:
        from training.augment import discover_sources
    except ImportError as exc:  # a device install without the training package
        log.info("cannot look for installed music (%s)", exc)
        return []
    music = [s for s in discover_sources() if s.kind == "music" and s.member is None]
    # hedgewars' 44.1 kHz stereo OGG first: decoding and resampling it is what a music player does;
    # the 8 kHz mono music-on-hold recordings are far cheaper to play.
    music.sort(key=lambda s: (s.collection != "hedgewars", s.key))
    return [Path(s.path) for s in music]


class Playlist:
    """Decodes ``paths`` in turn, a block at a time, at ``sample_rate`` with ``channels``; loops forever.

    Files that cannot be opened at the start are an error (:class:`MediaSimError` naming each); a file
    that fails later is logged and skipped; when no file in a whole round gives any audio, :meth:`read`
    raises :class:`MediaSimError`.
    """

    def __init__(self, paths: Sequence[Path], sample_rate: int, channels: int) -> None:
        import soundfile

        if not paths:
            raise MediaSimError("the playlist is empty")
        problems = []
        for path in paths:
            try:
                soundfile.info(str(path))
            except (RuntimeError, OSError) as exc:  # LibsndfileError is a RuntimeError
                problems.append(f"{path}: {exc}")
        if problems:
            raise MediaSimError("cannot play " + "; ".join(problems))
        self._sf = soundfile
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.channels = channels
        self._index = -1
        self._file: Any = None  # soundfile.SoundFile being decoded
        self._resamplers: list[StreamResampler] = []
        self._pending: list[FloatArray] = []  # decoded frames not yet read, in order
        self._pending_frames = 0
        self._empty_in_a_row = 0  # files that gave no audio, one after the other
        self._gave_audio = False

    @property
    def name(self) -> str:
        return self.paths[self._index].name if self._index >= 0 else ""

    def read(self, n: int) -> FloatArray:
        while self._pending_frames < n:
            self._decode(n - self._pending_frames)
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        out, rest = data[:n], data[n:]
        self._pending = [rest] if len(rest) else []
        self._pending_frames = len(rest)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_next(self) -> None:
        self.close()
        if self._empty_in_a_row >= len(self.paths):
            raise MediaSimError(f"no file of the playlist gives any audio ({len(self.paths)} tried)")
        self._index = (self._index + 1) % len(self.paths)
        path = self.paths[self._index]
        self._gave_audio = False
        try:
            self._file = self._sf.SoundFile(str(path))
        except (RuntimeError, OSError) as exc:
            log.error("cannot open %s: %s; skipped", path, exc)
            self._empty_in_a_row += 1
            return
        rate = int(self._file.samplerate)
        self._resamplers = []
        if rate != self.sample_rate:
            self._resamplers = [StreamResampler(rate, self.sample_rate) for _ in range(self.channels)]
        log.info("playing %s (%d Hz, %d channels, %.0f s)", path.name, rate, self._file.channels,
                 self._file.frames / rate)

    def _decode(self, frames_out: int) -> None:
        """Decode about ``frames_out`` output frames' worth of the current file (moving on at its end)."""
        if self._file is None:
            self._open_next()
            if self._file is None:
                return
        file_rate = int(self._file.samplerate)
        frames_in = max(1, math.ceil(frames_out * file_rate / self.sample_rate))
        try:
            data = self._file.read(frames_in, dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as exc:
            log.error("cannot decode %s: %s; skipped", self.paths[self._index], exc)
            data = np.zeros((0, self._file.channels), dtype=np.float32)
        at_end = len(data) < frames_in
        mapped = _map_channels(data, self.channels)
        if self._resamplers:
            columns = []
            for c, resampler in enumerate(self._resamplers):
                column = resampler.process(mapped[:, c])
                if at_end:  # the filter's tail: the last few milliseconds
                    column = np.concatenate([column, resampler.flush()])
                columns.append(column)
            mapped = np.stack(columns, axis=1)
        if len(mapped):
            self._pending.append(mapped.astype(np.float32, copy=False))
            self._pending_frames += len(mapped)
            self._gave_audio = True
        if at_end:
            self._empty_in_a_row = 0 if self._gave_audio else self._empty_in_a_row + 1
            if not self._gave_audio:
                log.warning("%s gave no audio", self.paths[self._index])
            self.close()


class SynthMusic:
    """A synthesised stand-in for music: a four-chord loop of soft sine triads, two seconds a chord."""

    name = "synthesised chords"
    _CHORDS_HZ = ((261.63, 329.63, 392.00), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63),
                  (196.00, 246.94, 293.66))  # C, Am, F, G
    _CHORD_S = 2.0

    def __init__(self, sample_rate: int, channels: int, amplitude: float = 0.15) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.amplitude = amplitude
        self._position = 0

    def read(self, n: int) -> FloatArray:
        t = (self._position + np.arange(n, dtype=np.float64)) / self.sample_rate
        chord = (t // self._CHORD_S).astype(np.int64) % len(self._CHORDS_HZ)
        since = t % self._CHORD_S
        envelope = np.minimum(1.0, since / 0.02) * np.exp(-since / 1.5)  # soft attack, slow decay
        freqs = np.asarray(self._CHORDS_HZ)[chord]  # (n, 3)
        tone = np.sin(2 * np.pi * freqs * t[:, None]).sum(axis=1) / 3.0
        self._position += n
        mono = (self.amplitude * envelope * tone).astype(np.float32)
        return np.repeat(mono[:, None], self.channels, axis=1)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ CPU load


def busy_work(cpu_s: float, clock: Callable[[], float] = time.thread_time) -> int:
    """Spend ``cpu_s`` seconds of this thread's CPU time (not wall time: under contention it takes longer,
    as a decoder would). Returns a value so the loop cannot be optimised away."""
    if cpu_s <= 0:
        return 0
    end = clock() + cpu_s
    x = 1
    while clock() < end:
        for _ in range(100):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def to_int16(x: FloatArray) -> Int16Array:
    """float in [-1, 1] to int16, rounded and clipped."""
    return np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------------------------------ sinks


class Sink(Protocol):
    """Where the played audio goes; :meth:`write` returns when the next block is wanted."""

    description: str
    underruns: int  # times the audio came too late

    def write(self, block: Int16Array) -> None: ...

    def close(self) -> None: ...


def _open_wav(path: Path, sample_rate: int, channels: int) -> Any:
    import soundfile

    try:
        return soundfile.SoundFile(str(path), "w", samplerate=sample_rate, channels=channels, subtype="PCM_16",
                                   format="WAV")
    except (RuntimeError, OSError) as exc:
        raise MediaSimError(f"cannot write {path}: {exc}") from exc


class ClockSink:
    """Paced by the monotonic clock, one block ahead; writes to a WAV file (``path``) or nowhere (None).

    ``interrupt`` cuts a wait short (the stop event). Falling more than 0.2 s behind (a starved CPU) counts
    an underrun and paces on from there instead of rushing to catch up.
    """

    def __init__(self, path: Path | None, sample_rate: int, channels: int, *,
                 interrupt: threading.Event | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sample_rate = sample_rate
        self.description = f"{path} (clock-paced)" if path is not None else "nowhere (null, clock-paced)"
        self.underruns = 0
        self._file = _open_wav(path, sample_rate, channels) if path is not None else None
        self._interrupt = interrupt or threading.Event()
        self._clock = clock
        self._start: float | None = None
        self._frames = 0  # frames written since _start

    def write(self, block: Int16Array) -> None:
        if self._file is not None:
            self._file.write(block)
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._frames / self.sample_rate  # when this block starts to play
        self._frames += len(block)
        if now - due > _LATE_TOLERANCE_S:
            self.underruns += 1
            log.debug("playback is %.0f ms late; pacing on from now", 1000 * (now - due))
            self._start, self._frames = now, len(block)
            return
        if due > now:
            self._interrupt.wait(due - now)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class DeviceSink:
    """A PortAudio output device (index, or part of its name; None: the default), paced by its clock.

    ``record``: also write what is played to this WAV file (the loudspeaker reference signal).
    """

    def __init__(self, device: str | int | None, sample_rate: int, channels: int, block_frames: int,
                 record: Path | None = None) -> None:
        try:
            import sounddevice
        except OSError as exc:  # the PortAudio library itself is missing
            raise MediaSimError(f"PortAudio is not available: {exc}") from exc
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        try:
            self._stream = sounddevice.OutputStream(device=device, samplerate=sample_rate, channels=channels,
                                                    dtype="int16", blocksize=block_frames)
            self._stream.start()
        except (ValueError, sounddevice.PortAudioError) as exc:
            outputs = [f"{i}: {d['name']}" for i, d in enumerate(sounddevice.query_devices())
                       if d["max_output_channels"] > 0]
            raise MediaSimError(f"cannot open output device {device if device is not None else '(default)'}: "
                                f"{exc} (output devices: {', '.join(outputs) or 'none'})") from exc
        name = sounddevice.query_devices(self._stream.device)["name"]
        self.description = f"output device {name!r}" + (f", recorded to {record}" if record else "")
        self.sample_rate = sample_rate
        self.underruns = 0
        self._record = _open_wav(record, sample_rate, channels) if record is not None else None
        self._frames = 0
        self._started = time.monotonic()
        self._checked_pace = False

    def write(self, block: Int16Array) -> None:
        if self._stream.write(block):
            self.underruns += 1
        if self._record is not None:
            self._record.write(block)
        self._frames += len(block)
        if not self._checked_pace and self._frames >= _UNPACED_CHECK_S * self.sample_rate:
            self._checked_pace = True
            wall = time.monotonic() - self._started
            if wall < 0.5 * _UNPACED_CHECK_S:
                log.warning("the output device took %.0f s of audio in %.1f s: it is not paced in real time "
                            "(a file or null ALSA device?)", _UNPACED_CHECK_S, wall)

    def close(self) -> None:
        try:
            self._stream.stop()  # plays what is queued
            self._stream.close()
        finally:
            if self._record is not None:
                self._record.close()
                self._record = None


# ------------------------------------------------------------------------------------------ MQTT


class DuckListener:
    """Subscribes to ``<prefix>/<device_id>/media/duck`` and hands each valid request to ``on_duck``.

    ``on_duck`` runs on paho's network thread: it must only hand the request over. The client id is
    ``harkd-media-sim-<device_id>`` (``<mqtt.client_id>-media-sim`` when one is configured), so the daemon's
    own connection is never displaced. A broker that is away is retried in the background.
    """

    def __init__(self, settings: MqttSettings, on_duck: Callable[[MediaDuck], None]) -> None:
        self.settings = settings
        self.topic = Topics(settings.device_id, settings.prefix).media_duck
        self._on_duck = on_duck
        client_id = f"{settings.client_id}-media-sim" if settings.client_id else f"harkd-media-sim-{settings.device_id}"
        self._client = make_client(settings, client_id, f"{__name__}.paho")
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.message_callback_add(self.topic, self._on_message)
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.received = 0  # valid requests
        self.rejected = 0  # malformed or for another device
        self._started = False

    def start(self) -> None:
        s = self.settings
        connect_in_background(self._client, s)
        self._started = True
        log.info("MQTT: connecting to %s:%d for %s", s.host, s.port, self.topic)

    def stop(self) -> None:
        if not self._started:
            return
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """True once connected and subscribed (within ``timeout`` seconds)."""
        return self._subscribed.wait(timeout)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT: broker %s:%d refused the connection: %s", self.settings.host, self.settings.port,
                      reason)
            return
        client.subscribe(self.topic, qos=1)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        log.warning("MQTT: cannot connect to %s:%d; retrying (playback goes on)", self.settings.host,
                    self.settings.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        was = self._subscribed.is_set()
        self._subscribed.clear()
        if was:
            log.warning("MQTT: disconnected (%s); reconnecting (playback goes on)", reason)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("MQTT: broker refused the subscription to %s: %s", self.topic, ", ".join(refused))
            return
        log.info("MQTT: connected to %s:%d, subscribed to %s", self.settings.host, self.settings.port, self.topic)
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if not message.payload:
            return  # a cleared retained message
        try:
            duck = decode(MediaDuck, bytes(message.payload))
            if duck.device_id != self.settings.device_id:
                raise PayloadError(f"device_id {duck.device_id!r} is not this device's "
                                   f"({self.settings.device_id!r})")
        except PayloadError as exc:
            with self._lock:
                self.rejected += 1
            log.warning("MQTT: ignored malformed message on %s: %s", message.topic, exc)
            return
        with self._lock:
            self.received += 1
        try:
            self._on_duck(duck)
        except Exception:  # nothing may propagate into paho's thread
            log.exception("MQTT: the duck handler failed")


# ------------------------------------------------------------------------------------------ the player


@dataclass
class SimStats:
    frames: int = 0  # frames played
    blocks: int = 0
    ducks: int = 0  # duck requests applied
    releases: int = 0  # release requests applied
    timeouts: int = 0  # ducks released because no release came in time
    underruns: int = 0  # blocks that came too late for the output
    wall_s: float = 0.0  # time the loop ran, seconds
    cpu_s: float = 0.0  # CPU time of the whole process meanwhile (all threads), seconds

    def audio_s(self, sample_rate: int) -> float:
        return self.frames / sample_rate


_STATE_WORDS: dict[DuckState, str] = {"normal": "full volume", "ducking": "ducking", "ducked": "ducked",
                                      "restoring": "restoring the volume"}


class MediaSimulator:
    """The playback loop: music -> duck gain -> int16 -> (busy work) -> sink, one block at a time.

    :meth:`request` may be called from any thread (the MQTT thread does); requests take effect at the
    next block. :meth:`run` plays until ``stop`` is set or ``duration_s`` of audio has been played.
    """

    def __init__(self, settings: SimSettings, source: MusicSource, sink: Sink, *,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.notifier = notifier or Notifier(env={})
        self.ducker = DuckGain(settings.duck, settings.sample_rate)
        self.stats = SimStats()
        self._requests: queue.SimpleQueue[MediaDuck] = queue.SimpleQueue()
        self._playing = threading.Event()

    def request(self, duck: MediaDuck) -> None:
        self._requests.put(duck)

    def wait_playing(self, timeout: float) -> bool:
        """True once the first block has been written."""
        return self._playing.wait(timeout)

    def _apply_requests(self) -> None:
        while True:
            try:
                duck = self._requests.get_nowait()
            except queue.Empty:
                return
            utterance = f" (utterance {duck.utterance_id})" if duck.utterance_id else ""
            if duck.duck:
                try:
                    self.ducker.duck(duck.level)
                except ValueError as exc:
                    log.warning("duck request ignored: %s", exc)
                    continue
                self.stats.ducks += 1
                log.info("duck on%s: to %.1f dB", utterance, self.ducker.target_db)
            else:
                was = self.ducker.ducked
                self.ducker.release()
                self.stats.releases += 1
                log.info("duck off%s%s", utterance, "" if was else " (was not ducked)")

    def run(self, stop: threading.Event) -> SimStats:
        s = self.settings
        n = s.block_frames
        block_s = n / s.sample_rate
        busy_s = block_s * s.cpu_load / 100.0
        limit = None if s.duration_s is None else round(s.duration_s * s.sample_rate)
        wall0, cpu0 = time.monotonic(), time.process_time()
        state = self.ducker.state
        timeouts = 0
        playing = ""
        try:
            while not stop.is_set() and (limit is None or self.stats.frames < limit):
                self._apply_requests()
                frames = n if limit is None else min(n, limit - self.stats.frames)
                music = self.source.read(frames)
                gains = self.ducker.gains(frames)
                block = to_int16(music * gains[:, None])
                busy_work(busy_s)
                self.sink.write(block)
                self.stats.frames += frames
                self.stats.blocks += 1
                if not self._playing.is_set():
                    self._playing.set()
                    self.notifier.ready(f"playing {self.source.name} to {self.sink.description}")
                    log.info("playing to %s (%d Hz, %d channels, %g ms blocks, cpu load %g%%)",
                             self.sink.description, s.sample_rate, s.channels, s.block_ms, s.cpu_load)
                if self.ducker.timeouts != timeouts:
                    timeouts = self.ducker.timeouts
                    log.warning("duck not released within %g s; restoring the volume", s.duck.timeout_s)
                new_state = self.ducker.state
                if new_state != state or self.source.name != playing:
                    if new_state != state and new_state in ("normal", "ducked"):
                        log.info("%s (%.1f dB)", _STATE_WORDS[new_state], self.ducker.gain_db)
                    state, playing = new_state, self.source.name
                    self.notifier.status(f"playing {playing}; {_STATE_WORDS[state]}")
                self.notifier.watchdog_if_due()
        finally:
            self.stats.timeouts = self.ducker.timeouts
            self.stats.underruns = self.sink.underruns
            self.stats.wall_s = time.monotonic() - wall0
            self.stats.cpu_s = time.process_time() - cpu0
        return self.stats
