"""Training-step benchmark: what the pruned RNN-T loss saves over the full joiner, on this machine.

    python -m bench.train_step [--features work/recognizer/features-train.npz] [--batches 12] [--widths 0,5]
                               [--threads 2] [--autograd-lattice] [--json out.json]

One training step (forward, loss, backward, optimiser) of the shipped model configuration on the same real
batches of the recipe's training features, for each ``prune_width`` in turn (0: the full joiner on every
label position), the widths interleaved batch by batch so that a noisy shared machine slows them alike.
With ``--autograd-lattice`` each width also runs with the lattice likelihood differentiated by autograd
through its frame-by-frame recursion (the loss's first implementation) instead of by the backward recursion
(``training.rnnt_loss``): same numbers, different cost. Reports the median seconds per step of each setup
and its ratio to the first. Run it with the CPU to itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml

from training import rnnt_loss, train
from training.features import FeatureShard, length_bucketed_batches, make_batch
from training.model import ModelConfig, Transducer
from training.train import SimpleJoiner, TrainConfig


def autograd_lattice_log_likelihood(
    blank_lp: torch.Tensor,
    label_lp: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """``training.rnnt_loss.lattice_log_likelihood`` differentiated by autograd through the recursion."""
    if start is None:
        start = torch.zeros(blank_lp.shape[0], blank_lp.shape[1], dtype=torch.long)
        label_lp = torch.nn.functional.pad(label_lp, (0, 1))
    alpha = rnnt_loss.lattice_alphas(blank_lp, label_lp, start)
    return rnnt_loss.lattice_end(alpha, blank_lp, start, logit_lengths, target_lengths)


@contextlib.contextmanager
def lattice_gradient(autograd: bool) -> Iterator[None]:
    if not autograd:
        yield
        return
    with mock.patch.object(rnnt_loss, "lattice_log_likelihood", autograd_lattice_log_likelihood), \
            mock.patch.object(train, "lattice_log_likelihood", autograd_lattice_log_likelihood):
        yield


def measure(features: Path, model_cfg: ModelConfig, widths: list[int], autograd: bool, batches: int,
            threads: int, max_frames: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shard = FeatureShard.load(features)
    rng = np.random.default_rng(0)
    picked = list(length_bucketed_batches(shard.num_frames(), max_frames, rng))[: batches + 1]
    setups = []
    for width in widths:
        for grad in (False, True) if autograd else (False,):
            model = Transducer(model_cfg)
            simple = SimpleJoiner(model_cfg) if width > 0 else None
            params = list(model.parameters()) + (list(simple.parameters()) if simple is not None else [])
            name = f"width {width}" + (", autograd lattice" if grad else "")
            setups.append((name, grad, model, simple, torch.optim.AdamW(params, lr=1e-3),
                           TrainConfig(prune_width=width)))
    times: dict[str, list[float]] = {name: [] for name, *_ in setups}
    for i, indices in enumerate(picked):
        batch = make_batch(shard, indices, model_cfg.subsampling)
        for name, grad, model, simple, optimiser, cfg in setups:
            with lattice_gradient(grad):
                started = time.perf_counter()
                loss, _ = train.transducer_loss(model, simple, batch, cfg, progress=0.5)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                if i > 0:  # the first batch warms up allocators and kernels
                    times[name].append(time.perf_counter() - started)
    base = statistics.median(times[setups[0][0]])
    return {
        "features": str(features),
        "model": model_cfg.to_dict(),
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
    parser.add_argument("--config", type=Path, default=Path("training/configs/recognizer.yaml"),
                        help="recipe config whose model section sets the model (default: the shipped model's)")
    parser.add_argument("--widths", default="0,5", help="prune widths to compare, the first is the baseline")
    parser.add_argument("--autograd-lattice", action="store_true",
                        help="also time each width with autograd through the lattice recursion")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=TrainConfig().max_frames, help="frames per batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if not args.features.exists():
        print(f"error: {args.features} not found: run the recipe's stages 1-4 first "
              "(python -m training.recipe --config training/configs/recognizer.yaml --stages 1-4)", file=sys.stderr)
        return 2
    widths = [int(w) for w in args.widths.split(",")]
    recipe = yaml.safe_load(args.config.read_text()) or {}
    model_cfg = ModelConfig.from_dict(recipe.get("model") or {})
    result = measure(args.features, model_cfg, widths, args.autograd_lattice, args.batches, args.threads,
                     args.max_frames)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
