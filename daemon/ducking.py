"""Ducking gain for media playback: pure and clock-free, time counted in output samples.

:class:`DuckGain` turns ``media/duck`` requests into a gain per output sample. :meth:`DuckGain.duck` and
:meth:`DuckGain.release` take effect at the next sample asked for; :meth:`DuckGain.gains` returns the gains
of the next ``n`` samples and moves on by ``n``. The player calls it once per block, so a request acts
within one block.

* The gain moves linearly in decibels: down at ``depth_db`` per ``attack_ms`` (-20 dB in 50 ms by default),
  up at ``depth_db`` per ``release_ms``. A request that comes mid-ramp turns it around from where it is.
* A duck request may carry ``level`` (a fraction of full volume, as in the ``media_duck`` schema); it is
  ducked to ``20·log10(level)`` dB then (``floor_db`` and below is silence), else to ``depth_db``.
* Each duck request (repeats included) re-arms the timeout: a duck not released within ``timeout_s`` of the
  last request is released by itself (:attr:`DuckGain.timeouts` counts those), so a lost "duck off" message
  never leaves the music silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["DuckGain", "DuckSettings", "DuckState"]

FloatArray = npt.NDArray[np.float32]
DuckState = Literal["normal", "ducking", "ducked", "restoring"]


@dataclass(frozen=True)
class DuckSettings:
    depth_db: float = -20.0  # gain while ducked when a request names no level, dB (negative)
    attack_ms: float = 50.0  # time to ramp from 0 dB to depth_db, milliseconds
    release_ms: float = 300.0  # time to ramp from depth_db back to 0 dB, milliseconds
    timeout_s: float = 10.0  # a duck not released within this long is released, seconds
    floor_db: float = -80.0  # at or below this the output is silent (level 0), dB

    def __post_init__(self) -> None:
        if not self.floor_db <= self.depth_db < 0:
            raise ValueError(f"depth_db must be below 0 dB and not below floor_db, not {self.depth_db}")
        if self.attack_ms <= 0 or self.release_ms <= 0:
            raise ValueError("attack_ms and release_ms must be positive")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")


class DuckGain:
    """Gain of a ducking player, one value per output sample; see the module docstring."""

    def __init__(self, settings: DuckSettings, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        self.settings = settings
        self.sample_rate = sample_rate
        depth = -settings.depth_db
        self._down_per_sample = depth / (settings.attack_ms * sample_rate / 1000.0)  # dB per sample
        self._up_per_sample = depth / (settings.release_ms * sample_rate / 1000.0)
        self._timeout_samples = max(1, round(settings.timeout_s * sample_rate))
        self.position = 0  # samples produced so far
        self.gain_db = 0.0  # gain of the last sample produced
        self.target_db = 0.0
        self._release_at: int | None = None  # position at which an unreleased duck is released
        self.timeouts = 0  # ducks released because no "duck off" came in time

    @property
    def ducked(self) -> bool:
        """A duck is in force (requested and neither released nor timed out)."""
        return self._release_at is not None

    @property
    def state(self) -> DuckState:
        if self.gain_db == self.target_db:
            return "normal" if self.target_db == 0.0 else "ducked"
        return "ducking" if self.target_db < self.gain_db else "restoring"

    def level_db(self, level: float | None) -> float:
        """The gain in dB that a request with ``level`` (fraction of full volume, or None) ducks to."""
        if level is None:
            return self.settings.depth_db
        if not 0.0 <= level <= 1.0 or math.isnan(level):
            raise ValueError(f"duck level must be between 0 and 1, not {level}")
        if level <= 0.0:
            return self.settings.floor_db
        return max(self.settings.floor_db, 20.0 * math.log10(level))

    def duck(self, level: float | None = None) -> None:
        """Duck from the next sample on (to ``level``, see :meth:`level_db`); re-arms the timeout."""
        self.target_db = self.level_db(level)
        self._release_at = self.position + self._timeout_samples

    def release(self) -> None:
        """Ramp back to full volume from the next sample on (nothing happens when not ducked)."""
        self.target_db = 0.0
        self._release_at = None

    def gains(self, n: int) -> FloatArray:
        """Linear gains of the next ``n`` samples (float32); advances :attr:`position` by ``n``."""
        if n < 0:
            raise ValueError(f"n must not be negative, not {n}")
        out = np.empty(n, dtype=np.float32)
        done = 0
        while done < n:
            todo = n - done
            if self._release_at is not None:
                if self._release_at <= self.position:
                    self.timeouts += 1
                    self.release()
                    continue
                todo = min(todo, self._release_at - self.position)
            out[done : done + todo] = self._segment(todo)
            done += todo
        return out

    def _segment(self, n: int) -> FloatArray:
        start, target = self.gain_db, self.target_db
        if start == target:
            db: npt.NDArray[np.float64] = np.full(n, start)
        else:
            step = -self._down_per_sample if target < start else self._up_per_sample
            db = start + step * np.arange(1, n + 1, dtype=np.float64)
            db = np.maximum(db, target) if target < start else np.minimum(db, target)
        self.gain_db = float(db[-1])
        self.position += n
        gains = np.power(10.0, db / 20.0)
        gains[db <= self.settings.floor_db] = 0.0
        return gains.astype(np.float32)
