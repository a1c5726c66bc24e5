"""End-pointers: when has the speaker finished? Pure, clock-free logic fed one 10 ms frame at a time.

Nothing here reads a clock: time is the number of frames fed since :meth:`EndPointer.reset` (the start of
the utterance) times ``frame_ms``, so tests feed decisions instead of sleeping and a paced or a fast
source give the same end-points.

Each frame comes with a speech decision (from any voice activity detector; :class:`EnergyVad` is a simple
one) and, optionally, whether the recogniser emitted a token during it. Either counts as speech: a quiet
talker the detector misses is still talking if words keep coming.

:class:`EndPointer` fires an ``end`` event when, after at least ``min_speech_ms`` of speech, the trailing
silence reaches ``silence_ms`` (reason ``silence``), when the utterance reaches ``max_utterance_ms``
(``max_utterance``), or, if ``no_speech_ms`` is set, when that long has passed with less than
``min_speech_ms`` of speech (``no_speech``). After a ``silence`` end, if the caller keeps feeding frames
and speech comes back, it fires a ``resume`` event and re-arms.

The speculative end-pointer is the same class with ``silence_ms - lead_ms`` (:meth:`EndPointer.speculative`,
default lead 200 ms): it fires that much earlier, so downstream work can start while the final end-pointer
waits; if the speaker goes on, its ``resume`` tells the pipeline to withdraw the speculative lattice.
:class:`EndpointPair` runs both on the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = [
    "DEFAULT_LEAD_MS",
    "FRAME_MS",
    "EndPointer",
    "EndpointEvent",
    "EndpointPair",
    "EnergyVad",
    "PairEvent",
    "endpoints_from_config",
]

FRAME_MS = 10  # milliseconds per frame
DEFAULT_LEAD_MS = 200  # how much earlier the speculative end-pointer fires, milliseconds

EndReason = Literal["silence", "max_utterance", "no_speech"]


@dataclass(frozen=True)
class EndpointEvent:
    kind: Literal["end", "resume"]
    reason: EndReason | None  # why it ended; None for "resume"
    frames: int  # frames fed since reset, including the one that fired
    speech_ms: int  # speech so far in the utterance, milliseconds
    trailing_silence_ms: int  # silence since the last speech, milliseconds
    frame_ms: int = FRAME_MS

    @property
    def time_ms(self) -> int:
        """Milliseconds from the utterance start to the end of the frame that fired."""
        return self.frames * self.frame_ms


class EndPointer:
    """See the module docstring. All durations are milliseconds; one :meth:`update` per frame."""

    def __init__(
        self,
        silence_ms: int = 800,
        min_speech_ms: int = 200,
        max_utterance_ms: int = 10_000,
        *,
        no_speech_ms: int | None = None,
        frame_ms: int = FRAME_MS,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, not {frame_ms}")
        if silence_ms < frame_ms:
            raise ValueError(f"silence_ms ({silence_ms}) must be at least one frame ({frame_ms} ms)")
        if min_speech_ms < 0:
            raise ValueError(f"min_speech_ms must not be negative, not {min_speech_ms}")
        if max_utterance_ms < frame_ms:
            raise ValueError(f"max_utterance_ms ({max_utterance_ms}) must be at least one frame ({frame_ms} ms)")
        if no_speech_ms is not None and no_speech_ms < frame_ms:
            raise ValueError(f"no_speech_ms ({no_speech_ms}) must be at least one frame ({frame_ms} ms)")
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self.max_utterance_ms = max_utterance_ms
        self.no_speech_ms = no_speech_ms
        self.frame_ms = frame_ms
        self.reset()

    @classmethod
    def speculative(
        cls,
        silence_ms: int = 800,
        min_speech_ms: int = 200,
        max_utterance_ms: int = 10_000,
        *,
        lead_ms: int = DEFAULT_LEAD_MS,
        no_speech_ms: int | None = None,
        frame_ms: int = FRAME_MS,
    ) -> EndPointer:
        """The speculative end-pointer for a final one with these settings: ``silence_ms - lead_ms``.

        At least one frame of silence is always required (a lead as long as ``silence_ms`` is cut short).
        """
        if lead_ms < 0:
            raise ValueError(f"lead_ms must not be negative, not {lead_ms}")
        return cls(
            max(silence_ms - lead_ms, frame_ms),
            min_speech_ms,
            max_utterance_ms,
            no_speech_ms=no_speech_ms,
            frame_ms=frame_ms,
        )

    def speculative_twin(self, lead_ms: int = DEFAULT_LEAD_MS) -> EndPointer:
        """A speculative end-pointer with this one's settings and ``lead_ms`` less silence."""
        return EndPointer.speculative(
            self.silence_ms,
            self.min_speech_ms,
            self.max_utterance_ms,
            lead_ms=lead_ms,
            no_speech_ms=self.no_speech_ms,
            frame_ms=self.frame_ms,
        )

    def reset(self) -> None:
        """Start a new utterance."""
        self._frames = 0
        self._speech_frames = 0
        self._silence_frames = 0  # consecutive non-speech frames since the last speech frame
        self._ended: EndReason | None = None

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def elapsed_ms(self) -> int:
        return self._frames * self.frame_ms

    @property
    def speech_ms(self) -> int:
        return self._speech_frames * self.frame_ms

    @property
    def trailing_silence_ms(self) -> int:
        return self._silence_frames * self.frame_ms

    @property
    def ended(self) -> EndReason | None:
        """Why the utterance ended, or None while it goes on."""
        return self._ended

    def update(self, is_speech: bool, token_emitted: bool = False) -> EndpointEvent | None:
        """Feed one frame's decisions; returns an event when the end-point is reached or speech resumes."""
        self._frames += 1
        speech = is_speech or token_emitted
        if speech:
            self._speech_frames += 1
            self._silence_frames = 0
        else:
            self._silence_frames += 1

        if self._ended is not None:
            if self._ended == "silence" and speech:
                self._ended = None
                return self._event("resume", None)
            return None
        if self.elapsed_ms >= self.max_utterance_ms:
            return self._end("max_utterance")
        if self.speech_ms >= self.min_speech_ms:
            if self.trailing_silence_ms >= self.silence_ms:
                return self._end("silence")
        elif self.no_speech_ms is not None and self.elapsed_ms >= self.no_speech_ms:
            return self._end("no_speech")
        return None

    def _end(self, reason: EndReason) -> EndpointEvent:
        self._ended = reason
        return self._event("end", reason)

    def _event(self, kind: Literal["end", "resume"], reason: EndReason | None) -> EndpointEvent:
        return EndpointEvent(kind, reason, self._frames, self.speech_ms, self.trailing_silence_ms, self.frame_ms)


@dataclass(frozen=True)
class PairEvent:
    which: Literal["speculative", "final"]
    event: EndpointEvent


class EndpointPair:
    """The speculative and the final end-pointer fed with the same frames.

    Events come speculative first within a frame. Once the final one has ended, the utterance is over:
    further frames give no events until :meth:`reset`.
    """

    def __init__(self, final: EndPointer, lead_ms: int = DEFAULT_LEAD_MS) -> None:
        self.final = final
        self.speculative = final.speculative_twin(lead_ms)

    def reset(self) -> None:
        self.final.reset()
        self.speculative.reset()

    def update(self, is_speech: bool, token_emitted: bool = False) -> list[PairEvent]:
        if self.final.ended is not None:
            return []
        events = []
        speculative = self.speculative.update(is_speech, token_emitted)
        if speculative is not None:
            events.append(PairEvent("speculative", speculative))
        final = self.final.update(is_speech, token_emitted)
        if final is not None:
            events.append(PairEvent("final", final))
        return events


class EnergyVad:
    """Energy voice-activity decision with an adaptive noise floor; one call per frame, no clock.

    A frame is speech when its level (dBFS, mean power of samples scaled to [-1, 1)) is at least
    ``threshold_db`` above the noise floor and above ``min_level_dbfs``; the decision is held for
    ``hangover_ms`` after the last such frame, to bridge short gaps inside words. The floor follows the
    level down at once and creeps up at ``floor_rise_db_per_s``, so it tracks steady background noise
    (fans, media playback) but not speech.
    """

    def __init__(
        self,
        *,
        threshold_db: float = 9.0,  # decibels above the noise floor
        min_level_dbfs: float = -55.0,  # quieter frames are never speech, dBFS
        floor_rise_db_per_s: float = 2.0,  # how fast the floor follows a louder background, dB per second
        hangover_ms: int = 100,  # milliseconds a speech decision is held
        initial_floor_dbfs: float = -60.0,  # noise floor before any frame was seen, dBFS
        frame_ms: int = FRAME_MS,
    ) -> None:
        if frame_ms <= 0 or hangover_ms < 0 or floor_rise_db_per_s < 0:
            raise ValueError("frame_ms must be positive; hangover_ms and floor_rise_db_per_s not negative")
        self.threshold_db = threshold_db
        self.min_level_dbfs = min_level_dbfs
        self.frame_ms = frame_ms
        self._rise_per_frame = floor_rise_db_per_s * frame_ms / 1000.0
        self._hangover_frames = math.ceil(hangover_ms / frame_ms)
        self._initial_floor = initial_floor_dbfs
        self.reset()

    def reset(self) -> None:
        self.noise_floor_dbfs = self._initial_floor
        self.level_dbfs = -100.0
        self._hold = 0

    @staticmethod
    def level(frame: npt.ArrayLike | bytes) -> float:
        """A frame's level in dBFS: int16 samples (array or little-endian bytes) or floats in [-1, 1)."""
        if isinstance(frame, bytes | bytearray | memoryview):
            samples = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
        else:
            array = np.asarray(frame)
            if np.issubdtype(array.dtype, np.integer):
                samples = array.astype(np.float64) / 32768.0
            else:
                samples = array.astype(np.float64)
        if samples.size == 0:
            return -100.0
        power = float(np.mean(samples * samples))
        return 10.0 * math.log10(power + 1e-10)

    def is_speech(self, frame: npt.ArrayLike | bytes) -> bool:
        level = self.level(frame)
        self.level_dbfs = level
        loud = level >= self.noise_floor_dbfs + self.threshold_db and level >= self.min_level_dbfs
        if level < self.noise_floor_dbfs:
            self.noise_floor_dbfs = level
        else:
            self.noise_floor_dbfs += min(self._rise_per_frame, level - self.noise_floor_dbfs)
        if loud:
            self._hold = self._hangover_frames
            return True
        if self._hold > 0:
            self._hold -= 1
            return True
        return False


def endpoints_from_config(config: Config) -> EndpointPair:
    """The final and speculative end-pointers the configuration asks for (``endpoint:`` section).

    ``endpoint.max_leading_silence_ms`` becomes ``no_speech_ms``; the utterance is cut at
    ``recognizer.max_utterance_s``. With ``speculative_lead_ms: 0`` both fire on the same frame (the pipeline
    then skips the speculative lattice).
    """
    e = config.endpoint
    final = EndPointer(
        e.final_silence_ms,
        e.min_speech_ms,
        round(config.recognizer.max_utterance_s * 1000),
        no_speech_ms=e.max_leading_silence_ms,
    )
    return EndpointPair(final, lead_ms=e.speculative_lead_ms)
