"""The stages of :mod:`training.recipe`. Each takes the recipe context and writes under ``ctx.work``."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from daemon.frontend import SAMPLE_RATE, Frontend
from daemon.textnorm import ALPHABET
from daemon.tokens import TokenTable
from training import text_corpus, voices
from training.features import FeatureShard

log = logging.getLogger(__name__)

TOKENS = TokenTable.from_alphabet(ALPHABET)


# -- helpers ---------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _uniform(rng: np.random.Generator, bounds: list[float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# -- 1 text ----------------------------------------------------------------------------------------------
def make_text(ctx: Any) -> None:
    cfg = ctx.config["text"]
    for split, n in (("train", cfg["train_utterances"]), ("test", cfg["test_utterances"])):
        utts = text_corpus.generate(int(n), split, ctx.seed)
        write_jsonl(ctx.work / f"text-{split}.jsonl", [u.to_dict() for u in utts])
        log.info("%s: %d sentences", split, len(utts))


# -- 2 voices --------------------------------------------------------------------------------------------
def choose_voices(ctx: Any) -> None:
    cfg = ctx.config.get("voices", {})
    found = voices.available_voices()
    engines = cfg.get("engines")
    if engines:
        found = [v for v in found if v.engine in engines]
    if "limit" in cfg:
        rng = np.random.default_rng(ctx.seed)
        found = [found[i] for i in sorted(rng.permutation(len(found))[: int(cfg["limit"])])]
    if len(found) < 2:
        raise RuntimeError(f"need at least 2 TTS voices, found {len(found)}: run training/setup_system.sh")
    train, test = voices.split_voices(found, float(cfg.get("test_fraction", 0.2)), ctx.seed,
                                      test_engines=cfg.get("test_engines", ()))
    doc = {"train": [asdict(v) for v in train], "test": [asdict(v) for v in test]}
    (ctx.work / "voices.json").write_text(json.dumps(doc, indent=1) + "\n")
    log.info("voices: %d train, %d held out", len(train), len(test))


def load_voices(ctx: Any, split: str) -> list[voices.Voice]:
    doc = json.loads((ctx.work / "voices.json").read_text())
    return [voices.Voice(**v) for v in doc[split]]


# -- 3 synth ---------------------------------------------------------------------------------------------
def _synth_job(job: tuple[dict[str, Any], dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray | None, str]:
    row, voice = job
    try:
        audio = voices.synthesize(voices.Voice(**voice), row["text"], row["speed"], row["pitch"])
        return row, audio, ""
    except Exception as exc:  # a voice failing on one sentence must not stop the recipe; it is logged
        return row, None, f"{voice['name']}: {exc}"


def _plan(ctx: Any, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    cfg = ctx.config["synth"]
    rng = np.random.default_rng([ctx.seed, 3, 0 if split == "train" else 1])
    weights = dict(cfg.get("engine_weights", {}))
    if split == "test":  # a slow engine can be drawn sparingly for training and often enough for a test cohort
        weights.update(cfg.get("test_engine_weights", {}))
    draw = voices.engine_first(load_voices(ctx, split), weights)
    jobs = []
    for i, utt in enumerate(read_jsonl(ctx.work / f"text-{split}.jsonl")):
        voice = draw(rng)
        row = {**utt, "id": f"{split}-{i:06d}", "voice": voice.name, "engine": voice.engine,
               "cohort": voice.cohort, "speed": _uniform(rng, cfg["speed"]), "pitch": _uniform(rng, cfg["pitch"])}
        jobs.append((row, asdict(voice)))
    return jobs


def _run_synth(jobs: list[tuple[dict[str, Any], dict[str, Any]]], workers: int, desc: str
               ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    failures = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for row, audio, error in tqdm(pool.imap(_synth_job, jobs, chunksize=8), total=len(jobs), desc=desc):
            if audio is None or len(audio) < SAMPLE_RATE // 10:
                failures += 1
                log.warning("synthesis failed, utterance dropped: %s", error or "empty audio")
                continue
            yield row, audio
    if failures > len(jobs) // 10:
        raise RuntimeError(f"{failures} of {len(jobs)} syntheses failed; see the warnings above")


def synthesise(ctx: Any) -> None:
    workers = int(ctx.config["synth"].get("workers", 2))
    for split in ("train", "test"):
        out = ctx.work / f"speech-{split}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        rows, parts = [], []
        for row, audio in _run_synth(_plan(ctx, split), workers, f"synth {split}"):
            rows.append({**row, "samples": len(audio)})
            parts.append(audio)
        np.savez(out / "audio.npz", audio=np.concatenate(parts),
                 offsets=np.concatenate([[0], np.cumsum([len(a) for a in parts])]))
        write_jsonl(out / "clean.jsonl", rows)
        hours = sum(r["samples"] for r in rows) / SAMPLE_RATE / 3600
        log.info("%s speech: %d utterances, %.2f hours", split, len(rows), hours)


def load_speech(ctx: Any, split: str) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    directory = ctx.work / f"speech-{split}"
    with np.load(directory / "audio.npz", allow_pickle=False) as z:
        return read_jsonl(directory / "clean.jsonl"), z["audio"], z["offsets"]


def make_test_conditions(ctx: Any) -> None:
    """Held-out speech in every test condition, as WAV files with a manifest (the benchmarks read these)."""
    from training import augment

    rows, audio, offsets = load_speech(ctx, "test")
    test_dir = ctx.work / "speech-test"
    library = augment_library(ctx, "test")
    test_rows = []
    for i, row in enumerate(tqdm(rows, desc="test conditions")):
        speech = audio[offsets[i] : offsets[i + 1]].astype(np.float32) / 32768.0
        for c, condition in enumerate(ctx.config["test_conditions"]):
            kind, level = parse_condition(condition)
            mixed = augment.augment_for_eval(speech, kind, level, library, seed=ctx.seed * 1_000_003 + i * 31 + c)
            path = test_dir / condition / f"{row['id']}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, mixed, SAMPLE_RATE, subtype="PCM_16")
            test_rows.append({**row, "condition": condition, "path": str(path.relative_to(ctx.work))})
    write_jsonl(test_dir / "manifest.jsonl", test_rows)
    log.info("test speech: %d files", len(test_rows))


def augment_library(ctx: Any, split: str) -> Any:
    """Music and noise recordings for ``split``: training and test use disjoint files."""
    from training import augment

    train, test = augment.split_sources(augment.discover_sources(), seed=ctx.seed)
    return augment.SourceBank.load(train if split == "train" else test, ctx.work.parent / "cache" / "noise")


def parse_condition(name: str) -> tuple[str, float | None]:
    """"music_10db" -> ("music", 10.0); "reverb" -> ("reverb", None)."""
    base, _, level = name.partition("_")
    if level:
        if not level.endswith("db"):
            raise ValueError(f"test condition {name!r}: expected NAME or NAME_<level>db")
        return base, float(level[:-2])
    return base, None


def augment_config(ctx: Any) -> Any:
    from training import augment

    cfg = ctx.config["augment"]
    snr = (float(cfg["snr_db"][0]), float(cfg["snr_db"][1]))
    speed = cfg.get("speed", [1.0, 1.0])
    return augment.AugmentConfig(noise_snr_db=snr, music_snr_db=snr, speed=(float(speed[0]), float(speed[1])),
                                 weights=tuple((str(k), float(v)) for k, v in cfg["conditions"].items()))


# -- 4 features ------------------------------------------------------------------------------------------
_FEATURE_STATE: dict[str, Any] = {}


def _feature_job(job: tuple[int, int]) -> tuple[int, np.ndarray]:
    from training import augment

    index, seed = job
    audio, offsets = _FEATURE_STATE["audio"], _FEATURE_STATE["offsets"]
    speech = audio[offsets[index] : offsets[index + 1]]
    augmenter = augment.Augmenter(_FEATURE_STATE["library"], np.random.default_rng(seed), _FEATURE_STATE["config"])
    _, mixed = augmenter.random(speech)
    return index, Frontend().compute(mixed)


def make_features(ctx: Any) -> None:
    make_test_conditions(ctx)
    cfg = ctx.config["augment"]
    rows, _FEATURE_STATE["audio"], _FEATURE_STATE["offsets"] = load_speech(ctx, "train")
    _FEATURE_STATE["library"] = augment_library(ctx, "train")
    _FEATURE_STATE["config"] = augment_config(ctx)
    rng = np.random.default_rng([ctx.seed, 4])
    jobs = [(i, int(rng.integers(2**31))) for _ in range(int(cfg.get("copies", 1))) for i in range(len(rows))]
    items: list[tuple[np.ndarray, list[int]]] = []
    workers = int(ctx.config["synth"].get("workers", 2))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for index, feats in tqdm(pool.imap(_feature_job, jobs, chunksize=16), total=len(jobs), desc="features"):
            items.append((feats, TOKENS.encode(rows[index]["text"])))
    FeatureShard.build(items).save(ctx.work / "features-train.npz")
    _FEATURE_STATE.clear()


# -- 5 train ---------------------------------------------------------------------------------------------
def _dataclass_from(cls: Any, overrides: dict[str, Any]) -> Any:
    """``cls`` (ModelConfig, TrainConfig) with a recipe section's overrides; unknown settings are an error."""
    known = {f.name for f in fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    return cls(**overrides)


def train_model(ctx: Any) -> None:
    import torch

    from training.model import ModelConfig
    from training.train import TrainConfig, train

    model_cfg = _dataclass_from(ModelConfig, ctx.config.get("model") or {})
    train_cfg = _dataclass_from(TrainConfig, ctx.config.get("train") or {})
    shard = FeatureShard.load(ctx.work / "features-train.npz")
    started = time.monotonic()
    final = train(shard, model_cfg, train_cfg, ctx.work / "checkpoints")
    # The steps made in the time budget depend on the machine and on what else runs: the card records both.
    steps = int(torch.load(final, weights_only=True)["step"])
    (ctx.work / "train-time.json").write_text(json.dumps({"seconds": time.monotonic() - started,
                                                          "steps": steps}) + "\n")


# -- 6 export / 7 evaluate / 8 package: see training/export_stage.py -------------------------------------
def export_model(ctx: Any) -> None:
    from training.export_stage import export_model as run

    run(ctx)


def evaluate_model(ctx: Any) -> None:
    from training.export_stage import evaluate_model as run

    run(ctx)


def package_model(ctx: Any) -> None:
    from training.export_stage import package_model as run

    run(ctx)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
