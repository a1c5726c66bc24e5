"""The daemon's pipeline: audio -> trigger -> recogniser stream -> end-pointers -> lattices -> publisher.

One worker thread (:meth:`Pipeline.start`) owns all of the state below; the audio source's callback only
copies frames into its bounded ring buffer, and paho runs its own network thread. Recognition never runs
in a callback.

What happens to the audio, 10 ms frame by 10 ms frame (time is counted in samples, never read from a
clock, so a paced source, a fast one and a test feeding arrays give the same lattices):

* Every frame gets a speech decision from one :class:`~daemon.endpoint.EnergyVad` that hears all the audio
  (so its noise floor follows the room) and goes into a short history, from which the pre-roll is taken.
* While idle, the audio goes to the :class:`~daemon.trigger.Trigger`. When it fires, a ``wake`` message
  and a ``media/duck`` (on) go out, a :class:`~daemon.recognizer.RecognizerStream` is made for the
  utterance (biased toward the bias list in force) and is fed the history from the event's
  ``utterance_start`` (the pre-roll) onwards.
* While an utterance runs, each frame is fed to the stream, then to an
  :class:`~daemon.endpoint.EndpointPair`: its speech decision, and whether the recogniser emitted a label
  that lies well inside what the detector took for silence (a quiet talker is still talking if words keep
  coming; labels of the last word, which the model emits a little after the audio, do not count).
* The speculative end-pointer (``endpoint.speculative_lead_ms`` ahead) publishes a ``speculative``
  lattice of what was decoded so far, so downstream work can start. If the speaker goes on, a ``reset``
  (``speech_resumed``) withdraws it and a later speculative lattice may follow.
* The final end-pointer finalises the stream and publishes the ``final`` lattice, preceded by a ``reset``
  (``final_differs``) when its best words differ from those of the speculative lattice still standing, and
  followed by ``media/duck`` (off). An utterance cut by ``max_utterance``, by no speech after the trigger,
  by audio lost in between, by the end of the audio or by shutdown also ends with a final lattice: every
  ``wake`` is followed by exactly one final lattice with its utterance id.

Lattices of an utterance carry ``seq`` 0, 1, 2, ... in publishing order. The worker also pings the systemd
watchdog (so a stuck pipeline gets the service restarted), keeps a human-readable ``STATUS=`` line up to
date and publishes ``metrics`` every ``metrics.interval_s``.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from daemon.audio import AudioChunk, AudioSource
from daemon.bias import load_bias_file, save_bias_file
from daemon.endpoint import FRAME_MS, EndpointPair, EnergyVad, PairEvent
from daemon.frontend import SAMPLE_RATE
from daemon.lattice import Lattice, new_utterance_id
from daemon.messages import BiasSet, MediaDuck, Metrics, Reset, Wake
from daemon.recognizer import BiasState, Hypothesis, Recognizer, RecognizerStream
from daemon.systemd_notify import Notifier
from daemon.trigger import Trigger, WakeEvent

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.mqtt import PublisherStatus

__all__ = ["BiasStore", "EventSink", "Pipeline", "PipelineSettings", "PipelineStats"]

log = logging.getLogger(__name__)

FRAME = SAMPLE_RATE * FRAME_MS // 1000  # samples per 10 ms frame
READ_TIMEOUT_S = 0.1  # the worker wakes at least this often (watchdog, metrics, stop requests)
STATUS_EVERY_S = 1.0  # STATUS= is recomputed this often and sent when it changed
HISTORY_EXTRA_MS = 500  # history kept beyond the pre-roll, for triggers that fire late in a chunk
TOKEN_GRACE_FRAMES = 2  # recogniser frames after the detector's silence began that still belong to the
# last word (the model emits labels a little after their audio); later labels mean the talker goes on


class EventSink(Protocol):
    """Where the pipeline's messages go: :class:`daemon.mqtt.Publisher`, or a recorder in tests."""

    def publish_wake(self, wake: Wake) -> object: ...

    def publish_lattice(self, lattice: Lattice) -> object: ...

    def publish_reset(self, reset: Reset) -> object: ...

    def publish_media_duck(self, duck: MediaDuck) -> object: ...

    def publish_metrics(self, metrics: Metrics) -> object: ...


@dataclass(frozen=True)
class PipelineSettings:
    device_id: str
    pre_roll_ms: int = 300  # the trigger's pre-roll (the history kept must cover it), milliseconds
    metrics_interval_s: float = 30.0  # seconds between metrics messages; 0: none

    @classmethod
    def from_config(cls, config: Config) -> PipelineSettings:
        return cls(device_id=config.device_id, pre_roll_ms=config.wake.pre_roll_ms,
                   metrics_interval_s=config.metrics.interval_s)


class BiasStore:
    """The bias list document in force: loaded at start, replaced by each valid ``bias/set`` message.

    Safe across threads (paho's network thread sets, the pipeline reads). Received documents are saved to
    ``path`` (:func:`daemon.bias.save_bias_file`, atomically) so they survive a restart even before the
    broker re-sends the retained one. The pipeline turns the document into each new stream's bias state
    with its ``make_bias`` hook (:class:`daemon.bias.BiasGraphCache`): a new list applies from the next
    utterance, without a restart.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._current: BiasSet | None = None

    @property
    def current(self) -> BiasSet | None:
        with self._lock:
            return self._current

    def load(self, path: Path) -> BiasSet:
        """Read and validate a bias list file (:func:`daemon.bias.load_bias_file`; raises BiasFileError)."""
        document = load_bias_file(path)
        with self._lock:
            self._current = document
        log.info("bias list %s loaded from %s: %d names", document.version or "(no version)", path,
                 len(document.phrases))
        return document

    def set(self, document: BiasSet) -> None:
        """A new bias list arrived (already validated): keep it, and save it if there is a path."""
        with self._lock:
            same = self._current == document
            self._current = document
        if same:
            log.debug("bias list %s received again; unchanged", document.version or "(no version)")
            return
        log.info("bias list %s received: %d names, used from the next utterance",
                 document.version or "(no version)", len(document.phrases))
        if self.path is not None:
            try:
                save_bias_file(self.path, document)
            except OSError as exc:
                log.warning("cannot save the bias list to %s: %s", self.path, exc)


@dataclass(frozen=True)
class PipelineStats:
    utterances: int  # utterances started
    lattices: int  # lattices published (speculative and final)
    resets: int  # reset messages published
    frames: int  # 10 ms frames processed
    gaps: int  # times audio was missing between two chunks
    lost_samples: int  # samples missing in those gaps
    active: bool  # an utterance is going on


@dataclass(frozen=True)
class _Frame:
    start: int  # sample index of the first sample
    samples: npt.NDArray[np.int16]
    speech: bool  # the energy detector's decision


@dataclass
class _Utterance:
    id: str
    start: int  # sample index of the first sample fed to the stream
    stream: RecognizerStream
    endpoints: EndpointPair
    frames: int = 0  # frames fed
    seq: int = 0  # seq of the next lattice
    speculative: tuple[int, str] | None = None  # seq and best words of the standing speculative lattice
    last_token_frame: int = -1  # latest recogniser frame with a label seen so far

    @property
    def end(self) -> int:
        return self.start + self.frames * FRAME


@dataclass
class _Period:
    """Counters for one metrics period."""

    started: float  # clock
    cpu: float  # process CPU seconds at the start
    busy_s: float = 0.0  # seconds spent processing audio
    audio_s: float = 0.0  # seconds of audio processed
    lag_floor: float | None = None  # smallest (arrival time - audio time) seen: the pipeline's latency floor
    lag_last: float = 0.0  # (arrival time - audio time) of the latest chunk
    previous_floor: float | None = None  # lag_floor of the period before (the floor drifts with the clocks)


class Pipeline:
    """See the module docstring. Feed it with :meth:`process_chunk` directly, or :meth:`start` a worker
    that reads ``source``; :meth:`stop` ends the worker after publishing any utterance in progress.

    ``endpoints`` makes the end-pointer pair for each utterance
    (:func:`daemon.endpoint.endpoints_from_config`); ``make_bias`` turns the bias list in force into the
    stream's :class:`~daemon.recognizer.BiasState` (:class:`daemon.bias.BiasGraphCache`; None: no biasing).
    """

    def __init__(
        self,
        recognizer: Recognizer,
        trigger: Trigger,
        sink: EventSink,
        settings: PipelineSettings,
        endpoints: Callable[[], EndpointPair],
        *,
        source: AudioSource | None = None,
        notifier: Notifier | None = None,
        bias: BiasStore | None = None,
        make_bias: Callable[[BiasSet], BiasState] | None = None,
        models: Mapping[str, str] | None = None,
        publisher_status: Callable[[], PublisherStatus] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.recognizer = recognizer
        self.trigger = trigger
        self.sink = sink
        self.settings = settings
        self.make_endpoints = endpoints
        self.source = source
        self.notifier = notifier
        self.bias = bias if bias is not None else BiasStore()
        self.make_bias = make_bias
        self.models = dict(models) if models is not None else {"recognizer": recognizer.version,
                                                                "wake": trigger.name}
        self.publisher_status = publisher_status
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._tokens = recognizer.tokens.tokens
        self._token_grace_ms = TOKEN_GRACE_FRAMES * recognizer.frame_shift_s * 1000
        endpoints()  # fail now, not at the first utterance, if the settings cannot work
        # No hangover: trailing silence counts from the last loud frame, so the final end point comes
        # final_silence_ms after the speech (a hangover would add itself to every end-pointing latency).
        self._vad = EnergyVad(hangover_ms=0)
        self._history: list[_Frame] = []
        self._history_keep = (settings.pre_roll_ms + HISTORY_EXTRA_MS) // FRAME_MS
        self._carry = np.zeros(0, dtype=np.int16)
        self._next_sample: int | None = None  # where the next chunk should start
        self._last_end = 0  # sample index where the last utterance ended (pre-roll never reaches back past it)
        self._utt: _Utterance | None = None
        self._utterances = self._lattices = self._resets = self._frames = self._gaps = self._lost = 0
        # worker thread
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.done = threading.Event()  # set when the worker has finished (stopped, audio ended or failed)
        self.error: BaseException | None = None  # what made the worker fail, if it did
        self._started_at = clock()
        self._period = _Period(clock(), cpu_clock())
        self._next_metrics = self._started_at + settings.metrics_interval_s
        self._next_status = self._started_at
        self._status_sent: str | None = None

    # -- state ------------------------------------------------------------------------------------------

    @property
    def stats(self) -> PipelineStats:
        return PipelineStats(self._utterances, self._lattices, self._resets, self._frames, self._gaps,
                             self._lost, self._utt is not None)

    @property
    def active(self) -> bool:
        return self._utt is not None

    # -- feeding ----------------------------------------------------------------------------------------

    def process_chunk(self, chunk: AudioChunk) -> None:
        """Run one chunk of audio through the pipeline (on the worker thread, or directly in tests)."""
        began = time.perf_counter()
        del self._history[: max(0, len(self._history) - self._history_keep)]
        new = self._split(chunk)
        pos = len(self._history) - new  # history index of the first frame not yet handled
        while pos < len(self._history):
            if self._utt is not None:
                self._feed(self._utt, self._history[pos])
                pos += 1
                continue
            offset = max(0, self._history[pos].start - chunk.start)
            if offset >= len(chunk):
                break
            rest = chunk if offset == 0 else AudioChunk(chunk.samples[offset:], chunk.start + offset)
            event = self.trigger.process(rest)
            if event is None:
                break
            self._begin(event)
            pos = self._history_index(max(event.utterance_start, self._last_end))
        self._frames += new
        self._period.busy_s += time.perf_counter() - began
        self._period.audio_s += new * FRAME_MS / 1000

    def finish(self, reason: str = "end_of_audio") -> None:
        """End the utterance in progress, if any, with a final lattice (the audio ended, or shutdown)."""
        if self._utt is not None:
            self._end(self._utt, reason)

    def _split(self, chunk: AudioChunk) -> int:
        """Cut the chunk into 10 ms frames with speech decisions, appended to the history; returns how many."""
        if self._next_sample is not None and chunk.start != self._next_sample:
            lost = chunk.start - self._next_sample
            self._gaps += 1
            self._lost += max(0, lost)
            log.warning("%d samples of audio missing before %.2f s (overflow or device away)",
                        lost, chunk.start / SAMPLE_RATE)
            if self._utt is not None:
                self._end(self._utt, "audio_gap")
            self._carry = np.zeros(0, dtype=np.int16)
            self._history.clear()  # pre-roll must not reach across missing audio
            self._last_end = chunk.start
        self._next_sample = chunk.end
        samples = np.concatenate([self._carry, chunk.samples]) if len(self._carry) else chunk.samples
        first = chunk.start - len(self._carry)
        whole = len(samples) // FRAME * FRAME
        for offset in range(0, whole, FRAME):
            frame = samples[offset:offset + FRAME]
            self._history.append(_Frame(first + offset, frame, self._vad.is_speech(frame)))
        self._carry = samples[whole:].copy()
        return whole // FRAME

    def _history_index(self, sample: int) -> int:
        """Index of the first history frame that ends after ``sample``."""
        starts = [f.start for f in self._history]
        return bisect.bisect_right(starts, sample - FRAME)

    # -- one utterance ---------------------------------------------------------------------------------

    def _begin(self, event: WakeEvent) -> None:
        utterance_id = new_utterance_id()
        bias_doc = self.bias.current
        bias_state = self.make_bias(bias_doc) if self.make_bias is not None and bias_doc is not None else None
        stream = self.recognizer.stream(bias=bias_state)
        # The start is set again by the first frame fed (the frame holding utterance_start).
        self._utt = _Utterance(utterance_id, event.utterance_start, stream, self.make_endpoints())
        self._utterances += 1
        log.info("utterance %s begins at %.2f s (%s, score %.2f)", utterance_id, event.time, event.phrase,
                 event.score)
        device = self.settings.device_id
        self.sink.publish_wake(Wake(device, utterance_id, event.phrase, round(event.score, 4),
                                    round(event.time, 4)))
        self.sink.publish_media_duck(MediaDuck(device, True, utterance_id))

    def _feed(self, utt: _Utterance, frame: _Frame) -> None:
        if utt.frames == 0:
            utt.start = frame.start
        utt.stream.accept_waveform(frame.samples)
        utt.frames += 1
        events = utt.endpoints.update(frame.speech, self._label_in_silence(utt, frame))
        final = next((e for e in events if e.which == "final"), None)
        for pair_event in events:
            if pair_event.which == "speculative" and final is None:
                self._on_speculative(utt, pair_event)
        if final is not None:
            self._end(utt, final.event.reason or "silence")

    def _label_in_silence(self, utt: _Utterance, audio: _Frame) -> bool:
        """Did the recogniser emit a label since the last frame, well after the detector's silence began, with
        the microphone hearing more than near-silence (a quiet talker the detector misses, not a model
        inventing a letter in an empty room)?"""
        frame = utt.stream.last_token_frame()
        if frame is None or frame <= utt.last_token_frame:
            return False
        utt.last_token_frame = frame
        if EnergyVad.level(audio.samples) < self._vad.min_level_dbfs:
            return False
        final = utt.endpoints.final
        if final.trailing_silence_ms == 0:
            return False  # the detector hears speech anyway
        silence_began_ms = final.elapsed_ms - final.trailing_silence_ms
        label_ms = frame * self.recognizer.frame_shift_s * 1000
        return label_ms > silence_began_ms + self._token_grace_ms

    def _on_speculative(self, utt: _Utterance, pair_event: PairEvent) -> None:
        if pair_event.event.kind == "end":
            lattice = self._lattice(utt, utt.stream.nbest(), "speculative")
            utt.speculative = (lattice.seq, lattice.best.text if lattice.best else "")
            self._publish_lattice(lattice)
        elif utt.speculative is not None:  # "resume": the speaker went on
            self._publish_reset(utt, "speech_resumed")

    def _end(self, utt: _Utterance, reason: str) -> None:
        utt.stream.finalize()
        lattice = self._lattice(utt, utt.stream.nbest(), "final")
        text = lattice.best.text if lattice.best else ""
        if utt.speculative is not None and utt.speculative[1] != text:
            self._publish_reset(utt, "final_differs")
        self._publish_lattice(lattice)
        self.sink.publish_media_duck(MediaDuck(self.settings.device_id, False, utt.id))
        self._utt = None
        self._last_end = utt.end
        self.trigger.reset()
        log.info("utterance %s ends (%s) at %.2f s: %r", utt.id, reason, utt.end / SAMPLE_RATE, text)

    def _lattice(self, utt: _Utterance, hyps: list[Hypothesis], kind: str) -> Lattice:
        lattice = Lattice.from_nbest(
            hyps,
            token_list=self._tokens,
            frame_shift_s=self.recognizer.frame_shift_s,
            utterance_id=utt.id,
            device_id=self.settings.device_id,
            kind="final" if kind == "final" else "speculative",
            seq=utt.seq,
            start_time=utt.start / SAMPLE_RATE,
            end_time=utt.end / SAMPLE_RATE,
            models=self.models,
        )
        utt.seq += 1
        return lattice

    def _publish_lattice(self, lattice: Lattice) -> None:
        self.sink.publish_lattice(lattice)
        self._lattices += 1
        log.debug("%s lattice %d of %s: %r", lattice.kind, lattice.seq, lattice.utterance_id,
                  lattice.best.text if lattice.best else "")

    def _publish_reset(self, utt: _Utterance, reason: str) -> None:
        if utt.speculative is None:
            return
        self.sink.publish_reset(Reset(self.settings.device_id, utt.id, utt.speculative[0], reason))
        self._resets += 1
        utt.speculative = None

    # -- worker thread -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread reading ``source`` (which the caller has started)."""
        if self.source is None:
            raise RuntimeError("Pipeline.start() needs a source")
        if self._thread is not None:
            raise RuntimeError("Pipeline.start() called twice")
        self._thread = threading.Thread(target=self._run, name="harkd-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finish (publishing any utterance in progress) and wait for it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the pipeline thread did not stop within %.0f s", timeout)
            self._thread = None

    def _run(self) -> None:
        source = self.source
        if source is None:
            return
        try:
            while not self._stopping.is_set():
                chunk = source.read(READ_TIMEOUT_S)
                if chunk is not None:
                    self._note_arrival(chunk)
                    self.process_chunk(chunk)
                elif source.ended:
                    log.info("the audio source ended")
                    break
                self.tick()
            self.finish("end_of_audio" if source.ended else "shutdown")
        except BaseException as exc:  # recorded for the service, which exits non-zero (systemd restarts it)
            self.error = exc
            log.exception("the pipeline failed")
        finally:
            self.done.set()

    def _note_arrival(self, chunk: AudioChunk) -> None:
        behind = self._clock() - chunk.end / SAMPLE_RATE
        period = self._period
        period.lag_last = behind
        period.lag_floor = behind if period.lag_floor is None else min(period.lag_floor, behind)

    def tick(self) -> None:
        """Watchdog, status and metrics; the worker calls it after every read."""
        now = self._clock()
        if self.notifier is not None:
            self.notifier.watchdog_if_due()
            if now >= self._next_status:
                self._next_status = now + STATUS_EVERY_S
                line = self.status_line()
                if line != self._status_sent:
                    self.notifier.status(line)
                    self._status_sent = line
        if self.settings.metrics_interval_s > 0 and now >= self._next_metrics:
            self._next_metrics = now + self.settings.metrics_interval_s
            self.publish_metrics()

    # -- health ------------------------------------------------------------------------------------------

    def status_line(self) -> str:
        """One line for ``systemctl status``: what the pipeline does, the audio, the broker."""
        parts = []
        stats = self.source.stats if self.source is not None else None
        if self._utt is not None:
            parts.append(f"hearing an utterance ({self.trigger.name} trigger)")
        elif stats is None or stats.state in ("running", "ended"):
            where = f" on {stats.device!r}" if stats is not None and stats.device else ""
            parts.append(f"listening ({self.trigger.name} trigger){where}")
        else:
            parts.append(stats.status)
        count = self._utterances
        parts.append(f"{count} utterance{'s' if count != 1 else ''}")
        if self.publisher_status is not None:
            mqtt = self.publisher_status()
            if mqtt.connected:
                parts.append(f"MQTT connected, {mqtt.pending} queued")
            else:
                why = f": {mqtt.last_error}" if mqtt.last_error else ""
                parts.append(f"MQTT away{why}, {mqtt.pending} queued")
        return "; ".join(parts)

    def metrics(self) -> Metrics:
        """Health over the period since the last call (which starts a new period)."""
        now, cpu = self._clock(), self._cpu_clock()
        period = self._period
        wall = max(1e-9, now - period.started)
        floor = min((f for f in (period.lag_floor, period.previous_floor) if f is not None), default=None)
        lag = max(0.0, period.lag_last - floor) if floor is not None and period.lag_floor is not None else None
        extra: dict[str, float | int | str | bool] = {
            "trigger": self.trigger.name,
            "utterances": self._utterances,
            "audio_gaps": self._gaps,
            "audio_lost_samples": self._lost,
        }
        dropped = None
        if self.source is not None:
            stats = self.source.stats
            dropped = stats.dropped_frames
            extra.update(audio_state=stats.state, audio_status=stats.status,
                         input_overflows=stats.input_overflows)
        pending = outbox_dropped = None
        if self.publisher_status is not None:
            mqtt = self.publisher_status()
            pending, outbox_dropped = mqtt.pending, mqtt.dropped
            extra["mqtt_connected"] = mqtt.connected
        metrics = Metrics(
            device_id=self.settings.device_id,
            uptime_s=round(max(0.0, now - self._started_at), 3),
            real_time_factor=round(period.busy_s / period.audio_s, 4) if period.audio_s > 0 else None,
            lag_s=None if lag is None else round(lag, 4),
            dropped_frames=dropped,
            cpu_percent=round(max(0.0, cpu - period.cpu) / wall * 100, 2),
            outbox_pending=pending,
            outbox_dropped=outbox_dropped,
            extra=extra,
        )
        self._period = _Period(now, cpu, previous_floor=period.lag_floor)
        return metrics

    def publish_metrics(self) -> Metrics:
        metrics = self.metrics()
        self.sink.publish_metrics(metrics)
        return metrics

