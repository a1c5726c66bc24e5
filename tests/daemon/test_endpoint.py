from __future__ import annotations

import numpy as np
import pytest

from daemon.config import parse_config
from daemon.endpoint import EndPointer, EndpointEvent, EndpointPair, EnergyVad, endpoints_from_config


def feed(pointer: EndPointer, pattern: str) -> list[tuple[int, EndpointEvent]]:
    """Feed one frame per character: 'S' speech, '.' silence, 't' silence with a token emitted."""
    events = []
    for i, c in enumerate(pattern):
        event = pointer.update(c == "S", token_emitted=c == "t")
        if event is not None:
            events.append((i + 1, event))
    return events


def test_ends_after_trailing_silence() -> None:
    pointer = EndPointer(silence_ms=300, min_speech_ms=100, max_utterance_ms=10_000)
    events = feed(pointer, "." * 20 + "S" * 50 + "." * 40)
    assert len(events) == 1
    frames, event = events[0]
    assert frames == 20 + 50 + 30  # the 30th silent frame after the speech
    assert (event.kind, event.reason, event.frames, event.time_ms) == ("end", "silence", 100, 1000)
    assert (event.speech_ms, event.trailing_silence_ms) == (500, 300)
    assert pointer.ended == "silence"


def test_short_gaps_inside_speech_do_not_end() -> None:
    pointer = EndPointer(silence_ms=300, min_speech_ms=100)
    assert feed(pointer, ("S" * 20 + "." * 29) * 5) == []


def test_too_little_speech_does_not_end_by_silence() -> None:
    pointer = EndPointer(silence_ms=200, min_speech_ms=150)
    assert feed(pointer, "S" * 14 + "." * 100) == []  # 140 ms of speech (a click, a cough)
    assert pointer.ended is None


def test_tokens_count_as_speech() -> None:
    pointer = EndPointer(silence_ms=200, min_speech_ms=50)
    # the detector hears nothing but the recogniser keeps emitting tokens
    assert feed(pointer, "S" * 10 + ".t" * 30) == []
    ((_, event),) = feed(pointer, "." * 20)
    assert event.reason == "silence"


def test_max_utterance() -> None:
    pointer = EndPointer(silence_ms=500, min_speech_ms=100, max_utterance_ms=2000)
    ((frames, event),) = feed(pointer, "S" * 300)
    assert (frames, event.reason, event.time_ms) == (200, "max_utterance", 2000)
    assert feed(pointer, "S" * 10 + "." * 100) == []  # over: nothing more, not even a resume


def test_no_speech_timeout() -> None:
    pointer = EndPointer(silence_ms=500, min_speech_ms=100, no_speech_ms=3000)
    ((frames, event),) = feed(pointer, "." * 200 + "S" * 5 + "." * 200)
    assert (frames, event.reason) == (300, "no_speech")


def test_resume_after_end_rearms() -> None:
    pointer = EndPointer(silence_ms=200, min_speech_ms=100)
    events = feed(pointer, "S" * 20 + "." * 25 + "S" * 20 + "." * 30)
    assert [(f, e.kind, e.reason) for f, e in events] == [
        (40, "end", "silence"),
        (46, "resume", None),
        (85, "end", "silence"),
    ]


def test_reset_starts_a_new_utterance() -> None:
    pointer = EndPointer(silence_ms=200, min_speech_ms=100)
    feed(pointer, "S" * 20 + "." * 20)
    assert pointer.ended == "silence"
    pointer.reset()
    assert (pointer.ended, pointer.frames, pointer.speech_ms, pointer.trailing_silence_ms) == (None, 0, 0, 0)
    assert [f for f, _ in feed(pointer, "S" * 10 + "." * 20)] == [30]


def test_speculative_fires_lead_ms_earlier() -> None:
    final = EndPointer(silence_ms=800, min_speech_ms=100)
    speculative = EndPointer.speculative(800, 100, lead_ms=200)
    assert speculative.silence_ms == 600
    assert final.speculative_twin().silence_ms == 600
    pattern = "S" * 50 + "." * 100
    (f_final, _), (f_spec, _) = feed(final, pattern)[0], feed(speculative, pattern)[0]
    assert f_final - f_spec == 20  # 200 ms at 10 ms per frame


def test_pair_reports_speculative_then_resume_then_final() -> None:
    pair = EndpointPair(EndPointer(silence_ms=500, min_speech_ms=100), lead_ms=200)
    timeline = []
    for i, c in enumerate("S" * 30 + "." * 40 + "S" * 30 + "." * 60 + "S" * 10):
        for e in pair.update(c == "S"):
            timeline.append((i + 1, e.which, e.event.kind))
    assert timeline == [
        (60, "speculative", "end"),  # 300 ms of silence: speculative end-point
        (71, "speculative", "resume"),  # the speaker went on: withdraw the speculative lattice
        (130, "speculative", "end"),
        (150, "final", "end"),  # 500 ms of silence: final; nothing after that
    ]


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="silence_ms"):
        EndPointer(silence_ms=5)
    with pytest.raises(ValueError, match="lead_ms"):
        EndPointer.speculative(silence_ms=200, lead_ms=-10)
    assert EndPointer.speculative(silence_ms=200, lead_ms=200).silence_ms == 10  # one frame at least
    with pytest.raises(ValueError, match="max_utterance_ms"):
        EndPointer(max_utterance_ms=0)


# -- EnergyVad --------------------------------------------------------------------------------------------


def tone(level_dbfs: float, rng: np.random.Generator, samples: int = 160) -> np.ndarray:
    """Noise frame (int16) with the given level in dBFS."""
    rms = 10 ** (level_dbfs / 20) * 32768
    return np.clip(rng.normal(0, rms, samples), -32768, 32767).astype(np.int16)


def test_energy_vad_levels() -> None:
    assert EnergyVad.level(np.zeros(160, dtype=np.int16)) == pytest.approx(-100.0)
    full = np.full(160, 32767, dtype=np.int16)
    assert EnergyVad.level(full) == pytest.approx(0.0, abs=0.01)
    assert EnergyVad.level(full.tobytes()) == pytest.approx(0.0, abs=0.01)
    assert EnergyVad.level(np.full(160, 0.1, dtype=np.float32)) == pytest.approx(-20.0, abs=0.01)


def test_energy_vad_follows_the_noise_floor() -> None:
    rng = np.random.default_rng(0)
    vad = EnergyVad(threshold_db=9.0, hangover_ms=0, floor_rise_db_per_s=3.0)
    quiet = [vad.is_speech(tone(-60, rng)) for _ in range(100)]
    assert not any(quiet)
    assert all(vad.is_speech(tone(-25, rng)) for _ in range(50))  # speech well above the floor
    # a fan switches on at -40 dBFS: first heard as "speech", then the floor creeps up to it
    fan = [vad.is_speech(tone(-40, rng)) for _ in range(1500)]
    assert fan[0] and not any(fan[-300:])
    assert vad.noise_floor_dbfs == pytest.approx(-40, abs=1.5)
    assert all(vad.is_speech(tone(-20, rng)) for _ in range(20))  # speech over the fan
    assert not vad.is_speech(tone(-40, rng))


def test_energy_vad_hangover_and_minimum_level() -> None:
    rng = np.random.default_rng(1)
    vad = EnergyVad(hangover_ms=50, min_level_dbfs=-55.0, initial_floor_dbfs=-90.0)
    assert not vad.is_speech(tone(-65, rng))  # 25 dB over the floor but below the minimum level
    assert vad.is_speech(tone(-20, rng))
    held = [vad.is_speech(np.zeros(160, dtype=np.int16)) for _ in range(8)]
    assert held == [True] * 5 + [False] * 3


def test_energy_vad_drives_an_end_pointer() -> None:
    rng = np.random.default_rng(2)
    vad = EnergyVad()
    pointer = EndPointer(silence_ms=500, min_speech_ms=200)
    levels = [-62] * 50 + [-22] * 120 + [-62] * 100
    events = [(i + 1, e) for i, lv in enumerate(levels) if (e := pointer.update(vad.is_speech(tone(lv, rng))))]
    ((frames, event),) = events
    assert event.reason == "silence"
    assert frames == 50 + 120 + 10 + 50  # hangover of 100 ms, then 500 ms of silence


def test_from_config() -> None:
    config = parse_config(
        {
            "device_id": "kitchen",
            "endpoint": {"final_silence_ms": 700, "speculative_lead_ms": 250, "max_leading_silence_ms": 3000},
            "recognizer": {"max_utterance_s": 8},
        }
    )
    pair = endpoints_from_config(config)
    assert (pair.final.silence_ms, pair.speculative.silence_ms) == (700, 450)
    assert (pair.final.no_speech_ms, pair.final.max_utterance_ms, pair.final.min_speech_ms) == (3000, 8000, 200)
