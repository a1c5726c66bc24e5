"""The recogniser recipe: numbered, re-runnable stages from nothing but installable packages to ``models/``.

    python -m training.recipe --config training/configs/recognizer.yaml [--work work] [--stages 3-5] [--force]

Stages (outputs under ``<work>/<name>/``):
  1 text      in-domain command sentences, train and test (held-out names and appliances)
  2 voices    every installed TTS voice; whole voices held out for the test set
  3 synth     clean training and test speech (int16 shards with manifests)
  4 features  test speech in every test condition (WAV + manifest), and augmented log-mel features of the
              training speech (the device's own front end)
  5 train     RNN-T training with gradual pruning
  6 export    int8 TFLite graphs + parity check against the float model on test utterances
  7 evaluate  WER and entity accuracy per cohort and condition through the runtime's streaming decoder
  8 package   model directory with tokens and model card (copied to models/ with --install)

A stage writes ``NN-name.done`` holding a fingerprint of its settings and of the stages before it; a stage
whose fingerprint matches is skipped, so re-running after an interruption resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("training.recipe")


@dataclass(frozen=True)
class Context:
    config: dict[str, Any]
    work: Path  # <work>/<name>
    repo: Path

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


Stage = Callable[[Context], None]
# (number, name, config keys whose values the stage depends on, the stage); other recipes (the wake word's,
# training/wake_recipe.py) declare their own table and run it with the same runner.
StageTable = tuple[tuple[int, str, tuple[str, ...], Stage], ...]


def _fingerprint(ctx: Context, number: int, keys: tuple[str, ...], stages: StageTable) -> str:
    previous = [
        (ctx.work / f"{n:02d}-{name}.done").read_text() if (ctx.work / f"{n:02d}-{name}.done").exists() else ""
        for n, name, _, _ in stages
        if n < number
    ]
    settings = {k: ctx.config.get(k) for k in keys}
    blob = json.dumps({"settings": settings, "previous": previous}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_stages(ctx: Context, selected: set[int], force: bool, stages: StageTable | None = None) -> None:
    """Run the ``selected`` stages of ``stages`` (default: the recogniser's :data:`STAGES`) in order."""
    table = STAGES if stages is None else stages
    for number, name, keys, func in table:
        if number not in selected:
            continue
        marker = ctx.work / f"{number:02d}-{name}.done"
        fingerprint = _fingerprint(ctx, number, keys, table)
        if not force and marker.exists() and marker.read_text().strip() == fingerprint:
            log.info("stage %d %s: up to date, skipped", number, name)
            continue
        log.info("stage %d %s: running", number, name)
        marker.unlink(missing_ok=True)
        func(ctx)
        marker.write_text(fingerprint + "\n")
        log.info("stage %d %s: done", number, name)


def lazy_stage(module: str, func: str) -> Stage:
    """Stages import their module lazily so ``--help`` and early stages need no heavy imports."""

    def run(ctx: Context) -> None:
        import importlib

        getattr(importlib.import_module(module), func)(ctx)

    return run


_stage = lazy_stage

STAGES: StageTable = (
    (1, "text", ("seed", "text"), _stage("training.stages", "make_text")),
    (2, "voices", ("seed", "voices"), _stage("training.stages", "choose_voices")),
    (3, "synth", ("seed", "synth"), _stage("training.stages", "synthesise")),
    (4, "features", ("seed", "augment", "test_conditions"), _stage("training.stages", "make_features")),
    (5, "train", ("seed", "model", "train"), _stage("training.stages", "train_model")),
    (6, "export", ("export",), _stage("training.stages", "export_model")),
    (7, "evaluate", (), _stage("training.stages", "evaluate_model")),
    (8, "package", (), _stage("training.stages", "package_model")),
)


def install_package(ctx: Context, destination: Path) -> None:
    """Replace ``destination`` (e.g. models/recognizer) with the packaged model directory."""
    package = ctx.work / "package"
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(package, destination)
    log.info("installed %s -> %s", package, destination)


def parse_stages(spec: str) -> set[int]:
    selected: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        selected.update(range(int(lo), int(hi or lo) + 1))
    return selected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.recipe",
        description="Build a harkd recogniser from synthesised speech, stage by stage (see module docstring).",
    )
    parser.add_argument("--config", type=Path, required=True, help="recipe YAML, e.g. training/configs/recognizer.yaml")
    parser.add_argument("--work", type=Path, default=Path("work"), help="git-ignored work directory (default: work)")
    parser.add_argument("--stages", default="1-8", help="stages to run, e.g. 1-8, 5, 6-8 (default: all)")
    parser.add_argument("--force", action="store_true", help="re-run the selected stages even if up to date")
    parser.add_argument("--install", type=Path, default=None,
                        help="after packaging, copy the model directory here (e.g. models/recognizer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(config, dict) or "name" not in config:
        print(f"error: {args.config}: expected a mapping with at least 'name'", file=sys.stderr)
        return 2
    ctx = Context(config=config, work=args.work / str(config["name"]), repo=Path(__file__).resolve().parents[1])
    ctx.work.mkdir(parents=True, exist_ok=True)
    run_stages(ctx, parse_stages(args.stages), args.force)
    if args.install is not None:
        install_package(ctx, args.install)
    return 0


if __name__ == "__main__":
    sys.exit(main())
