"""``harkd transcribe``: decode audio files with the shipped recogniser through the daemon's streaming path."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from daemon.audiofile import AudioFileError, read_audio
from daemon.bias import DEFAULT_BOOST, BiasFileError, BiasGraph, load_bias_file
from daemon.frontend import SAMPLE_RATE
from daemon.modelcard import ModelError
from daemon.paths import default_model_dir
from daemon.recognizer import BiasState, DecodeConfig, Hypothesis, Recognizer, transcribe_samples


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "transcribe",
        help="decode WAV/FLAC files with the on-device recogniser",
        description=(
            "Decode audio files with the shipped RNN-T through the same streaming code the daemon runs "
            "(16 kHz log-mel, chunked encoder, beam search). Audio that is not 16 kHz mono is converted. "
            "A file that cannot be read is reported and the others are still decoded (exit status 1)."
        ),
    )
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO", help="WAV or FLAC files")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line per file: file, text, nbest [{text, score}], timing")
    parser.add_argument("--model", type=Path, default=None,
                        help="model directory (default: the shipped models/recognizer)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--beam", type=int, default=DecodeConfig.beam, help="beam size (default %(default)s)")
    parser.add_argument("--nbest", type=int, default=DecodeConfig.nbest,
                        help="hypotheses reported (default %(default)s)")
    parser.add_argument("--vocabulary-penalty", type=float, default=DecodeConfig.vocabulary_penalty, metavar="NATS",
                        help="charged once per word outside the model's vocabulary, the words it was trained on "
                             "and the bias list's (default %(default)s; 0 turns it off)")
    parser.add_argument("--bias", type=Path, default=None, metavar="FILE",
                        help='bias list document, JSON or YAML: {"contacts": [...], "appliances": [...]}, each '
                             'entry a name or {"name": ..., "boost": ...}; the same document as bias/set')
    parser.add_argument("--bias-boost", type=float, default=DEFAULT_BOOST, metavar="NATS",
                        help="bonus per matched token for entries without their own boost (default %(default)s)")
    parser.add_argument("--verify-bias", action="store_true",
                        help="with --bias: after each file, put in list names that sound like words of the best "
                             "hypothesis where the model's likelihood plus the bias says so (slower)")
    parser.set_defaults(func=run)


def _result(path: Path, hyps: list[Hypothesis], audio_s: float, decode_s: float, shift: float) -> dict[str, Any]:
    best = hyps[0] if hyps else None
    words = []
    if best is not None:
        start = 0
        for word in best.text.split():
            frames = best.token_frames[start : start + len(word)]
            words.append({"word": word, "start": round(frames[0] * shift, 3),
                          "end": round((frames[-1] + 1) * shift, 3)})
            start += len(word) + 1
    return {
        "file": str(path),
        "text": best.text if best else "",
        "nbest": [{"text": h.text, "score": round(h.score, 4), "acoustic_score": round(h.acoustic_score, 4),
                   "bias_score": round(h.bias_score, 4)} for h in hyps],
        "words": words,
        "timing": {"audio_s": round(audio_s, 3), "decode_s": round(decode_s, 4),
                   "rtf": round(decode_s / audio_s, 4) if audio_s else None},
    }


def run(args: argparse.Namespace) -> int:
    model_dir = args.model or default_model_dir("recognizer")
    bias_doc = None
    if args.bias is not None:
        if not 0.0 <= args.bias_boost <= 20.0:
            print(f"harkd transcribe: --bias-boost must be between 0 and 20, not {args.bias_boost:g}",
                  file=sys.stderr)
            return 2
        try:
            bias_doc = load_bias_file(args.bias)
        except BiasFileError as exc:
            print(f"harkd transcribe: {exc}", file=sys.stderr)
            return 2
    if not 0.0 <= args.vocabulary_penalty <= 20.0:
        print(f"harkd transcribe: --vocabulary-penalty must be between 0 and 20, not {args.vocabulary_penalty:g}",
              file=sys.stderr)
        return 2
    try:
        recognizer = Recognizer.load(model_dir, threads=args.threads,
                                     decode=DecodeConfig(beam=args.beam, nbest=args.nbest,
                                                         verify_bias=args.verify_bias,
                                                         vocabulary_penalty=args.vocabulary_penalty))
    except ModelError as exc:
        print(f"harkd transcribe: {exc}", file=sys.stderr)
        return 2
    bias: BiasState | None = None
    if bias_doc is not None:
        graph = BiasGraph.from_document(bias_doc, recognizer.tokens, args.bias_boost)
        bias = graph.initial_state()
        count = len(graph.skipped)
        skipped = f", {count} entr{'y' if count == 1 else 'ies'} left out" if count else ""
        print(f"harkd transcribe: biasing toward {len(graph)} phrases from {args.bias}{skipped}", file=sys.stderr)
        for name, why in graph.skipped:
            print(f"harkd transcribe:   left out {name!r}: {why}", file=sys.stderr)
    status = 0
    for path in args.audio:
        try:
            samples = read_audio(path)
        except AudioFileError as exc:
            print(f"harkd transcribe: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
            status = 1
            continue
        started = time.perf_counter()
        hyps = transcribe_samples(recognizer, samples, bias)
        elapsed = time.perf_counter() - started
        result = _result(path, hyps, len(samples) / SAMPLE_RATE, elapsed, recognizer.frame_shift_s)
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        else:
            print(f"{path}: {result['text']}", flush=True)
    return status
