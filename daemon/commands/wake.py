"""``harkd wake``: find the wake phrase in audio files with the daemon's own streaming detector."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from daemon.audiofile import AudioFileError, read_audio
from daemon.frontend import SAMPLE_RATE
from daemon.modelcard import ModelError
from daemon.paths import default_model_dir
from daemon.wake import Detection, WakeDetector, WakeModel, WakeSettings

CHUNK = 1600  # samples fed at a time (100 ms); the result does not depend on it


def register(sub: Any) -> None:
    defaults = WakeSettings()
    parser = sub.add_parser(
        "wake",
        help="find the wake phrase in WAV/FLAC files",
        description=(
            "Run the wake-word detector over audio files, streaming, exactly as the daemon does (16 kHz "
            "log-mel, int8 model, smoothing, threshold, refractory period), and print every detection with "
            "its time in seconds and its score. Audio that is not 16 kHz mono is converted. A file that "
            "cannot be read is reported and the others are still processed (exit status 1)."
        ),
    )
    parser.add_argument("audio", nargs="+", type=Path, metavar="AUDIO", help="WAV or FLAC files")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line per file: file, phrase, threshold, detections "
                             "[{time, score}], audio_s, cpu_s")
    parser.add_argument("--model", type=Path, default=None, help="wake model directory (default: the shipped "
                                                                  "models/wake)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="smoothed score that fires, 0–1; lower is more sensitive (default: the threshold "
                             "calibrated for the model, from its card)")
    parser.add_argument("--smoothing", type=int, default=defaults.smoothing,
                        help="model scores averaged before the threshold (default %(default)s)")
    parser.add_argument("--refractory-ms", type=int, default=defaults.refractory_ms,
                        help="milliseconds after a detection with no other (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.set_defaults(func=run)


def _line(path: Path, detections: list[Detection]) -> str:
    if not detections:
        return f"{path}: no wake phrase"
    found = ", ".join(f"{d.time:.2f} s (score {d.score:.2f})" for d in detections)
    return f"{path}: {detections[0].phrase!r} at {found}"


def run(args: argparse.Namespace) -> int:
    model_dir = args.model or default_model_dir("wake")
    try:
        model = WakeModel(model_dir, threads=args.threads)
        threshold = model.threshold if args.threshold is None else args.threshold
        settings = WakeSettings(threshold=threshold, smoothing=args.smoothing, refractory_ms=args.refractory_ms)
    except (ModelError, ValueError) as exc:
        print(f"harkd wake: {exc}", file=sys.stderr)
        return 2
    detector = WakeDetector(model, settings)
    status = 0
    for path in args.audio:
        try:
            samples = read_audio(path)
        except AudioFileError as exc:
            print(f"harkd wake: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": str(path), "error": str(exc)}), flush=True)
            status = 1
            continue
        detector.restart(0)
        detections: list[Detection] = []
        started = time.process_time()
        for i in range(0, len(samples), CHUNK):
            detections += detector.process(samples[i : i + CHUNK])
        cpu = time.process_time() - started
        if args.json:
            print(json.dumps({"file": str(path), "phrase": model.phrase, "threshold": settings.threshold,
                              "detections": [{"time": round(d.time, 3), "score": round(d.score, 4)}
                                             for d in detections],
                              "audio_s": round(len(samples) / SAMPLE_RATE, 3), "cpu_s": round(cpu, 4)}),
                  flush=True)
        else:
            print(_line(path, detections), flush=True)
    return status
