"""Acoustic augmentation of 16 kHz speech for training and evaluation: noise, music, media echo, reverb.

Sources of real sound come from installed Debian packages (``training/setup_system.sh``):

* music: ``hedgewars-data`` (26 OGG tracks, ~93 min), ``asterisk-moh-opsound-wav`` (5 tracks, 8 kHz);
* noise: ``openarena-data`` ambient sounds (fans, wind, fire, water, machinery; WAV inside .pk3 zips).

:func:`discover_sources` lists them, :func:`split_sources` holds whole files out for evaluation, and
:meth:`SourceBank.load` decodes each once (soundfile, or sox as a fallback) to a 16 kHz int16 ``.npy``
file under a cache directory; after that, run time needs numpy only (the cache is memory-mapped).
Synthetic white, pink and brown noise need no files.

:class:`Augmenter` applies one condition: ``clean``, ``noise``, ``music``, ``echo`` (music played by the
device's own loudspeaker reaching its microphone: 5–50 ms delay, a small speaker's band limits and a short
room response), ``reverb`` (synthetic room impulse response) or ``mic`` (a band-limited microphone or
channel: :func:`microphone`). Levels are signal-to-noise ratios in dB
against the speech's mean power over the whole utterance (synthesised speech carries at most 150 ms of
silence at each end). Every output is float32 in [-1, 1]: a mixture that would exceed full scale is
scaled down as a whole, which keeps its SNR; only :func:`apply_gain` clips on purpose.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import shutil
import subprocess
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from daemon.resample import resample

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # hertz
CONDITIONS = ("clean", "noise", "music", "echo", "reverb", "mic")
SYNTHETIC_NOISES = ("white", "pink", "brown")

HEDGEWARS_MUSIC = Path("/usr/share/games/hedgewars/Data/Music")
ASTERISK_MOH = Path("/usr/share/asterisk/moh")
OPENARENA_BASE = Path("/usr/share/games/openarena/baseoa")
# Ambient sounds from openarena's sound/world/ that sound like voices (moans, growls) are left out, and so
# are short game effects (teleporters, jump pads):
# a recogniser must not learn to ignore speech-like sounds as noise.
OPENARENA_EXCLUDE = re.compile(r"moan|growl|hell|pain|1shot|clack|jumppad|tele|portal|suck", re.IGNORECASE)

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioSource:
    kind: str  # "music" or "noise"
    collection: str  # the package it came from: "hedgewars", "asterisk-moh", "openarena"
    name: str  # stable id inside the collection: "City", "sound/world/fan4"
    path: str  # the file on disk (a zip archive when member is set)
    member: str | None = None  # a file inside the zip archive at path

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.collection}/{self.name}"

    def read_bytes(self) -> bytes:
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)


def discover_sources() -> list[AudioSource]:
    """Music and noise files of the installed packages, sorted by key (empty when none is installed)."""
    sources: list[AudioSource] = []
    for path in sorted(HEDGEWARS_MUSIC.glob("*.ogg")):
        sources.append(AudioSource("music", "hedgewars", path.stem, str(path)))
    for path in sorted(ASTERISK_MOH.glob("*.wav")):
        sources.append(AudioSource("music", "asterisk-moh", path.stem, str(path)))
    seen: set[str] = set()
    for archive_path in sorted(OPENARENA_BASE.glob("*.pk3")):
        try:
            with zipfile.ZipFile(archive_path) as archive:
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            logger.warning("cannot read %s: %s", archive_path, exc)
            continue
        for member in sorted(names):
            stem, dot, ext = member.rpartition(".")
            if not member.startswith("sound/world/") or not dot or ext.lower() not in ("wav", "ogg"):
                continue
            if OPENARENA_EXCLUDE.search(member) or stem in seen:
                continue
            seen.add(stem)
            sources.append(AudioSource("noise", "openarena", stem, str(archive_path), member))
    return sorted(sources, key=lambda s: s.key)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_sources(
    sources: Iterable[AudioSource], test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[AudioSource], list[AudioSource]]:
    """Splits sources into (train, test) by whole files, deterministically.

    Each (kind, collection) group with two or more files holds out ``round(test_fraction * n)`` of them
    (at least one, never all), chosen by a seeded hash of the key, so the choice does not depend on the
    input order or on other collections.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups: dict[tuple[str, str], list[AudioSource]] = defaultdict(list)
    for source in sorted(set(sources), key=lambda s: s.key):
        groups[(source.kind, source.collection)].append(source)
    train: list[AudioSource] = []
    test: list[AudioSource] = []
    for members in groups.values():
        if len(members) < 2:
            train.extend(members)
            continue
        n_test = min(len(members) - 1, max(1, round(test_fraction * len(members))))
        held = set(sorted(members, key=lambda s: _rank(seed, s.key))[:n_test])
        test.extend(s for s in members if s in held)
        train.extend(s for s in members if s not in held)
    return sorted(train, key=lambda s: s.key), sorted(test, key=lambda s: s.key)


def _decode(source: AudioSource, sox_rate: int) -> tuple[FloatArray, int]:
    """Decodes a source to mono float32 at its own rate with soundfile; where soundfile cannot read it,
    sox decodes it and resamples to ``sox_rate``."""
    data = source.read_bytes()
    try:
        import soundfile  # a project dependency; imported here so run time stays numpy-only

        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return audio.mean(axis=1).astype(np.float32), int(rate)
    except (ImportError, RuntimeError) as exc:  # soundfile raises LibsndfileError, a RuntimeError
        sox = shutil.which("sox")
        if sox is None:
            raise RuntimeError(f"cannot decode {source.key}: {exc}; sox is not installed either") from exc
        ext = Path(source.member or source.path).suffix.lstrip(".") or "wav"
        out_format = ["-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sox_rate), "-"]
        proc = subprocess.run([sox, "-t", ext, "-", *out_format], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot decode {source.key}: {proc.stderr.decode(errors='replace')}") from exc
        return np.frombuffer(proc.stdout, dtype=np.float32).copy(), sox_rate


def cache_path(source: AudioSource, cache_dir: Path, sample_rate: int = SAMPLE_RATE) -> Path:
    digest = hashlib.sha256(f"{source.key}|{source.path}|{source.member}|{sample_rate}".encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{source.collection}-{source.name}")[-60:]
    return cache_dir / f"{safe}-{digest[:12]}.npy"


def decode_to_cache(source: AudioSource, cache_dir: Path, sample_rate: int = SAMPLE_RATE) -> Path:
    """Decodes ``source`` to ``sample_rate`` mono int16 under ``cache_dir`` (once) and returns the path."""
    target = cache_path(source, cache_dir, sample_rate)
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    audio, rate = _decode(source, sample_rate)
    if len(audio) == 0:
        raise RuntimeError(f"{source.key} decodes to no audio")
    if rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
    pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, pcm)
    tmp.replace(target)
    logger.info("decoded %s: %.1f s -> %s", source.key, len(pcm) / sample_rate, target.name)
    return target


@dataclass(frozen=True)
class SourceBank:
    """Decoded sources by kind, int16 at 16 kHz, memory-mapped from the cache."""

    music: tuple[npt.NDArray[np.int16], ...] = ()
    noise: tuple[npt.NDArray[np.int16], ...] = ()
    names: tuple[str, ...] = ()  # keys of the loaded sources, music first

    @classmethod
    def load(cls, sources: Iterable[AudioSource], cache_dir: Path | str) -> SourceBank:
        """Decodes what is not cached yet (slow, once) and maps every source."""
        music: list[npt.NDArray[np.int16]] = []
        noise: list[npt.NDArray[np.int16]] = []
        names: list[str] = []
        ordered = sorted(set(sources), key=lambda s: (s.kind != "music", s.key))
        for source in ordered:
            if source.kind not in ("music", "noise"):
                raise ValueError(f"unknown source kind {source.kind!r} for {source.key}")
            array = np.load(decode_to_cache(source, Path(cache_dir)), mmap_mode="r")
            if len(array) < SAMPLE_RATE // 10:
                logger.info("skipping %s: shorter than 100 ms", source.key)
                continue
            (music if source.kind == "music" else noise).append(array)
            names.append(source.key)
        return cls(tuple(music), tuple(noise), tuple(names))

    @classmethod
    def from_arrays(cls, music: Sequence[npt.ArrayLike] = (), noise: Sequence[npt.ArrayLike] = ()) -> SourceBank:
        """A bank from in-memory 16 kHz signals (float in [-1, 1] or int16)."""

        def as_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
            arr = np.asarray(x)
            if arr.dtype == np.int16:
                return arr
            return np.clip(np.round(arr.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)

        m = tuple(as_int16(x) for x in music)
        n = tuple(as_int16(x) for x in noise)
        names = tuple([f"music/array/{i}" for i in range(len(m))] + [f"noise/array/{i}" for i in range(len(n))])
        return cls(m, n, names)


# ------------------------------------------------------------------------------------------ primitives


def as_float32(x: npt.ArrayLike) -> FloatArray:
    """float32 samples in [-1, 1]; int16 is scaled by 1/32768."""
    arr = np.asarray(x)
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / np.float32(32768.0)
    return arr.astype(np.float32, copy=False)


def power(x: npt.ArrayLike) -> float:
    """Mean power of a signal."""
    arr = np.asarray(x, dtype=np.float64)
    return float(np.mean(arr * arr)) if arr.size else 0.0


def crop(source: npt.ArrayLike, n: int, rng: np.random.Generator) -> FloatArray:
    """A random ``n``-sample stretch of ``source`` as float32; a short source is looped."""
    src = np.asarray(source)
    if len(src) == 0:
        raise ValueError("empty source")
    scale = np.float32(1.0 / 32768.0) if src.dtype == np.int16 else np.float32(1.0)
    start = int(rng.integers(0, len(src)))
    if start + n <= len(src):
        return np.asarray(src[start : start + n], dtype=np.float32) * scale
    wrapped = (start + np.arange(n)) % len(src)  # reads only the samples used from a memory map
    return np.asarray(src[wrapped], dtype=np.float32) * scale


def synthetic_noise(kind: str, n: int, rng: np.random.Generator) -> FloatArray:
    """White, pink (1/f power) or brown (1/f²) Gaussian noise with unit mean power."""
    if kind not in SYNTHETIC_NOISES:
        raise ValueError(f"unknown noise {kind!r} (known: {', '.join(SYNTHETIC_NOISES)})")
    white = rng.standard_normal(n)
    if kind != "white" and n > 1:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        freqs[0] = freqs[1]  # no infinite gain at DC
        exponent = 0.5 if kind == "pink" else 1.0  # amplitude ∝ f^-exponent
        spectrum *= np.maximum(freqs, 20.0) ** -exponent
        white = np.fft.irfft(spectrum, n)
    rms = math.sqrt(power(white)) or 1.0
    return (white / rms).astype(np.float32)


def babble(utterances: Sequence[npt.ArrayLike], n: int, rng: np.random.Generator, talkers: int = 5) -> FloatArray:
    """Several talkers at once: ``talkers`` random utterances (16 kHz) looped, offset and summed."""
    if not utterances:
        raise ValueError("babble needs at least one utterance")
    total = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        speech = crop(utterances[int(rng.integers(0, len(utterances)))], n, rng)
        total += speech / np.float32(math.sqrt(power(speech)) or 1.0)
    return total / np.float32(math.sqrt(power(total)) or 1.0)


def scale_to_snr(speech: npt.ArrayLike, noise: npt.ArrayLike, snr_db: float) -> FloatArray:
    """``noise`` scaled so that power(speech) / power(noise) is ``snr_db``."""
    noise_arr = np.asarray(noise, dtype=np.float32)
    p_noise = power(noise_arr)
    if p_noise <= 0.0:
        raise ValueError("noise is silent: cannot set an SNR")
    gain = math.sqrt(power(speech) / (p_noise * 10.0 ** (snr_db / 10.0)))
    return noise_arr * np.float32(gain)


def limit_peak(x: npt.ArrayLike, peak: float = 0.999) -> FloatArray:
    """Scales the signal down (never up) so that its peak is at most ``peak``; then clips to [-1, 1]."""
    arr = np.asarray(x, dtype=np.float32)
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    if top > peak:
        arr = arr * np.float32(peak / top)
    return np.clip(arr, -1.0, 1.0).astype(np.float32, copy=False)


def mix_at_snr(speech: npt.ArrayLike, noise: npt.ArrayLike, snr_db: float, rng: np.random.Generator) -> FloatArray:
    """Speech plus a random stretch of ``noise`` (looped if short) at ``snr_db``, kept within [-1, 1]."""
    s = np.asarray(speech, dtype=np.float32)
    if power(s) <= 0.0:
        raise ValueError("speech is silent: cannot set an SNR")
    for _ in range(8):  # recordings have silent stretches (music pauses): draw another stretch
        n = crop(noise, len(s), rng)
        if power(n) > 0.0:
            break
    else:
        n = synthetic_noise("pink", len(s), rng)
    return limit_peak(s + scale_to_snr(s, n, snr_db))


def apply_gain(x: npt.ArrayLike, gain_db: float) -> FloatArray:
    """Level change in dB; what exceeds full scale is clipped (as a microphone's converter would)."""
    return np.clip(np.asarray(x, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0)), -1.0, 1.0)


def synthetic_rir(
    rt60_s: float, rng: np.random.Generator, direct_to_reverb_db: float = 0.0, sample_rate: int = SAMPLE_RATE
) -> FloatArray:
    """A room impulse response: a direct path at sample 0, then exponentially decaying noise.

    The tail decays by 60 dB in ``rt60_s`` below 2 kHz and twice as fast above (walls absorb highs),
    starts after a 2–8 ms gap (the first reflection), lasts ``rt60_s`` and carries ``direct_to_reverb_db``
    less energy than the direct path. The result is scaled to unit energy.
    """
    if not 0.01 <= rt60_s <= 5.0:
        raise ValueError(f"rt60_s must be within 0.01–5 s, got {rt60_s}")
    length = max(2, round(rt60_s * sample_rate))
    t = np.arange(length) / sample_rate
    # Split one noise into bands below and above 2 kHz (power-complementary) so they can decay apart.
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    low_gain = 1.0 / np.sqrt(1.0 + (freqs / 2000.0) ** 4)
    low = np.fft.irfft(spectrum * low_gain, length)
    high = np.fft.irfft(spectrum * np.sqrt(1.0 - low_gain**2), length)
    decay = 3.0 * math.log(10.0) / rt60_s  # amplitude decay rate for -60 dB in rt60_s
    tail = low * np.exp(-decay * t) + high * np.exp(-2.0 * decay * t)
    gap = round(float(rng.uniform(0.002, 0.008)) * sample_rate)
    tail[:gap] = 0.0
    tail_energy = float(np.sum(tail * tail)) or 1.0
    tail *= math.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / tail_energy)
    tail[0] = 1.0
    return (tail / math.sqrt(float(np.sum(tail * tail)))).astype(np.float32)


def fft_convolve(x: npt.ArrayLike, h: npt.ArrayLike) -> FloatArray:
    """Full linear convolution of two 1-D signals via the FFT."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(h, dtype=np.float64)
    n = len(a) + len(b) - 1
    size = 1 << max(0, (n - 1).bit_length())
    y = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]
    return y.astype(np.float32)


def reverberate(x: npt.ArrayLike, rir: npt.ArrayLike) -> FloatArray:
    """Convolves with ``rir`` (direct path first, so words keep their times); same length and mean power."""
    arr = np.asarray(x, dtype=np.float32)
    wet = fft_convolve(arr, rir)[: len(arr)]
    p_wet = power(wet)
    if p_wet > 0.0:
        wet *= np.float32(math.sqrt(power(arr) / p_wet))
    return limit_peak(wet)


def band_pass(x: npt.ArrayLike, low_cut: float, high_cut: float, high_order: int = 2,
              sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float64]:
    """``x`` through a 2nd-order high-pass at ``low_cut`` Hz and a ``high_order`` low-pass at ``high_cut`` Hz
    (Butterworth magnitudes, zero phase, applied in the frequency domain)."""
    arr = np.asarray(x, dtype=np.float64)
    n = len(arr)
    if n < 2:
        return arr
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    response = 1.0 / np.sqrt(1.0 + (low_cut / np.maximum(freqs, 1.0)) ** 4)
    response /= np.sqrt(1.0 + (freqs / high_cut) ** (2 * high_order))
    return np.fft.irfft(np.fft.rfft(arr) * response, n)


def loudspeaker(x: npt.ArrayLike, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> FloatArray:
    """A small loudspeaker: no bass below 150–400 Hz, treble rolled off above 4–7 kHz, mild saturation."""
    if len(np.asarray(x)) < 2:
        return np.asarray(x, dtype=np.float32)
    low_cut = float(rng.uniform(150.0, 400.0))
    high_cut = float(rng.uniform(4000.0, 7000.0))
    y = band_pass(x, low_cut, high_cut, sample_rate=sample_rate)
    drive = float(rng.uniform(1.0, 3.0))
    peak = float(np.max(np.abs(y))) or 1.0
    y = np.tanh(drive * y / peak) * peak / drive
    return y.astype(np.float32)


def microphone(x: npt.ArrayLike, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> FloatArray:
    """Another microphone or channel: bass cut below 50–300 Hz, everything above 3.4–7.5 kHz cut steeply (an
    8th-order low-pass: from a telephone-band headset or codec to a wide-band USB microphone); the loudness
    is kept."""
    if len(np.asarray(x)) < 2:
        return np.asarray(x, dtype=np.float32)
    low_cut = float(rng.uniform(50.0, 300.0))
    high_cut = float(rng.uniform(3400.0, 7500.0))
    y = band_pass(x, low_cut, high_cut, high_order=8, sample_rate=sample_rate)
    p_in, p_out = power(x), power(y)
    if p_out > 0.0:
        y *= math.sqrt(p_in / p_out)  # the same loudness: the level is the gain's business
    return limit_peak(y)


def change_speed(x: npt.ArrayLike, factor: float) -> FloatArray:
    """``x`` played ``factor`` times faster: tempo, pitch and formants all move by ``factor``.

    Band-limited resampling in the frequency domain (the spectrum is cut or zero-padded), so speeding up
    does not alias. Unlike a TTS engine's rate and pitch settings, this moves the formants too, as another
    speaker's longer or shorter vocal tract would (speed perturbation, Ko et al. 2015).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    y = as_float32(x)
    n = len(y)
    m = max(1, round(n / factor))
    if m == n or n < 2:
        return y
    # irfft to m samples crops the spectrum (speeding up) or pads it with zeros (slowing down).
    return (np.fft.irfft(np.fft.rfft(y), m) * (m / n)).astype(np.float32)


# ----------------------------------------------------------------------------------------- the augmenter


@dataclass(frozen=True)
class AugmentConfig:
    noise_snr_db: tuple[float, float] = (0.0, 20.0)  # dB, speech over noise
    music_snr_db: tuple[float, float] = (0.0, 20.0)  # dB, speech over music
    echo_ser_db: tuple[float, float] = (-5.0, 15.0)  # dB, speech over loudspeaker echo at the mic
    echo_delay_ms: tuple[float, float] = (5.0, 50.0)  # ms, loudspeaker to microphone (+ playback buffers)
    echo_rt60_s: tuple[float, float] = (0.05, 0.25)  # s, the short path inside and around the device
    reverb_rt60_s: tuple[float, float] = (0.2, 0.9)  # s, rooms from furnished to bare
    reverb_drr_db: tuple[float, float] = (-3.0, 10.0)  # dB, direct-to-reverberant energy
    gain_db: tuple[float, float] = (-15.0, 3.0)  # dB, overall level applied after the condition
    speed: tuple[float, float] = (1.0, 1.0)  # change_speed factor drawn per utterance, before the condition
    synthetic_noise_share: float = 0.4  # share of "noise" draws using white/pink/brown noise
    weights: tuple[tuple[str, float], ...] = (
        ("clean", 0.15),
        ("noise", 0.25),
        ("music", 0.2),
        ("echo", 0.2),
        ("reverb", 0.2),
    )  # relative probability of each condition in Augmenter.random

    def __post_init__(self) -> None:
        for name in (
            "noise_snr_db",
            "music_snr_db",
            "echo_ser_db",
            "echo_delay_ms",
            "echo_rt60_s",
            "reverb_rt60_s",
            "reverb_drr_db",
            "gain_db",
            "speed",
        ):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"AugmentConfig.{name}: lower bound {low} above upper bound {high}")
        unknown = [c for c, _ in self.weights if c not in CONDITIONS]
        if unknown or not self.weights or any(w < 0 for _, w in self.weights):
            raise ValueError(f"AugmentConfig.weights: conditions must be among {CONDITIONS} with weights >= 0")
        if sum(w for _, w in self.weights) <= 0:
            raise ValueError("AugmentConfig.weights: at least one weight must be positive")
        if not 0.0 <= self.synthetic_noise_share <= 1.0:
            raise ValueError("AugmentConfig.synthetic_noise_share must be within 0–1")
        if self.speed[0] <= 0:
            raise ValueError("AugmentConfig.speed: factors must be positive")


class Augmenter:
    """Applies one acoustic condition at a time; all randomness comes from ``rng``."""

    def __init__(self, sources: SourceBank, rng: np.random.Generator, config: AugmentConfig | None = None) -> None:
        self.sources = sources
        self.rng = rng
        self.config = config or AugmentConfig()

    def _uniform(self, bounds: tuple[float, float]) -> float:
        return float(self.rng.uniform(bounds[0], bounds[1]))

    def _music(self) -> npt.NDArray[np.int16]:
        if not self.sources.music:
            raise ValueError("no music sources loaded (install hedgewars-data: training/setup_system.sh)")
        return self.sources.music[int(self.rng.integers(0, len(self.sources.music)))]

    def _noise(self, n: int) -> FloatArray:
        real = self.sources.noise
        if not real or self.rng.random() < self.config.synthetic_noise_share:
            kind = SYNTHETIC_NOISES[int(self.rng.integers(0, len(SYNTHETIC_NOISES)))]
            return synthetic_noise(kind, n, self.rng)
        return crop(real[int(self.rng.integers(0, len(real)))], n, self.rng)

    def echo(self, speech: FloatArray, ser_db: float) -> FloatArray:
        """Speech plus music from the device's loudspeaker at ``ser_db`` (speech over echo) at the mic."""
        n = len(speech)
        delay = round(self._uniform(self.config.echo_delay_ms) * SAMPLE_RATE / 1000.0)
        played = crop(self._music(), n, self.rng)
        rir = synthetic_rir(self._uniform(self.config.echo_rt60_s), self.rng, self._uniform((0.0, 10.0)))
        at_mic = fft_convolve(loudspeaker(played, self.rng), rir)[:n]
        at_mic = np.concatenate([np.zeros(delay, dtype=np.float32), at_mic])[:n]
        if power(at_mic) <= 0.0:  # the utterance is shorter than the delay
            return limit_peak(speech)
        return limit_peak(speech + scale_to_snr(speech, at_mic, ser_db))

    def apply(self, speech: npt.ArrayLike, condition: str, snr_db: float | None = None) -> FloatArray:
        """One condition on 16 kHz speech (float32, or int16 scaled by 1/32768).

        ``snr_db`` (the SER for "echo") is drawn from the config when not given; "reverb" and "clean"
        ignore it, and so does "mic". No random gain here: see :meth:`random`.
        """
        x = as_float32(speech)
        if x.ndim != 1:
            raise ValueError(f"speech must be 1-D, got shape {x.shape}")
        if condition == "clean":
            return limit_peak(x)
        if condition == "reverb":
            rir = synthetic_rir(
                self._uniform(self.config.reverb_rt60_s), self.rng, self._uniform(self.config.reverb_drr_db)
            )
            return reverberate(x, rir)
        if condition == "noise":
            level = self._uniform(self.config.noise_snr_db) if snr_db is None else snr_db
            return mix_at_snr(x, self._noise(len(x)), level, self.rng)
        if condition == "music":
            level = self._uniform(self.config.music_snr_db) if snr_db is None else snr_db
            return mix_at_snr(x, self._music(), level, self.rng)
        if condition == "echo":
            level = self._uniform(self.config.echo_ser_db) if snr_db is None else snr_db
            return self.echo(x, level)
        if condition == "mic":
            return microphone(x, self.rng)
        raise ValueError(f"unknown condition {condition!r} (known: {', '.join(CONDITIONS)})")

    def choose_condition(self) -> str:
        names = [c for c, _ in self.config.weights]
        weights = np.array([w for _, w in self.config.weights], dtype=np.float64)
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]

    def random(self, speech: npt.ArrayLike) -> tuple[str, FloatArray]:
        """A speed change (when configured), a condition drawn by the configured weights, then a random gain;
        returns (condition, audio)."""
        condition = self.choose_condition()
        if condition in ("music", "echo") and not self.sources.music:
            condition = "noise"  # no music installed: fall back rather than fail the training run
        if self.config.speed != (1.0, 1.0):
            speech = change_speed(speech, self._uniform(self.config.speed))
        out = self.apply(speech, condition)
        return condition, apply_gain(out, self._uniform(self.config.gain_db))


def augment_for_eval(
    speech: npt.ArrayLike, condition: str, snr_db: float | None, sources: SourceBank, seed: int
) -> FloatArray:
    """A fixed condition at a fixed level for evaluation (e.g. "music" at 10 dB), reproducible from
    ``seed`` (use a per-utterance seed); pass a bank loaded from the held-out sources of split_sources."""
    return Augmenter(sources, np.random.default_rng(seed)).apply(speech, condition, snr_db)
