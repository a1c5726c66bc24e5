"""The wake word: a small int8 TFLite keyword model on the shared log-mel front end, with clock-free decisions.

How a stream of audio becomes detections:

* :class:`~daemon.frontend.FeatureStream` turns 16 kHz samples into 10 ms log-mel frames (the same front
  end the recogniser and the training recipe use).
* The last ``window_frames`` frames (about 1.3 s) are kept in a ring; every ``stride_frames`` frames
  (40 ms) the model scores the ring: the probability that the wake phrase has just ended. Before the
  stream has filled the ring, the missing frames hold the model's ``fill_value`` (the front end's value
  for digital silence), exactly as in training.
* :class:`DetectionLogic` averages the last ``smoothing`` scores, fires when the average reaches
  ``threshold`` and then stays quiet for ``refractory_ms``. It is pure and clock-free: every position is a
  16 kHz sample index counted from the samples given, so files, microphones and tests all behave the same
  whatever the chunk size.

:class:`WakeDetector` does the streaming; :class:`WakeTrigger` adapts it to the pipeline's
:class:`~daemon.trigger.Trigger` interface (``wake.engine: model``). The model directory holds
``wake.tflite`` and a model card (``kind: wake``) whose ``model`` section gives the phrase, the window, the
stride and the fill value; :func:`daemon.modelcard.load_card` checks every file's sha256 first.

Sensitivity comes from the ``wake`` config section (``threshold``, ``smoothing_frames``, ``refractory_ms``),
which each firmware profile may override (see :meth:`WakeSettings.from_config`). By default the threshold
is the one the training recipe calibrated for the model (the card's ``model.threshold``: the most sensitive
that kept false accepts on calibration speech within budget), so a custom phrase gets its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from daemon.audio import AudioChunk
from daemon.frontend import SAMPLE_RATE, Frontend, FrontendConfig
from daemon.modelcard import ModelCard, ModelError, load_card
from daemon.tflite import Graph, TFLiteError
from daemon.trigger import WakeEvent

if TYPE_CHECKING:
    from daemon.config import WakeConfig

__all__ = [
    "WAKE_FILE",
    "Detection",
    "DetectionLogic",
    "Scorer",
    "WakeDetector",
    "WakeModel",
    "WakeSettings",
    "WakeTrigger",
    "detections_from_scores",
]

log = logging.getLogger(__name__)

WAKE_FILE = "wake.tflite"  # the graph in a wake model directory
INPUT_NAME = "feats"  # (1, window_frames, n_mels) float32 log-mel
OUTPUT_NAME = "score"  # (1, 1) float32 probability that the phrase ended in the window's last frames
DEFAULT_THRESHOLD = 0.6  # for a model card without a calibrated ``model.threshold``

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class WakeSettings:
    """How eager the detector is; from the ``wake`` config section and its firmware profile."""

    threshold: float = DEFAULT_THRESHOLD  # smoothed score (probability) that fires; lower is more sensitive
    smoothing: int = 5  # model scores averaged before the threshold (one score per stride)
    refractory_ms: int = 2000  # milliseconds after a detection during which no other fires

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, not {self.threshold}")
        if self.smoothing < 1:
            raise ValueError(f"smoothing must be at least 1 score, not {self.smoothing}")
        if self.refractory_ms < 0:
            raise ValueError(f"refractory_ms must not be negative, not {self.refractory_ms}")

    @property
    def refractory_samples(self) -> int:
        return self.refractory_ms * SAMPLE_RATE // 1000

    @classmethod
    def from_config(cls, wake: WakeConfig, model_threshold: float) -> WakeSettings:
        """The config's sensitivity; its ``threshold``, or when that is None the model's calibrated one."""
        threshold = model_threshold if wake.threshold is None else wake.threshold
        return cls(threshold=threshold, smoothing=wake.smoothing_frames, refractory_ms=wake.refractory_ms)


@dataclass(frozen=True)
class Detection:
    """The wake phrase was heard. ``end`` is a 16 kHz sample index on the stream's clock."""

    phrase: str
    score: float  # the smoothed score that fired, 0..1
    end: int  # sample index just after the last frame the model saw when it fired (the trigger point)

    @property
    def time(self) -> float:
        """Seconds from the start of the stream to the trigger point."""
        return self.end / SAMPLE_RATE

    def to_dict(self) -> dict[str, Any]:
        return {"phrase": self.phrase, "time": round(self.time, 3), "score": round(self.score, 4)}


class DetectionLogic:
    """Smoothing, threshold and refractory period over a sequence of (score, position) pairs.

    Pure: no clock, no model. :meth:`update` takes each model score with the sample index it belongs to
    and returns the smoothed score when a detection fires, else None. A detection needs ``smoothing``
    scores in a row since the last :meth:`restart` (a stream that just began, or audio that went missing),
    and none fires before ``refractory_samples`` after the previous one; the refractory period survives
    :meth:`restart`, so a gap in the audio cannot make the same phrase fire twice.
    """

    def __init__(self, settings: WakeSettings) -> None:
        self.settings = settings
        self._scores: deque[float] = deque(maxlen=settings.smoothing)
        self._last_fired: int | None = None

    def restart(self, keep_refractory: bool = True) -> None:
        """Forget the scores (the stream restarts); keep the refractory period unless told otherwise (a
        stream on a new clock, whose positions start again from zero)."""
        self._scores.clear()
        if not keep_refractory:
            self._last_fired = None

    def update(self, score: float, position: int) -> float | None:
        self._scores.append(float(score))
        if len(self._scores) < self.settings.smoothing:
            return None
        smoothed = sum(self._scores) / len(self._scores)
        if smoothed < self.settings.threshold:
            return None
        if self._last_fired is not None and position - self._last_fired < self.settings.refractory_samples:
            return None
        self._last_fired = position
        self._scores.clear()  # a new detection needs a fresh run of high scores
        return min(1.0, max(0.0, smoothed))


def detections_from_scores(trace: Iterable[tuple[int, float]], settings: WakeSettings,
                           phrase: str) -> list[Detection]:
    """Replay recorded (position, raw score) pairs of one continuous stream through :class:`DetectionLogic`:
    what :class:`WakeDetector` would have found with ``settings`` (threshold sweeps need no new scoring)."""
    logic = DetectionLogic(settings)
    found = []
    for position, score in trace:
        fired = logic.update(score, position)
        if fired is not None:
            found.append(Detection(phrase, fired, position))
    return found


class Scorer(Protocol):
    """Scores one window of log-mel frames: the probability that the wake phrase just ended."""

    @property
    def window_frames(self) -> int: ...

    @property
    def stride_frames(self) -> int: ...

    @property
    def fill_value(self) -> float: ...

    @property
    def phrase(self) -> str: ...

    def score(self, window: FloatArray) -> float:
        """``window``: (window_frames, n_mels) float32, oldest frame first."""
        ...


class WakeModel:
    """A wake model directory: ``wake.tflite`` and its card, loaded for scoring (one heavy object)."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        self.directory = directory
        self.card: ModelCard = load_card(directory)
        if self.card.kind != "wake":
            raise ModelError(f"{directory}: model card kind is {self.card.kind!r}, not 'wake'")
        if self.card.frontend != FrontendConfig().to_dict():
            raise ModelError(
                f"{directory}: the model was trained on front-end settings {self.card.frontend}, which are not "
                "the ones this daemon computes"
            )
        section = self.card.model
        try:
            self._window_frames = int(section["window_frames"])
            self._stride_frames = int(section["stride_frames"])
            self._fill_value = float(section["fill_value"])
            self._phrase = str(section["phrase"])
            self._threshold = float(section.get("threshold", DEFAULT_THRESHOLD))
            file = str(section.get("file", WAKE_FILE))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}: model card 'model' section is incomplete: {exc}") from exc
        if file not in self.card.files:
            raise ModelError(f"{directory}: {file} is not listed (with its sha256) in the model card")
        if self._window_frames < 1 or not 1 <= self._stride_frames <= self._window_frames or not self._phrase \
                or not 0.0 < self._threshold < 1.0:
            raise ModelError(f"{directory}: bad window/stride/phrase/threshold in the model card: {section}")
        try:
            self.graph = Graph(directory / file, threads)
        except TFLiteError as exc:
            raise ModelError(str(exc)) from exc
        if set(self.graph.inputs) != {INPUT_NAME} or OUTPUT_NAME not in self.graph.outputs:
            raise ModelError(
                f"{directory / file}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, found "
                f"{sorted(self.graph.inputs)} -> {sorted(self.graph.outputs)}"
            )
        self._input = np.zeros((1, self._window_frames, FrontendConfig().n_mels), dtype=np.float32)

    @property
    def window_frames(self) -> int:
        return self._window_frames

    @property
    def stride_frames(self) -> int:
        return self._stride_frames

    @property
    def fill_value(self) -> float:
        return self._fill_value

    @property
    def phrase(self) -> str:
        return self._phrase

    @property
    def threshold(self) -> float:
        """The threshold calibrated for this model by its recipe (the card's ``model.threshold``)."""
        return self._threshold

    @property
    def version(self) -> str:
        """``name version`` from the card, for logs and the ``models`` map of lattices."""
        return f"{self.card.name} {self.card.version}"

    def score(self, window: FloatArray) -> float:
        self._input[0] = window
        out = self.graph.run(**{INPUT_NAME: self._input})[OUTPUT_NAME]
        return float(np.clip(out.reshape(-1)[0], 0.0, 1.0))


class WakeDetector:
    """Streaming wake-word detection on int16 audio; one per audio stream (cheap, holds the state).

    :meth:`process` takes consecutive pieces of a stream and returns the detections they complete. Give
    ``start`` (the sample index of the piece's first sample) when the stream may have gaps: a piece that
    does not continue the previous one restarts the features, the ring and the smoothing there.
    """

    def __init__(self, scorer: Scorer, settings: WakeSettings | None = None,
                 frontend: Frontend | None = None) -> None:
        self.scorer = scorer
        self.settings = settings or WakeSettings()
        self.frontend = frontend or Frontend()
        self.logic = DetectionLogic(self.settings)
        self._n_mels = self.frontend.cfg.n_mels
        self._hop = self.frontend.cfg.hop
        self._window = self.frontend.cfg.window
        self._stride = scorer.stride_frames
        self._ring = np.full((scorer.window_frames, self._n_mels), scorer.fill_value, dtype=np.float32)
        self._features = self.frontend.stream()
        self._stream_start = 0  # sample index where the current stream (since the last restart) began
        self._next = 0  # sample index the next piece should start at
        self._frames = 0  # frames computed since the stream began
        self.scores = 0  # model calls so far (for statistics)
        self.trace: list[tuple[int, float]] | None = None  # set to a list to record (position, raw score)

    @classmethod
    def load(cls, model_dir: Path, settings: WakeSettings | None = None, threads: int = 1) -> WakeDetector:
        return cls(WakeModel(model_dir, threads), settings)

    @property
    def position(self) -> int:
        """The sample index just after the last sample processed."""
        return self._next

    def restart(self, start: int = 0) -> None:
        """Begin a new stream at sample index ``start``: forget the audio and the scores. A start at or after
        the current position continues the same clock (audio went missing), so the refractory period is
        kept; an earlier one begins a new clock (another file) and forgets it."""
        self.logic.restart(keep_refractory=start >= self._next)
        self._ring.fill(self.scorer.fill_value)
        self._features = self.frontend.stream()
        self._stream_start = self._next = start
        self._frames = 0

    def process(self, samples: npt.NDArray[np.int16], start: int | None = None) -> list[Detection]:
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError("samples must be a one-dimensional int16 array (16 kHz mono)")
        if start is not None and start != self._next:
            if self._frames or self._next:
                log.debug("stream restarts at sample %d (expected %d)", start, self._next)
            self.restart(start)
        self._next += len(samples)
        feats = self._features.accept(samples)
        detections: list[Detection] = []
        done = 0
        while done < len(feats):
            take = min(len(feats) - done, self._stride - self._frames % self._stride)
            self._push(feats[done:done + take])
            done += take
            self._frames += take
            if self._frames % self._stride:
                continue
            # The last frame seen ends at (frames - 1) * hop + window samples into the stream.
            end = self._stream_start + (self._frames - 1) * self._hop + self._window
            self.scores += 1
            score = self.scorer.score(self._ring)
            if self.trace is not None:
                self.trace.append((end, score))
            fired = self.logic.update(score, end)
            if fired is not None:
                detection = Detection(self.scorer.phrase, fired, end)
                log.debug("wake phrase %r at %.2f s (score %.3f)", detection.phrase, detection.time, fired)
                detections.append(detection)
        return detections

    def _push(self, frames: FloatArray) -> None:
        k = len(frames)
        if k >= len(self._ring):
            self._ring[:] = frames[-len(self._ring):]
            return
        self._ring[:-k] = self._ring[k:]
        self._ring[-k:] = frames


class WakeTrigger:
    """The pipeline's :class:`~daemon.trigger.Trigger` on a :class:`WakeDetector`.

    A detection becomes a :class:`~daemon.trigger.WakeEvent` whose utterance starts ``pre_roll_ms`` before
    the trigger point (the command often follows the phrase without a pause, and the detector fires a few
    strides after the phrase ends). After an event the trigger stays quiet until :meth:`reset`.
    """

    def __init__(self, detector: WakeDetector, pre_roll_ms: int = 300, name: str = "wake") -> None:
        if pre_roll_ms < 0:
            raise ValueError(f"pre_roll_ms must not be negative, not {pre_roll_ms}")
        self.detector = detector
        self.pre_roll = pre_roll_ms * SAMPLE_RATE // 1000
        self._name = name
        self._fired = False

    @classmethod
    def from_config(cls, wake: WakeConfig) -> WakeTrigger:
        """The wake model of ``wake.model_path`` with the sensitivity of the config (and its profile)."""
        model = WakeModel(wake.model_path, wake.threads)
        detector = WakeDetector(model, WakeSettings.from_config(wake, model.threshold))
        # No pre-roll: the detector fires only once the phrase is over, so the utterance starts with the
        # command. Audio from before the trigger point is the wake phrase itself, and a recogniser given its
        # tail hears a word that was not said ("...vis" became "videos"). wake.pre_roll_ms is the VAD's.
        return cls(detector, 0, name=model.version)

    @property
    def name(self) -> str:
        return self._name

    def reset(self) -> None:
        self._fired = False
        self.detector.restart(self.detector.position)

    def process(self, chunk: AudioChunk) -> WakeEvent | None:
        if self._fired:
            return None
        detections = self.detector.process(chunk.samples, chunk.start)
        if not detections:
            return None
        first = detections[0]
        self._fired = True
        return WakeEvent(first.phrase, first.score, first.end, max(0, first.end - self.pre_roll))
