"""Rescorer benchmark: does the cloud-side LM rescoring of the device's n-best lower the WER?

    python -m bench.rescorer [--manifest work/recognizer/speech-test/manifest.jsonl] [--conditions clean]
                             [--nbest 8] [--json out.json]

The held-out test utterances of each condition are decoded by the shipped recogniser (beam search, n-best
of ``--nbest``) and built into lattices exactly as the daemon publishes them; :class:`rescorer.rescore.Rescorer`
with the shipped LM picks the words. The test set is split in two by utterance id: the LM weight and word
bonus are chosen on the first half (a small grid, best WER) and reported on the other half, beside the
rescorer's default weights and the device's own best hypothesis. The oracle WER (the best n-best entry,
chosen knowing the reference) bounds what any rescoring of these lists can reach.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any

import soundfile as sf

from bench.cli import name_list
from daemon.commands.rescore import default_lm_path
from daemon.frontend import SAMPLE_RATE
from daemon.lattice import Lattice
from daemon.paths import default_model_dir
from daemon.recognizer import DecodeConfig, Recognizer
from daemon.textnorm import normalize
from rescorer.arpa import read_arpa
from rescorer.rescore import Rescorer, RescoreWeights
from training.metrics import edit_distance

LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
WORD_BONUSES = (0.0, 0.5, 1.0, 1.5)

Candidates = list[tuple[str, float]]  # (text, acoustic score) of the n-best, device order


def decode_all(manifest: Path, conditions: set[str], nbest: int) -> list[dict[str, Any]]:
    """Each test utterance of ``conditions``: reference, condition, split and the final lattice."""
    base = manifest.parent.parent
    recognizer = Recognizer.load(default_model_dir("recognizer"), threads=1,
                                 decode=DecodeConfig(beam=max(4, nbest), nbest=nbest))
    rows = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["condition"] not in conditions:
            continue
        samples, _ = sf.read(base / row["path"], dtype="int16")
        stream = recognizer.stream()
        stream.accept_waveform(samples)
        stream.finalize()
        lattice = Lattice.from_nbest(stream.nbest(), token_list=recognizer.tokens.tokens,
                                     frame_shift_s=recognizer.frame_shift_s, utterance_id=row["id"],
                                     device_id="bench", kind="final", seq=0, start_time=0.0,
                                     end_time=len(samples) / SAMPLE_RATE, models={})
        split = "tune" if zlib.crc32(row["id"].encode()) % 2 == 0 else "report"
        rows.append({"reference": normalize(row["text"]), "condition": row["condition"], "split": split,
                     "lattice": lattice})
    return rows


def wer(rows: list[dict[str, Any]], hypotheses: list[str]) -> float:
    errors = sum(edit_distance(r["reference"].split(), h.split()) for r, h in zip(rows, hypotheses, strict=True))
    words = sum(len(r["reference"].split()) for r in rows)
    return round(100.0 * errors / max(1, words), 2)


def rescored(rescorer: Rescorer, rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        result = rescorer.result_for(row["lattice"])
        out.append(result.text if result is not None else "")
    return out


def run(manifest: Path, conditions: set[str], nbest: int, lm_path: Path) -> dict[str, Any]:
    rows = decode_all(manifest, conditions, nbest)
    lm = read_arpa(lm_path)
    tune = [r for r in rows if r["split"] == "tune"]
    report = [r for r in rows if r["split"] == "report"]
    grid = []
    for lm_weight, bonus in itertools.product(LM_WEIGHTS, WORD_BONUSES):
        weights = RescoreWeights(lm_weight, bonus)
        grid.append((wer(tune, rescored(Rescorer(lm, weights), tune)), lm_weight, bonus))
    best_tune, lm_weight, bonus = min(grid)

    def device_best(part: list[dict[str, Any]]) -> list[str]:
        return [r["lattice"].best.text if r["lattice"].best else "" for r in part]

    def oracle(part: list[dict[str, Any]]) -> list[str]:
        out = []
        for r in part:
            texts = [e.text for e in r["lattice"].nbest] or [""]
            out.append(min(texts, key=lambda t: edit_distance(r["reference"].split(), t.split())))
        return out

    by_condition = {}
    for condition in sorted(conditions):
        part = [r for r in report if r["condition"] == condition]
        by_condition[condition] = {
            "utterances": len(part),
            "device_best_wer": wer(part, device_best(part)),
            "rescored_default_weights_wer": wer(part, rescored(Rescorer(lm), part)),
            "rescored_tuned_weights_wer": wer(part, rescored(Rescorer(lm, RescoreWeights(lm_weight, bonus)), part)),
            "oracle_nbest_wer": wer(part, oracle(part)),
        }
    return {
        "benchmark": "rescorer",
        "manifest": str(manifest),
        "lm": str(lm_path),
        "nbest": nbest,
        "tuned_on": {"utterances": len(tune), "lm_weight": lm_weight, "word_bonus": bonus, "wer": best_tune},
        "reported_on_the_other_half": by_condition,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("work/recognizer/speech-test/manifest.jsonl"))
    parser.add_argument("--conditions", default="clean", type=name_list(),
                        help="comma-separated test conditions (default clean)")
    parser.add_argument("--nbest", type=int, default=8, help="n-best entries per lattice (default 8)")
    parser.add_argument("--lm", type=Path, default=default_lm_path(), help="ARPA LM (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        print(f"error: {args.manifest} not found: run the recogniser recipe's stages 1-4 first", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    report = run(args.manifest, set(args.conditions), args.nbest, args.lm)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
