"""Training-step benchmark: what the pruned RNN-T loss, bfloat16 products and a narrower predictor save here.

    python -m bench.train_step [--features work/recognizer/features-train.npz] [--batches 12] [--widths 0,5]
                               [--precisions float32,bfloat16] [--pred-dims 256,128] [--threads 2]
                               [--json out.json]

One training step (forward, loss, backward, optimiser) of the model configuration on the same real batches
of the recipe's training features, for each predictor width (``model.pred_dim``), each ``prune_width`` (0:
the full joiner on every label position) and each precision of the network's products (``train.bf16``) in
turn, interleaved batch by batch so that a noisy shared machine slows them alike. Reports the median seconds
per step of each setup and its ratio to the first. Run it with the CPU to itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.cli import name_list, number_list
from training.features import FeatureShard, length_bucketed_batches, make_batch
from training.model import ModelConfig, Transducer
from training.train import SimpleJoiner, TrainConfig, transducer_loss

PRECISIONS = ("float32", "bfloat16")


def measure(features: Path, widths: list[int], precisions: list[str], batches: int, threads: int,
            max_frames: int, pred_dims: list[int] | None = None) -> dict[str, object]:
    torch.set_num_threads(threads)
    shard = FeatureShard.load(features)
    pred_dims = pred_dims or [ModelConfig().pred_dim]
    rng = np.random.default_rng(0)
    picked = list(length_bucketed_batches(shard.num_frames(), max_frames, rng))[: batches + 1]
    setups = []
    for pred_dim in pred_dims:
        model_cfg = ModelConfig(pred_dim=pred_dim)
        for width in widths:
            for precision in precisions:
                torch.manual_seed(0)
                model = Transducer(model_cfg)
                simple = SimpleJoiner(model_cfg) if width > 0 else None
                params = list(model.parameters()) + (list(simple.parameters()) if simple is not None else [])
                cfg = TrainConfig(prune_width=width, bf16=precision == "bfloat16")
                name = (f"predictor {pred_dim}, " if len(pred_dims) > 1 else "") + f"width {width}, {precision}"
                setups.append((name, model, simple, torch.optim.AdamW(params, lr=1e-3, fused=True), cfg))
    times: dict[str, list[float]] = {name: [] for name, *_ in setups}
    for i, indices in enumerate(picked):
        batch = make_batch(shard, indices, ModelConfig().subsampling)
        for name, model, simple, optimiser, cfg in setups:
            started = time.perf_counter()
            loss, _ = transducer_loss(model, simple, batch, cfg, progress=0.5)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if i > 0:  # the first batch warms up allocators and kernels
                times[name].append(time.perf_counter() - started)
    base = statistics.median(next(iter(times.values())))
    return {
        "features": str(features),
        "batches": batches,
        "max_frames": max_frames,
        "threads": threads,
        "median_s_per_step": {name: round(statistics.median(t), 4) for name, t in times.items()},
        "ratio_to_first": {name: round(statistics.median(t) / base, 3) for name, t in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=Path, default=Path("work/recognizer/features-train.npz"),
                        help="training features written by the recipe's stage 4")
    parser.add_argument("--widths", default="0,5", type=number_list(int, 0, "whole numbers >= 0"),
                        help="prune widths to compare, the first is the baseline")
    parser.add_argument("--precisions", default="float32", type=name_list(PRECISIONS),
                        help=f"precisions of the network's products to compare ({', '.join(PRECISIONS)})")
    parser.add_argument("--pred-dims", default=str(ModelConfig().pred_dim),
                        type=number_list(int, 1, "positive whole numbers"),
                        help="predictor LSTM widths to compare (model.pred_dim), e.g. 256,128")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per setup")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=TrainConfig().max_frames, help="frames per batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if not args.features.exists():
        print(f"error: {args.features} not found: run the recipe's stages 1-4 first "
              "(python -m training.recipe --config training/configs/recognizer.yaml --stages 1-4)", file=sys.stderr)
        return 2
    result = measure(args.features, args.widths, args.precisions, args.batches, args.threads, args.max_frames,
                     args.pred_dims)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
