"""Wake-word benchmark: harkd's detector beside openWakeWord, microWakeWord and Porcupine on the same audio.

    python -m bench.wake [--work work] [--name wake] [--limit 100]
                         [--engines harkd,openwakeword,microwakeword,porcupine] [--json out.json]

The audio is the wake recipe's held-out test set (``python -m training.wake_recipe --config
training/configs/wake.yaml --stages 1-4`` makes it):

* positives: "hey jarvis" read by held-out voices (voices and accents never used in training), each in a
  short file with silence around it, in every test condition (clean, noise, music, the device's own
  playback as echo, reverberation). A positive is heard when an engine fires between the phrase's start
  and one second after its end;
* negatives, as long continuous streams: recorded human speech (Debian's asterisk-core-sounds-en prompts
  held out from training), held-out music, in-domain commands, general sentences and confusable phrases
  ("hey travis", "ask jarvis to ...") read by held-out voices in the test conditions, noise and near-silence.
  Every firing there is a false accept.

Each engine fires as its authors ship it: harkd at the daemon's default settings (``WakeConfig``: the
threshold calibrated for the model, from its card; five scores averaged, 2 s refractory), openWakeWord
``hey_jarvis`` at probability 0.5, microWakeWord ``hey_jarvis`` at its own cutoff and window (0.97, 5),
Porcupine 1.9.5's built-in "jarvis" at sensitivity 0.5. Firings of one engine closer than 2 s count once (the
daemon's refractory period), for every engine alike. Porcupine's keyword is "jarvis" alone, so the confusable
stream (which says "jarvis" inside other sentences) is not a fair negative for it: false accepts are also
given without that stream.

CPU time is the process's CPU seconds (all threads) spent inside each engine, front end included, over the
seconds of audio of the negative streams (long continuous audio: the steady state of an always-on
detector); every engine is asked for one thread where it has the setting. Compare engines within one run.
The peers come from the ``bench`` extra (``pip install -e '.[bench]'``: pyopen-wakeword, pymicro-wakeword,
pvporcupine 1.9.5), whose wheels carry their models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import soundfile as sf

from bench.cli import name_list
from daemon.frontend import SAMPLE_RATE
from daemon.paths import default_model_dir

REFRACTORY_S = 2.0  # firings closer than this count once, for every engine
HIT_AFTER_S = 1.0  # a firing up to this long after the phrase ends still hears it
CHUNK = 1280  # samples handed to each engine at a time (80 ms, openWakeWord's step)

Samples = npt.NDArray[np.int16]


class Engine(Protocol):
    """A streaming wake-word engine: ``process`` returns the sample offsets (since ``reset``) where it fired."""

    name: str

    def reset(self) -> None: ...

    def process(self, samples: Samples) -> list[int]: ...


class _OneThreadLib:
    """The peers' TFLite C library, with every interpreter created on one thread.

    pyopen-wakeword and pymicro-wakeword create their interpreters without options (the library then picks
    its own thread count); this stands in for their ``lib`` and passes options that ask for one thread.
    """

    def __init__(self, lib: Any) -> None:
        import ctypes

        self._lib = lib
        lib.TfLiteInterpreterOptionsCreate.restype = ctypes.c_void_p
        lib.TfLiteInterpreterOptionsSetNumThreads.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self._options = lib.TfLiteInterpreterOptionsCreate()
        lib.TfLiteInterpreterOptionsSetNumThreads(self._options, 1)

    def TfLiteInterpreterCreate(self, model: Any, options: Any) -> Any:  # the C API function it stands in for
        return self._lib.TfLiteInterpreterCreate(model, options or self._options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)


def _one_thread(base: type[Any]) -> None:
    """Make every later instance of the peers' TfLiteWakeWord base class use :class:`_OneThreadLib`."""
    if getattr(base, "_harkd_one_thread", False):
        return
    original = base.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.lib = _OneThreadLib(self.lib)

    base.__init__ = init
    base._harkd_one_thread = True


class HarkdEngine:
    def __init__(self, model_dir: Path) -> None:
        from daemon.config import WakeConfig
        from daemon.wake import WakeDetector, WakeModel, WakeSettings

        model = WakeModel(model_dir, threads=1)
        settings = WakeSettings.from_config(WakeConfig(), model.threshold)  # the daemon's defaults
        self.name = "harkd"
        self.detail = f"{model.version}, threshold {settings.threshold}"
        self.detector = WakeDetector(model, settings)

    def reset(self) -> None:
        self.detector.restart(0)

    def process(self, samples: Samples) -> list[int]:
        return [d.end for d in self.detector.process(samples)]


class _ChunkedPeer:
    """A peer engine fed CHUNK-sample pieces of 16-bit PCM; subclasses say how many firings a piece gave."""

    model: Any
    features: Any

    def __init__(self) -> None:
        self.position = 0

    def reset(self) -> None:
        self.model.reset()
        self.features.reset()
        self.position = 0

    def firings(self, pcm: bytes) -> int:
        raise NotImplementedError

    def process(self, samples: Samples) -> list[int]:
        fired = []
        for i in range(0, len(samples), CHUNK):
            chunk = samples[i : i + CHUNK]
            self.position += len(chunk)
            fired += [self.position] * self.firings(chunk.astype("<i2").tobytes())
        return fired


class OpenWakeWordEngine(_ChunkedPeer):
    def __init__(self, threshold: float = 0.5) -> None:
        from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
        from pyopen_wakeword.wakeword import TfLiteWakeWord

        super().__init__()
        _one_thread(TfLiteWakeWord)
        self.name = "openwakeword"
        self.detail = f"pyopen-wakeword hey_jarvis, probability > {threshold}"
        self.threshold = threshold
        self.model = OpenWakeWord.from_builtin(Model.HEY_JARVIS)
        self.features = OpenWakeWordFeatures.from_builtin()

    def firings(self, pcm: bytes) -> int:
        return sum(probability > self.threshold
                   for embeddings in self.features.process_streaming(pcm)
                   for probability in self.model.process_streaming(embeddings))


class MicroWakeWordEngine(_ChunkedPeer):
    def __init__(self) -> None:
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        from pymicro_wakeword.wakeword import TfLiteWakeWord

        super().__init__()
        _one_thread(TfLiteWakeWord)
        self.name = "microwakeword"
        self.model = MicroWakeWord.from_builtin(Model.HEY_JARVIS)
        self.detail = (f"pymicro-wakeword hey_jarvis, cutoff {self.model.probability_cutoff}, "
                       f"window {self.model.sliding_window_size}")
        self.features = MicroWakeWordFeatures()

    def firings(self, pcm: bytes) -> int:
        return sum(bool(self.model.process_streaming(features))
                   for features in self.features.process_streaming(pcm))


class PorcupineEngine:
    def __init__(self, sensitivity: float = 0.5) -> None:
        import pvporcupine

        self.name = "porcupine"
        self.porcupine = pvporcupine.create(keywords=["jarvis"], sensitivities=[sensitivity])
        self.detail = f"pvporcupine {self.porcupine.version} built-in 'jarvis', sensitivity {sensitivity}"
        self.frame = self.porcupine.frame_length
        self.carry = np.zeros(0, dtype=np.int16)
        self.position = 0

    def reset(self) -> None:  # Porcupine keeps no state a new stream must forget beyond its frame buffer
        self.carry = np.zeros(0, dtype=np.int16)
        self.position = 0

    def process(self, samples: Samples) -> list[int]:
        data = np.concatenate([self.carry, samples])
        whole = len(data) // self.frame * self.frame
        fired = []
        for i in range(0, whole, self.frame):
            self.position += self.frame
            if self.porcupine.process(data[i : i + self.frame].tolist()) >= 0:
                fired.append(self.position)
        self.carry = data[whole:]
        return fired


def debounce(positions: list[int]) -> list[int]:
    """Firings closer than REFRACTORY_S to the previous counted one are the same event."""
    kept: list[int] = []
    for p in sorted(positions):
        if not kept or p - kept[-1] >= REFRACTORY_S * SAMPLE_RATE:
            kept.append(p)
    return kept


@dataclass
class EngineResult:
    detail: str
    misses: dict[str, list[int]] = field(default_factory=dict)  # condition -> 1 per missed positive
    misses_by_voice: dict[str, list[int]] = field(default_factory=dict)  # TTS engine of the positive -> same
    false_accepts: dict[str, int] = field(default_factory=dict)  # negative kind -> count
    negative_s: dict[str, float] = field(default_factory=dict)
    cpu_negative_s: float = 0.0
    cpu_positive_s: float = 0.0
    positive_audio_s: float = 0.0
    extra_in_positives: int = 0  # firings in positive files away from the phrase

    def summary(self) -> dict[str, Any]:
        hours = sum(self.negative_s.values()) / 3600
        fa = sum(self.false_accepts.values())
        no_conf_hours = sum(s for k, s in self.negative_s.items() if k != "confusable") / 3600
        no_conf_fa = sum(n for k, n in self.false_accepts.items() if k != "confusable")
        all_misses = [m for ms in self.misses.values() for m in ms]
        return {
            "detail": self.detail,
            "false_reject_percent": {c: round(100 * float(np.mean(ms)), 2) for c, ms in self.misses.items()},
            "false_reject_percent_all": round(100 * float(np.mean(all_misses)), 2) if all_misses else None,
            "positives": sum(len(ms) for ms in self.misses.values()),
            "false_reject_percent_by_voice_engine": {v: round(100 * float(np.mean(ms)), 2)
                                                     for v, ms in sorted(self.misses_by_voice.items())},
            "false_accepts": fa,
            "negative_hours": round(hours, 3),
            "false_accepts_per_hour": round(fa / hours, 3) if hours else None,
            "false_accepts_per_hour_without_confusables": round(no_conf_fa / no_conf_hours, 3) if no_conf_hours
            else None,
            "false_accepts_by_kind": {k: {"count": n, "hours": round(self.negative_s[k] / 3600, 3),
                                          "per_hour": round(n / (self.negative_s[k] / 3600), 2)}
                                      for k, n in self.false_accepts.items()},
            "cpu_s_per_audio_s": round(self.cpu_negative_s / sum(self.negative_s.values()), 5) if hours else None,
            "cpu_s_per_audio_s_positive_files": round(self.cpu_positive_s / self.positive_audio_s, 5)
            if self.positive_audio_s else None,
            "firings_in_positive_files_away_from_the_phrase": self.extra_in_positives,
        }


def _read(path: Path) -> Samples:
    samples, rate = sf.read(path, dtype="int16")
    if rate != SAMPLE_RATE or samples.ndim != 1:
        raise SystemExit(f"{path}: expected 16 kHz mono audio, got {rate} Hz, shape {samples.shape}")
    return np.asarray(samples)


def _timed(engine: Engine, samples: Samples) -> tuple[list[int], float]:
    engine.reset()
    started = time.process_time()
    fired = engine.process(samples)
    return debounce(fired), time.process_time() - started


def _select(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    per_condition: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_condition.setdefault(row["condition"], []).append(row)
    return [r for group in per_condition.values() for r in group[:limit]]


def run(work: Path, limit: int, engines: list[Engine]) -> dict[str, Any]:
    manifest = json.loads((work / "test" / "manifest.json").read_text())
    positives = _select(manifest["positive"], limit)
    results = {e.name: EngineResult(detail=getattr(e, "detail", e.name)) for e in engines}
    for row in manifest["negative"]:
        samples = _read(work / row["path"])
        for engine in engines:
            fired, cpu = _timed(engine, samples)
            res = results[engine.name]
            res.false_accepts[row["kind"]] = len(fired)
            res.negative_s[row["kind"]] = len(samples) / SAMPLE_RATE
            res.cpu_negative_s += cpu
        print(f"negatives: {row['kind']} ({row['seconds'] / 60:.1f} min) done", file=sys.stderr, flush=True)
    for i, row in enumerate(positives):
        samples = _read(work / row["path"])
        lo, hi = row["phrase_start"], row["phrase_end"] + HIT_AFTER_S * SAMPLE_RATE
        for engine in engines:
            fired, cpu = _timed(engine, samples)
            res = results[engine.name]
            hits = [p for p in fired if lo <= p <= hi]
            res.misses.setdefault(row["condition"], []).append(0 if hits else 1)
            res.misses_by_voice.setdefault(str(row.get("engine", "?")), []).append(0 if hits else 1)
            res.extra_in_positives += len(fired) - len(hits)
            res.cpu_positive_s += cpu
            res.positive_audio_s += len(samples) / SAMPLE_RATE
        print(f"\rpositives: {i + 1}/{len(positives)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    negative_minutes = {r["kind"]: round(r["seconds"] / 60, 1) for r in manifest["negative"]}
    return {
        "test_set": str(work),
        "phrase": manifest["phrase"],
        "positives": len(positives),
        "positives_by_voice_engine": dict(sorted(Counter(str(r.get("engine", "?")) for r in positives).items())),
        "negative_minutes": negative_minutes,
        "negative_hours": round(sum(negative_minutes.values()) / 60, 3),
        "machine_cpus": os.cpu_count(),
        "engines": {name: res.summary() for name, res in results.items()},
    }


def table(report: dict[str, Any]) -> str:
    conditions = sorted({c for e in report["engines"].values() for c in e["false_reject_percent"]})
    head = ["engine", *[f"FR % {c}" for c in conditions], "FR % all", "FA/h", "FA/h w/o confusables",
            "CPU s per audio s"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for name, e in report["engines"].items():
        cells = [name, *[str(e["false_reject_percent"].get(c)) for c in conditions], str(e["false_reject_percent_all"]),
                 str(e["false_accepts_per_hour"]), str(e["false_accepts_per_hour_without_confusables"]),
                 str(e["cpu_s_per_audio_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    voices = report.get("positives_by_voice_engine", {})
    lines += ["", "| engine | " + " | ".join(f"FR % {v} voices ({n})" for v, n in voices.items()) + " |",
              "| --- | " + " | ".join("---" for _ in voices) + " |"]
    for name, e in report["engines"].items():
        lines.append(f"| {name} | " + " | ".join(str(e.get("false_reject_percent_by_voice_engine", {}).get(v))
                                                  for v in voices) + " |")
    kinds = sorted({k for e in report["engines"].values() for k in e["false_accepts_by_kind"]})
    lines += ["", "| engine | " + " | ".join(f"FA {k} ({report['negative_minutes'][k]} min)" for k in kinds) + " |",
              "| --- | " + " | ".join("---" for _ in kinds) + " |"]
    for name, e in report["engines"].items():
        lines.append(f"| {name} | " + " | ".join(str(e["false_accepts_by_kind"].get(k, {}).get("count"))
                                                  for k in kinds) + " |")
    return "\n".join(lines)


OTHER_ENGINES: dict[str, Callable[[], Engine]] = {
    "openwakeword": OpenWakeWordEngine, "microwakeword": MicroWakeWordEngine, "porcupine": PorcupineEngine}
ENGINES = ("harkd", *OTHER_ENGINES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("work"), help="the wake recipe's --work (default: work)")
    parser.add_argument("--name", default="wake", help="the recipe config's name (default: wake)")
    parser.add_argument("--model", type=Path, default=None, help="harkd wake model directory (default: shipped)")
    parser.add_argument("--limit", type=int, default=1000, help="positives per test condition (default 1000)")
    parser.add_argument("--engines", default=",".join(ENGINES), type=name_list(ENGINES),
                        help="detectors side by side (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    parser.add_argument("--update-card", type=Path, default=None, metavar="MODEL_DIR",
                        help="record the report in this model directory's card.yaml and README.md "
                             "(e.g. models/wake; the files and their sha256 are not touched)")
    args = parser.parse_args(argv)
    work = args.work / args.name
    if not (work / "test" / "manifest.json").is_file():
        print(f"error: {work}/test/manifest.json not found: run the wake recipe's stages 1-4 first "
              "(python -m training.wake_recipe --config training/configs/wake.yaml --stages 1-4)", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    harkd_model = args.model or default_model_dir("wake")
    report = run(work, args.limit, [HarkdEngine(harkd_model) if n == "harkd" else OTHER_ENGINES[n]()
                                    for n in args.engines])
    if report["negative_hours"] < 1.0:
        print(f"warning: only {report['negative_hours']} h of negatives (the target is measured over at least 1 h)",
              file=sys.stderr)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.update_card is not None:
        update_card(args.update_card, report, " ".join(["python -m bench.wake", *(argv or sys.argv[1:])]))
    return 0


def update_card(model_dir: Path, report: dict[str, Any], command: str) -> None:
    """Put the report under ``benchmark`` in the card (which holds no hash of itself) and redo README.md."""
    import platform

    from daemon.modelcard import load_card
    from training.wake_recipe import render_card

    card = load_card(model_dir)
    summary = {key: report[key] for key in ("positives", "positives_by_voice_engine", "negative_hours",
                                            "negative_minutes", "engines")}
    details = {**card.details, "benchmark": {"command": command, "machine": f"{platform.machine()}, "
                                             f"{os.cpu_count()} CPUs, python {platform.python_version()}",
                                             **summary}}
    updated = type(card)(card.name, card.kind, card.version, card.files, card.frontend, card.model, details)
    updated.save(model_dir)
    (model_dir / "README.md").write_text(render_card(updated), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
