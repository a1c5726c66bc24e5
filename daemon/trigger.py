"""What starts an utterance: the :class:`Trigger` interface the pipeline needs, and :class:`VadTrigger`.

A trigger watches the audio while no utterance is going on and says when one begins, with a
:class:`WakeEvent`: where the wake phrase (or whatever fired) ended, and from which sample the recogniser
should hear the utterance (``utterance_start``, earlier than the trigger point by the pre-roll, so the start
of the first word is not cut off). Like the end-pointers it is clock-free: positions are 16 kHz sample
indices taken from the chunks (:attr:`daemon.audio.AudioChunk.start`), so a paced source, a fast one and a
test feeding arrays all behave the same.

How the pipeline drives a trigger: it calls :meth:`Trigger.process` with every chunk (or the rest of a
chunk) heard while idle, stops calling it while an utterance runs, and calls :meth:`Trigger.reset` when the
utterance has ended, before the trigger sees more audio. So a trigger must accept chunks whose starts jump
forward (the audio it did not see, and audio lost to overflow).

:class:`VadTrigger` (``wake.engine: vad``) is the trigger used until a wake-word model ships: an utterance
starts when the energy voice-activity detector hears speech begin. It fires on any speech, so it suits a
quiet room, a push-to-talk style set-up or a test bench, not a living room with the television on. A
wake-word detector will implement the same interface.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from daemon.audio import AudioChunk
from daemon.endpoint import FRAME_MS, EnergyVad
from daemon.frontend import SAMPLE_RATE

__all__ = ["VAD_PHRASE", "Trigger", "VadTrigger", "WakeEvent"]

log = logging.getLogger(__name__)

#: The ``phrase`` of wake events made by :class:`VadTrigger` (no phrase is recognised: speech began).
VAD_PHRASE = "speech"


@dataclass(frozen=True)
class WakeEvent:
    """An utterance begins. Positions are 16 kHz sample indices on the audio clock."""

    phrase: str  # what fired: the wake phrase, or VAD_PHRASE
    score: float  # detector confidence, 0..1
    end: int  # sample index just after the wake phrase (the trigger point)
    utterance_start: int  # sample index of the first sample the recogniser should hear (pre-roll included)

    def __post_init__(self) -> None:
        if not self.phrase:
            raise ValueError("WakeEvent.phrase must not be empty")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"WakeEvent.score must be within 0..1, not {self.score}")
        if not 0 <= self.utterance_start <= self.end:
            raise ValueError(
                f"need 0 <= utterance_start <= end, got {self.utterance_start} and {self.end}"
            )

    @property
    def time(self) -> float:
        """Seconds on the audio clock at the trigger point (the ``time`` of the wake message)."""
        return self.end / SAMPLE_RATE


class Trigger(Protocol):
    """What the pipeline needs from a wake-word detector (see the module docstring)."""

    @property
    def name(self) -> str:
        """Short name for logs, status and the ``models`` map of lattices (e.g. ``"vad"``)."""
        ...

    def process(self, chunk: AudioChunk) -> WakeEvent | None:
        """Look at more idle audio; an event when an utterance begins in it (at most one per call)."""
        ...

    def reset(self) -> None:
        """The utterance ended: listen afresh (forget partial detections, keep adapted noise levels)."""
        ...


class VadTrigger:
    """Starts an utterance when speech begins, as heard by an :class:`~daemon.endpoint.EnergyVad`.

    Each 10 ms frame is loud or not (the detector without its hangover, so a click does not stretch into
    speech). The trigger fires at the first frame where at least ``onset_ms`` of the last ``window_ms``
    were loud; the speech began at the first loud frame of that window, and the utterance starts
    ``pre_roll_ms`` before that. The score is the loud share of the frames since the speech began (1.0 for
    a clean onset). After firing it stays quiet until :meth:`reset`.
    """

    name = "vad"

    def __init__(self, *, pre_roll_ms: int = 300, onset_ms: int = 60, window_ms: int = 120,
                 vad: EnergyVad | None = None) -> None:
        if pre_roll_ms < 0:
            raise ValueError(f"pre_roll_ms must not be negative, not {pre_roll_ms}")
        if not FRAME_MS <= onset_ms <= window_ms:
            raise ValueError(f"need {FRAME_MS} <= onset_ms <= window_ms, got {onset_ms} and {window_ms}")
        self.pre_roll = pre_roll_ms * SAMPLE_RATE // 1000  # samples
        self.onset_frames = -(-onset_ms // FRAME_MS)
        self.window_frames = -(-window_ms // FRAME_MS)
        self.frame = SAMPLE_RATE * FRAME_MS // 1000  # samples per frame
        self.vad = vad if vad is not None else EnergyVad(hangover_ms=0)
        self._window: deque[tuple[int, bool]] = deque(maxlen=self.window_frames)  # (frame start, loud)
        self._carry = np.zeros(0, dtype=np.int16)
        self._carry_start = 0
        self._fired = False

    def reset(self) -> None:
        self._window.clear()
        self._carry = np.zeros(0, dtype=np.int16)
        self._fired = False

    def process(self, chunk: AudioChunk) -> WakeEvent | None:
        if self._fired:
            return None
        if len(self._carry) and self._carry_start + len(self._carry) != chunk.start:
            self._carry = np.zeros(0, dtype=np.int16)  # audio is missing in between: drop the partial frame
        if not len(self._carry):
            self._carry_start = chunk.start
        samples: npt.NDArray[np.int16] = np.concatenate([self._carry, chunk.samples])
        base = self._carry_start
        whole = len(samples) // self.frame * self.frame
        for offset in range(0, whole, self.frame):
            start = base + offset
            if self._window and self._window[-1][0] + self.frame != start:
                self._window.clear()  # a gap: loudness before it says nothing about now
            self._window.append((start, self._loud(samples[offset:offset + self.frame])))
            loud = [s for s, is_loud in self._window if is_loud]
            if len(loud) >= self.onset_frames:
                self._fired = True
                self._carry = np.zeros(0, dtype=np.int16)
                end = start + self.frame
                score = len(loud) * self.frame / (end - loud[0])  # loud share since the speech began
                event = WakeEvent(VAD_PHRASE, min(1.0, score), end, max(0, loud[0] - self.pre_roll))
                log.debug("speech onset at %.2f s (utterance from %.2f s)", loud[0] / SAMPLE_RATE,
                          event.utterance_start / SAMPLE_RATE)
                return event
        self._carry = samples[whole:].copy()
        self._carry_start = base + whole
        return None

    def _loud(self, frame: npt.NDArray[np.int16]) -> bool:
        return self.vad.is_speech(frame)
