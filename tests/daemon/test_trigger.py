"""The VAD trigger: speech onset starts an utterance, with pre-roll; clock-free, chunk-size independent."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from daemon.audio import AudioChunk
from daemon.trigger import VAD_PHRASE, VadTrigger, WakeEvent

RATE = 16000


def quiet(seconds: float, seed: int = 0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=round(seconds * RATE)) * 30).astype(np.int16)  # about -60 dBFS


def voiced(seconds: float) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = np.sum([np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)], axis=0)
    return (0.15 * 32767 * wave / 2).astype(np.int16)


def run(trigger: VadTrigger, audio: npt.NDArray[np.int16], chunk: int, start: int = 0) -> list[WakeEvent]:
    events = []
    for i in range(0, len(audio), chunk):
        event = trigger.process(AudioChunk(audio[i:i + chunk].copy(), start + i))
        if event is not None:
            events.append(event)
    return events


def test_fires_at_speech_onset_with_pre_roll() -> None:
    audio = np.concatenate([quiet(1.0), voiced(0.5), quiet(0.5)])
    events = run(VadTrigger(pre_roll_ms=300, onset_ms=60), audio, 320)
    assert len(events) == 1  # and then quiet until reset()
    event = events[0]
    assert event.phrase == VAD_PHRASE and event.score == 1.0
    assert event.end == 16000 + 6 * 160  # six loud frames after the onset at 1.0 s
    assert event.utterance_start == 16000 - 300 * 16
    assert event.time == pytest.approx(1.06)


@pytest.mark.parametrize("chunk", [160, 320, 333, 1600, 8000])
def test_chunk_size_does_not_matter(chunk: int) -> None:
    audio = np.concatenate([quiet(0.7), voiced(0.4), quiet(0.3)])
    events = run(VadTrigger(pre_roll_ms=200), audio, chunk)
    assert [(e.end, e.utterance_start) for e in events] == [(11200 + 960, 11200 - 3200)]


def test_a_click_does_not_fire() -> None:
    audio = np.concatenate([quiet(0.5), voiced(0.03), quiet(1.0), voiced(0.03), quiet(0.5)])
    assert run(VadTrigger(onset_ms=60), audio, 320) == []


def test_reset_listens_afresh_and_pre_roll_stops_at_zero() -> None:
    trigger = VadTrigger(pre_roll_ms=500)
    first = run(trigger, np.concatenate([quiet(0.1), voiced(0.3)]), 320)
    assert len(first) == 1 and first[0].utterance_start == 0  # pre-roll would reach before the audio
    assert run(trigger, voiced(0.3), 320, start=8000) == []
    trigger.reset()
    again = run(trigger, np.concatenate([quiet(0.3), voiced(0.3)]), 320, start=20000)
    assert len(again) == 1 and again[0].end == 20000 + 4800 + 960


def test_a_gap_in_the_audio_clears_the_onset_window() -> None:
    trigger = VadTrigger(onset_ms=60, window_ms=120)
    assert trigger.process(AudioChunk(voiced(0.04), 0)) is None  # four loud frames
    # Audio is missing in between: four more loud frames after the gap are not six in a row.
    assert trigger.process(AudioChunk(voiced(0.04), 16000)) is None
    event = trigger.process(AudioChunk(voiced(0.04), 16640))
    assert event is not None and event.end == 16640 + 320 and event.utterance_start == 16000 - 4800


def test_wake_event_is_validated() -> None:
    with pytest.raises(ValueError, match="phrase"):
        WakeEvent("", 0.5, 100, 0)
    with pytest.raises(ValueError, match="score"):
        WakeEvent("hey", 1.5, 100, 0)
    with pytest.raises(ValueError, match="utterance_start"):
        WakeEvent("hey", 0.5, 100, 200)
    with pytest.raises(ValueError, match="onset_ms"):
        VadTrigger(onset_ms=200, window_ms=100)
