from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from training.augment import (
    CONDITIONS,
    SAMPLE_RATE,
    AudioSource,
    AugmentConfig,
    Augmenter,
    SourceBank,
    apply_gain,
    augment_for_eval,
    change_speed,
    decode_to_cache,
    discover_sources,
    loudspeaker,
    microphone,
    mix_at_snr,
    power,
    reverberate,
    split_sources,
    synthetic_noise,
    synthetic_rir,
)


def _speech_like(seconds: float = 2.0, level: float = 0.3, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with pauses, standing in for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    x = voiced * envelope
    return (level * x / np.max(np.abs(x))).astype(np.float32)


def _snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    return 10 * np.log10(power(speech) / power(noise))


@pytest.fixture(scope="module")
def bank() -> SourceBank:
    rng = np.random.default_rng(7)
    music = [_speech_like(3.0, 0.5, seed=1) + 0.05 * rng.standard_normal(3 * SAMPLE_RATE).astype(np.float32)]
    noise = [0.2 * rng.standard_normal(SAMPLE_RATE // 2).astype(np.float32)]  # shorter than speech: looped
    return SourceBank.from_arrays(music=music, noise=noise)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0, 30.0])
@pytest.mark.parametrize("noise_kind", ["white", "pink", "brown", "looped"])
def test_mix_at_snr_hits_the_requested_snr(snr_db: float, noise_kind: str) -> None:
    rng = np.random.default_rng(0)
    speech = _speech_like(level=0.1)
    if noise_kind == "looped":
        noise = 0.3 * synthetic_noise("pink", 3000, rng)
    else:
        noise = synthetic_noise(noise_kind, 40000, rng)
    mixed = mix_at_snr(speech, noise, snr_db, np.random.default_rng(1))
    assert mixed.dtype == np.float32 and len(mixed) == len(speech)
    assert np.max(np.abs(mixed)) < 0.999  # not limited: the difference is exactly the added noise
    assert _snr_db(speech, mixed - speech) == pytest.approx(snr_db, abs=0.5)


def test_loud_mixture_is_scaled_not_clipped_and_keeps_its_snr() -> None:
    speech = _speech_like(level=0.95)
    noise = synthetic_noise("white", len(speech), np.random.default_rng(2))
    mixed = mix_at_snr(speech, noise, 0.0, np.random.default_rng(3))
    assert np.max(np.abs(mixed)) <= 1.0
    gain = float(np.dot(mixed, speech) / np.dot(speech, speech))  # the common scale factor
    assert gain < 0.9
    assert _snr_db(gain * speech, mixed - gain * speech) == pytest.approx(0.0, abs=0.5)


def test_gain_clips_to_full_scale() -> None:
    loud = apply_gain(_speech_like(level=0.5), 20.0)
    assert loud.dtype == np.float32
    assert np.max(loud) == pytest.approx(1.0) and np.min(loud) == pytest.approx(-1.0)
    quiet = apply_gain(_speech_like(level=0.5), -6.0)
    assert np.max(np.abs(quiet)) == pytest.approx(0.5 * 10 ** (-6 / 20), rel=1e-5)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_condition_stays_in_range_and_keeps_length(bank: SourceBank, condition: str) -> None:
    augmenter = Augmenter(bank, np.random.default_rng(0))
    speech = _speech_like(level=0.99)
    for _ in range(5):
        out = augmenter.apply(speech, condition)
        assert out.dtype == np.float32 and len(out) == len(speech)
        assert np.max(np.abs(out)) <= 1.0
        assert power(out) > 0.0
    if condition != "clean":
        assert not np.allclose(out, speech)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_same_seed_same_output(bank: SourceBank, condition: str) -> None:
    speech = _speech_like()
    first = Augmenter(bank, np.random.default_rng(42)).apply(speech, condition)
    second = Augmenter(bank, np.random.default_rng(42)).apply(speech, condition)
    np.testing.assert_array_equal(first, second)
    if condition != "clean":
        other = Augmenter(bank, np.random.default_rng(43)).apply(speech, condition)
        assert not np.array_equal(first, other)


def test_random_helper_is_seeded_and_covers_conditions(bank: SourceBank) -> None:
    speech = _speech_like(1.0)
    runs = []
    for _ in range(2):
        augmenter = Augmenter(bank, np.random.default_rng(9), AugmentConfig(gain_db=(-6.0, -6.0)))
        runs.append([augmenter.random(speech) for _ in range(60)])
    assert [c for c, _ in runs[0]] == [c for c, _ in runs[1]]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[0], runs[1], strict=True))
    assert {c for c, _ in runs[0]} == {c for c, _ in AugmentConfig().weights}  # every condition weighted
    for _, audio in runs[0]:
        assert np.max(np.abs(audio)) <= 10 ** (-6 / 20) + 1e-6  # the fixed -6 dB gain on a limited signal


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_music_and_echo_at_a_fixed_level_for_evaluation(bank: SourceBank, snr_db: float) -> None:
    speech = _speech_like(level=0.1)
    for condition in ("music", "noise", "echo"):
        out = augment_for_eval(speech, condition, snr_db, bank, seed=5)
        np.testing.assert_array_equal(out, augment_for_eval(speech, condition, snr_db, bank, seed=5))
        assert _snr_db(speech, out - speech) == pytest.approx(snr_db, abs=0.5), condition


def test_echo_is_delayed_music(bank: SourceBank) -> None:
    config = AugmentConfig(echo_delay_ms=(30.0, 30.0))
    speech = _speech_like(level=0.1)
    out = Augmenter(bank, np.random.default_rng(3), config).apply(speech, "echo", 5.0)
    echo = out - speech
    delay = round(0.030 * SAMPLE_RATE)
    assert np.max(np.abs(echo[:delay])) < 1e-6
    assert np.max(np.abs(echo[delay : delay + SAMPLE_RATE // 10])) > 1e-3


def test_music_needs_music_sources_but_random_falls_back() -> None:
    noise_only = SourceBank.from_arrays(noise=[np.ones(100, dtype=np.float32) * 0.1])
    augmenter = Augmenter(noise_only, np.random.default_rng(0), AugmentConfig(weights=(("music", 1.0),)))
    with pytest.raises(ValueError, match="no music"):
        augmenter.apply(_speech_like(), "music")
    condition, _ = augmenter.random(_speech_like())
    assert condition == "noise"
    with pytest.raises(ValueError, match="unknown condition"):
        augmenter.apply(_speech_like(), "underwater")
    with pytest.raises(ValueError, match="weights"):
        AugmentConfig(weights=(("underwater", 1.0),))


@pytest.mark.parametrize(("kind", "slope_db_per_octave"), [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_synthetic_noise_colours(kind: str, slope_db_per_octave: float) -> None:
    noise = synthetic_noise(kind, 4 * SAMPLE_RATE, np.random.default_rng(0))
    assert power(noise) == pytest.approx(1.0, rel=1e-3)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE)

    def density(low: float) -> float:  # mean power density over one octave
        return float(np.mean(spectrum[(freqs >= low) & (freqs < 2 * low)]))

    measured = 10 * np.log10(density(1600.0) / density(200.0)) / 3  # three octaves apart
    assert measured == pytest.approx(slope_db_per_octave, abs=0.5)


def _decay_time(rir: np.ndarray) -> float:
    """RT60 from the Schroeder curve between -5 and -25 dB (T20 x 3)."""
    energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    curve = 10 * np.log10(energy / energy[0])
    t5 = np.argmax(curve < -5.0)
    t25 = np.argmax(curve < -25.0)
    return 3.0 * (t25 - t5) / SAMPLE_RATE


def test_synthetic_rir_decays_with_rt60() -> None:
    rng = np.random.default_rng(0)
    short = synthetic_rir(0.3, rng, direct_to_reverb_db=-10.0)
    long = synthetic_rir(0.8, rng, direct_to_reverb_db=-10.0)
    assert short[0] == np.max(np.abs(short))  # the direct path comes first
    assert np.sum(short**2) == pytest.approx(1.0, rel=1e-4)
    assert 0.5 * 0.3 < _decay_time(short) < 1.1 * 0.3  # highs decay twice as fast as lows
    assert 0.5 * 0.8 < _decay_time(long) < 1.1 * 0.8
    speech = _speech_like()
    wet = reverberate(speech, long)
    assert len(wet) == len(speech)
    assert power(wet) == pytest.approx(power(speech), rel=1e-3)
    with pytest.raises(ValueError, match="rt60"):
        synthetic_rir(0.0, rng)


def _fake_sources() -> list[AudioSource]:
    sources = [AudioSource("music", "hedgewars", f"track{i}", f"/m/{i}.ogg") for i in range(20)]
    sources += [AudioSource("music", "asterisk-moh", f"moh{i}", f"/a/{i}.wav") for i in range(5)]
    sources += [AudioSource("noise", "openarena", f"sound/world/n{i}", "/o/pak0.pk3", f"n{i}.wav") for i in range(12)]
    sources += [AudioSource("noise", "single", "only", "/s/only.wav")]
    return sources


def test_source_split_is_deterministic_and_holds_out_files_per_collection() -> None:
    sources = _fake_sources()
    train, test = split_sources(sources, test_fraction=0.25, seed=0)
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(sources)
    for collection in ("hedgewars", "asterisk-moh", "openarena"):
        held = [s for s in test if s.collection == collection]
        kept = [s for s in train if s.collection == collection]
        assert held and kept, collection
    assert len([s for s in test if s.collection == "hedgewars"]) == 5
    assert all(s.collection != "single" for s in test)
    shuffled = sources[:]
    random.Random(1).shuffle(shuffled)
    assert split_sources(shuffled, seed=0) == (train, test)
    assert split_sources(sources, seed=1) != (train, test)


def test_decode_to_cache_resamples_and_reuses(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, stereo, 44100)
    archive = tmp_path / "pak.pk3"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(wav, "sound/world/tone.wav")
    cache = tmp_path / "cache"
    for source in (
        AudioSource("noise", "test", "tone", str(wav)),
        AudioSource("noise", "zipped", "sound/world/tone", str(archive), "sound/world/tone.wav"),
    ):
        path = decode_to_cache(source, cache)
        decoded = np.load(path)
        assert decoded.dtype == np.int16 and len(decoded) == SAMPLE_RATE
        assert np.max(np.abs(decoded[200:-200])) == pytest.approx(0.5 * 32768, rel=0.01)
        stamp = path.stat().st_mtime_ns
        assert decode_to_cache(source, cache) == path and path.stat().st_mtime_ns == stamp
    loaded = SourceBank.load([AudioSource("noise", "test", "tone", str(wav))], cache)
    assert len(loaded.noise) == 1 and not loaded.music


def test_installed_sources_are_found_and_decode(tmp_path: Path) -> None:
    sources = discover_sources()
    if not sources:
        pytest.skip("no music/noise packages installed (run training/setup_system.sh)")
    assert {s.kind for s in sources} <= {"music", "noise"}
    assert len({s.key for s in sources}) == len(sources)
    train, test = split_sources(sources)
    assert test and train
    smallest = min(sources, key=lambda s: Path(s.path).stat().st_size if s.member is None else 0)
    bank = SourceBank.load([smallest], tmp_path)
    loaded = bank.music or bank.noise
    assert loaded and power(loaded[0].astype(np.float32) / 32768) > 1e-7


def test_int16_speech_is_scaled(bank: SourceBank) -> None:
    speech = _speech_like(level=0.25)
    pcm = np.round(speech * 32768).astype(np.int16)
    out = Augmenter(bank, np.random.default_rng(0)).apply(pcm, "clean")
    np.testing.assert_allclose(out, speech, atol=1e-4)


def test_silent_noise_recording_falls_back_to_synthetic_noise_at_the_snr() -> None:
    from training.augment import mix_at_snr, power

    rng = np.random.default_rng(3)
    speech = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    mixed = mix_at_snr(speech, np.zeros(4000, dtype=np.float32), 10.0, rng)
    noise = mixed - speech
    assert 10 * np.log10(power(speech) / power(noise)) == pytest.approx(10.0, abs=0.5)


def _peak_hz(x: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * SAMPLE_RATE / len(x))


@pytest.mark.parametrize("factor", [0.88, 1.0, 1.15])
def test_change_speed_moves_every_frequency_and_the_duration(factor: float) -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = change_speed(tone, factor)
    assert len(out) == round(SAMPLE_RATE / factor)
    assert abs(_peak_hz(out) - 1000 * factor) < 2.0
    assert abs(np.sqrt(power(out)) - np.sqrt(power(tone))) < 0.01  # same level


def test_speeding_up_removes_what_would_alias() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    high = np.sin(2 * np.pi * 7500 * t).astype(np.float32)  # above the new Nyquist once 1.15x faster
    low = np.sin(2 * np.pi * 500 * t).astype(np.float32)
    out = change_speed(0.3 * (high + low), 1.15)
    assert abs(_peak_hz(out) - 575) < 2.0
    assert power(out) < 0.6 * power(0.3 * (high + low))  # only the low tone's half of the energy is left


def test_change_speed_rejects_a_non_positive_factor() -> None:
    with pytest.raises(ValueError, match="positive"):
        change_speed(np.zeros(100, dtype=np.float32), 0.0)
    with pytest.raises(ValueError, match="speed"):
        AugmentConfig(speed=(-1.0, 1.0))


def test_augmenter_draws_a_speed_per_utterance(bank: SourceBank) -> None:
    speech = _speech_like(1.0)
    plain = Augmenter(bank, np.random.default_rng(3), AugmentConfig())
    assert {len(plain.random(speech)[1]) for _ in range(10)} == {len(speech)}
    varied = Augmenter(bank, np.random.default_rng(3), AugmentConfig(speed=(0.9, 1.1)))
    lengths = [len(varied.random(speech)[1]) for _ in range(20)]
    assert len(set(lengths)) > 10
    assert all(round(len(speech) / 1.1) <= n <= round(len(speech) / 0.9) for n in lengths)


def _band_power(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_microphone_cuts_the_band_and_keeps_the_loudness() -> None:
    wide = np.random.default_rng(3).normal(0.0, 0.1, SAMPLE_RATE).astype(np.float32)  # white: every band

    def share(x: np.ndarray, low: float, high: float) -> float:  # of the power in 500-3000 Hz
        return _band_power(x, low, high) / _band_power(x, 500, 3000)

    cut_offs = []
    for seed in range(8):
        out = microphone(wide, np.random.default_rng(seed))
        draws = np.random.default_rng(seed)
        low_cut, high_cut = draws.uniform(50.0, 300.0), draws.uniform(3400.0, 7500.0)
        cut_offs.append(high_cut)
        assert out.dtype == np.float32 and len(out) == len(wide)
        assert power(out) == pytest.approx(power(wide), rel=1e-3)
        assert share(out, 500, 3000) == 1.0
        if 1.3 * high_cut < 7800:  # steeply cut above
            assert share(out, 1.3 * high_cut, 8000) < 0.03 * share(wide, 1.3 * high_cut, 8000)
        assert share(out, 0.7 * high_cut, 0.9 * high_cut) > 0.8 * share(wide, 0.7 * high_cut, 0.9 * high_cut)
        assert share(out, 10, low_cut / 2) < 0.1 * share(wide, 10, low_cut / 2)  # and the bass
    assert min(cut_offs) < 5000 < max(cut_offs)  # from a telephone band to a wide-band microphone


def test_loudspeaker_is_unchanged_by_the_shared_band_pass() -> None:
    # The recipes' training data must not move: the same draws, in the same order, give the same audio.
    speech = _speech_like()
    out = loudspeaker(speech, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    low, high, drive = rng.uniform(150.0, 400.0), rng.uniform(4000.0, 7000.0), rng.uniform(1.0, 3.0)
    freqs = np.fft.rfftfreq(len(speech), 1.0 / SAMPLE_RATE)
    response = 1.0 / np.sqrt(1.0 + (low / np.maximum(freqs, 1.0)) ** 4) / np.sqrt(1.0 + (freqs / high) ** 4)
    y = np.fft.irfft(np.fft.rfft(speech.astype(np.float64)) * response, len(speech))
    peak = float(np.max(np.abs(y)))
    np.testing.assert_allclose(out, (np.tanh(drive * y / peak) * peak / drive).astype(np.float32), atol=1e-7)
