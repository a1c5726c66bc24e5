"""Data for the wake-word recipe: texts, synthesis plans, real speech, and the scenes the detector learns from.

Everything acoustic is shared with the recogniser's recipe: the TTS voices and their held-out split
(:mod:`training.voices`, :func:`training.stages.choose_voices`), parallel synthesis
(:func:`training.stages._run_synth`), music, noise, echo and reverberation (:mod:`training.augment`), the
in-domain command sentences (:mod:`training.text_corpus`) and the device's own front end.

Texts (stage 1) come in kinds: ``positive`` (the phrase), ``command`` (in-domain commands), ``general``
(everyday sentences: the transcripts of Debian's Asterisk prompts when installed, and a built-in list) and
``confusable`` (hard negatives: the phrase's words in other sentences, its first words before other names,
sound-alikes of its last word, and any hand-written list in the config). ``real`` is recorded human speech
(the Asterisk prompts themselves), split by file into training and held-out halves.

A *scene* is a stretch of audio the model sees: a positive scene is some context, the phrase, and often a
command after it, with the phrase's end known to the frame; a negative scene strings several negative
clips together, or is music, noise or near-silence. Scenes are augmented as a whole (noise, music, media
echo, reverberation, gain) and get a microphone noise floor, then go through the front end once; training
samples windows from the stored features.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.frontend import SAMPLE_RATE, Frontend
from training import augment

log = logging.getLogger(__name__)

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")  # a link to the installed English voice
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
TRAILING_SILENCE_S = 0.15  # what training.voices.synthesize keeps after the last word

NEGATIVE_KINDS = ("command", "general", "confusable", "real", "music", "noise", "silence")
SPEECH_KINDS = ("command", "general", "confusable", "real")

# Everyday sentences that are neither commands nor wake phrases (general speech beside the Asterisk
# transcripts, so the recipe has some without that package).
GENERAL_SENTENCES = (
    "i think we should leave a little earlier tomorrow",
    "the bus was late again this morning",
    "could you pass me the salt please",
    "she said the meeting had been moved to thursday",
    "we watched a film about the deep sea last night",
    "my brother is visiting for the weekend",
    "it looks like it is going to rain later",
    "have you seen my keys anywhere",
    "the children are playing in the garden",
    "dinner will be ready in about twenty minutes",
    "i forgot to buy milk on the way home",
    "the new bakery on the corner is very good",
    "he has been learning to play the guitar",
    "we need to fix the fence before winter",
    "that was the best concert i have been to",
    "do you want tea or coffee",
    "the dog needs a walk before it gets dark",
    "i will call you back after lunch",
    "there is a lot of traffic on the bridge today",
    "our neighbours painted their door bright blue",
    "the train to the city leaves every half hour",
    "can you help me carry these boxes upstairs",
    "i read an interesting article about bees",
    "the library closes early on sundays",
    "we are planning a trip to the mountains",
    "my phone battery is almost empty",
    "let us try the other restaurant this time",
    "the garden looks lovely in the spring",
    "he told a very long story about his holiday",
    "please remember to lock the back door",
    "the football match starts at eight",
    "i have no idea where that noise is coming from",
    "the soup needs a little more pepper",
    "they moved into a flat near the river",
    "what time does the shop open on saturday",
    "she has a dentist appointment next week",
    "the weather forecast says it will be sunny",
    "i like the blue one better than the red one",
    "we ran out of bread this morning",
    "the cat is sleeping on the sofa again",
)

# Carrier sentences for a word of the phrase heard in other speech ({w}: the word).
CARRIERS = (
    "i told {w} about it yesterday",
    "{w} is coming over tonight",
    "did you see {w} at the party",
    "ask {w} to call me back",
    "that was {w}'s idea",
    "the {w} project is running late",
    "say {w} again",
    "{w}",
    "well {w} said no",
    "we met {w} and his sister",
)
# Words and names heard after the phrase's first word(s) instead of its last.
OTHER_NAMES = (
    "travis", "marvin", "davis", "service", "jasmine", "jeeves", "charlie", "siri", "google", "alexa",
    "computer", "there", "guys", "you", "buddy", "garvey", "harvey", "mavis", "paris", "chris", "doris",
    "harvest", "nervous", "jarred", "jazz", "carla", "darling", "bonnie", "kevin", "jack", "jarvis", "mycroft",
)
ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "ch", "sh", "tr", "st", "bl")
_VOWELS = re.compile(r"[aeiouy]")


def slug(phrase: str) -> str:
    """"hey jarvis" -> "hey-jarvis" (directory and model names)."""
    return re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-") or "phrase"


def normalise_phrase(phrase: str) -> str:
    words = re.sub(r"[^a-z' ]+", " ", phrase.lower()).split()
    if not words:
        raise ValueError(f"wake phrase {phrase!r} has no words (letters a-z)")
    return " ".join(words)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_by_hash(items: Iterable[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) by a seeded hash of each item: stable whatever the order, and never both."""
    unique = sorted(set(items))
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique)))) if len(unique) > 1 else 0
    held = set(sorted(unique, key=lambda k: _rank(seed, k))[:n_test])
    return [s for s in unique if s not in held], [s for s in unique if s in held]


def sound_alikes(word: str) -> list[str]:
    """``word`` with its leading consonants replaced by others: "jarvis" -> "barvis", "darvis", ..."""
    match = _VOWELS.search(word)
    if match is None:
        return []
    rest = word[match.start():]
    head = word[: match.start()]
    return [onset + rest for onset in ONSETS if onset != head and onset + rest != word]


def confusable_texts(phrase: str, extra: Sequence[str] = ()) -> list[str]:
    """Hard negatives for ``phrase``: never the phrase itself (see the module docstring)."""
    words = phrase.split()
    out: set[str] = set(normalise_phrase(e) for e in extra)
    lead = " ".join(words[:-1])
    last = words[-1]
    for other in OTHER_NAMES:
        if other not in words:
            out.add(f"{lead} {other}".strip())
    for alike in sound_alikes(last):
        out.add(f"{lead} {alike}".strip())
    for word in {last, *words}:
        for carrier in CARRIERS:
            out.add(carrier.format(w=word))
    if len(words) > 1:
        out.add(lead)
        out.add(" ".join(reversed(words)))
    out.discard(phrase)
    return sorted(t for t in out if t)


def asterisk_transcripts() -> dict[str, str]:
    """Prompt name -> transcript of Debian's asterisk-core-sounds-en (empty when not installed)."""
    import gzip

    if not ASTERISK_TRANSCRIPTS.is_file():
        return {}
    texts = {}
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if not sep or line.startswith(";"):
                continue
            clean = re.sub(r"\[[^\]]*\]", " ", text)
            clean = re.sub(r"[^a-z' ]+", " ", clean.lower())
            clean = " ".join(clean.split())
            if len(clean.split()) >= 2:
                texts[name.strip()] = clean
    return texts


def general_texts() -> list[str]:
    return sorted({*GENERAL_SENTENCES, *asterisk_transcripts().values()})


def asterisk_recordings() -> list[Path]:
    """The recorded Asterisk prompts (one real speaker, 8 kHz), sorted; empty when not installed."""
    if not ASTERISK_SOUNDS.is_dir():
        return []
    files = sorted(p for p in ASTERISK_SOUNDS.resolve().rglob("*.wav") if p.is_file())
    return [p for p in files if p.stat().st_size > 8000]  # tones and clicks of a few ms are not speech


def read_recording(path: Path) -> npt.NDArray[np.int16]:
    from daemon.audiofile import read_audio

    return read_audio(path)


# ----------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneSpec:
    """Random choices for scenes; seconds unless named otherwise."""

    pre_context: tuple[float, float] = (0.05, 1.6)  # audio before the phrase (speech or quiet)
    context_speech_share: float = 0.5  # share of positive scenes whose context holds other speech
    command_after_share: float = 0.6  # share of positive scenes with a command after the phrase
    gap_after: tuple[float, float] = (0.05, 0.5)  # pause between the phrase and the command
    negative_clips: tuple[int, int] = (2, 5)  # clips strung together per negative speech scene
    negative_gap: tuple[float, float] = (0.1, 1.2)  # pauses between them
    ambient_seconds: float = 8.0  # length of music, noise and silence scenes
    floor_dbfs: tuple[float, float] = (-80.0, -55.0)  # microphone noise floor (RMS)
    ambient_dbfs: tuple[float, float] = (-45.0, -12.0)  # level of music and noise scenes (RMS)


def noise_floor(n: int, rng: np.random.Generator, dbfs: tuple[float, float]) -> npt.NDArray[np.float32]:
    kind = ("white", "pink", "brown")[int(rng.integers(3))]
    level = 10.0 ** (float(rng.uniform(*dbfs)) / 20.0)
    return augment.synthetic_noise(kind, n, rng) * np.float32(level)


def _silence(seconds: float) -> npt.NDArray[np.float32]:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _as_float(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return augment.as_float32(x)


def speech_end(clip_samples: int) -> int:
    """Sample index, inside a synthesised clip, where the speech ends (its trailing silence was trimmed)."""
    return max(1, clip_samples - round(TRAILING_SILENCE_S * SAMPLE_RATE))


def end_frame(sample: int, frontend: Frontend) -> int:
    """The first frame whose window reaches ``sample`` (the frame at which the audio up to it is all seen)."""
    cfg = frontend.cfg
    return max(0, math.ceil((sample - cfg.window) / cfg.hop))


def positive_scene(phrase_clip: npt.NDArray[np.int16], context: Sequence[npt.NDArray[np.int16]],
                   after: npt.NDArray[np.int16] | None, spec: SceneSpec, augmenter: augment.Augmenter,
                   rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], int]:
    """(audio, sample index where the phrase's speech ends)."""
    pre_s = float(rng.uniform(*spec.pre_context))
    pre_n = round(pre_s * SAMPLE_RATE)
    if context and rng.random() < spec.context_speech_share:
        ctx = _as_float(context[int(rng.integers(len(context)))])[-pre_n:]
        pre = np.concatenate([_silence(max(0.0, pre_s - len(ctx) / SAMPLE_RATE)), ctx])
    else:
        pre = _silence(pre_s)
    parts = [pre, _as_float(phrase_clip)]
    end = len(pre) + speech_end(len(phrase_clip))
    if after is not None and rng.random() < spec.command_after_share:
        parts += [_silence(float(rng.uniform(*spec.gap_after))), _as_float(after)]
    parts.append(_silence(0.3))
    scene = np.concatenate(parts)
    return finish_scene(scene, spec, augmenter, rng), end


def negative_scene(clips: Sequence[npt.NDArray[np.int16]], spec: SceneSpec, augmenter: augment.Augmenter,
                   rng: np.random.Generator) -> npt.NDArray[np.float32]:
    parts: list[npt.NDArray[np.float32]] = [_silence(float(rng.uniform(0.0, 0.5)))]
    for clip in clips:
        parts += [_as_float(clip), _silence(float(rng.uniform(*spec.negative_gap)))]
    return finish_scene(np.concatenate(parts), spec, augmenter, rng)


def ambient_scene(kind: str, bank: augment.SourceBank, spec: SceneSpec,
                  rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Music (sometimes through a small loudspeaker), noise, or only the noise floor."""
    n = fast_length(round(spec.ambient_seconds * SAMPLE_RATE))
    if kind == "music" and bank.music:
        audio = augment.crop(bank.music[int(rng.integers(len(bank.music)))], n, rng)
        if rng.random() < 0.5:
            audio = augment.loudspeaker(audio, rng)
    elif kind in ("music", "noise"):
        if bank.noise and rng.random() < 0.6:
            audio = augment.crop(bank.noise[int(rng.integers(len(bank.noise)))], n, rng)
        else:
            audio = augment.synthetic_noise(("white", "pink", "brown")[int(rng.integers(3))], n, rng)
    else:
        return np.clip(noise_floor(n, rng, spec.floor_dbfs), -1.0, 1.0)
    rms = math.sqrt(augment.power(audio)) or 1.0
    audio = audio * np.float32(10.0 ** (float(rng.uniform(*spec.ambient_dbfs)) / 20.0) / rms)
    return augment.limit_peak(audio + noise_floor(n, rng, spec.floor_dbfs))


def fast_length(n: int) -> int:
    """The smallest 5-smooth number (2^a 3^b 5^c) >= n: a length the FFTs of the augmentation take quickly
    (numpy's FFT of a length with a large prime factor takes seconds)."""
    best = 1 << max(0, (n - 1).bit_length())
    five = 1
    while five < best:
        three = five
        while three < best:
            two = three
            while two < n:
                two *= 2
            best = min(best, two)
            three *= 3
        five *= 5
    return best


def pad_to_fast_length(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    extra = fast_length(len(audio)) - len(audio)
    return np.concatenate([audio, np.zeros(extra, dtype=np.float32)]) if extra else audio


def finish_scene(scene: npt.NDArray[np.float32], spec: SceneSpec, augmenter: augment.Augmenter,
                 rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """A random acoustic condition and gain (training.augment), then the microphone's noise floor."""
    scene = pad_to_fast_length(scene)
    mixed = scene
    for _ in range(4):
        try:
            _, mixed = augmenter.random(scene)
            break
        except ValueError:  # a silent stretch of music or noise was drawn (no SNR can be set): draw again
            continue
    return augment.limit_peak(mixed + noise_floor(len(mixed), rng, spec.floor_dbfs))


def eval_scene(scene: npt.NDArray[np.float32], speech_power: float, condition: str, level: float | None,
               bank: augment.SourceBank, seed: int) -> npt.NDArray[np.float32]:
    """``scene`` in a fixed test condition, the level taken against ``speech_power`` (not the pauses)."""
    if level is not None and condition != "clean":
        scene_power = augment.power(scene)
        level = level + 10.0 * math.log10(max(scene_power, 1e-12) / max(speech_power, 1e-12))
    scene = pad_to_fast_length(scene)
    mixed = augment.limit_peak(scene)
    if condition != "clean":
        for attempt in range(4):
            try:
                mixed = augment.augment_for_eval(scene, condition, level, bank, seed + 7919 * attempt)
                break
            except ValueError:  # a silent stretch of the music or noise: another stretch
                continue
        else:
            raise RuntimeError(f"cannot make the {condition} test condition: every draw was silent")
    rng = np.random.default_rng([seed, 7])
    return augment.limit_peak(mixed + noise_floor(len(mixed), rng, (-75.0, -65.0)))


def to_int16(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
