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
from training import augment, text_corpus, voices
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
    train, test = voices.split_voices(found, float(cfg.get("test_fraction", 0.2)), ctx.seed)
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
    pool = load_voices(ctx, split)
    jobs = []
    for i, utt in enumerate(read_jsonl(ctx.work / f"text-{split}.jsonl")):
        voice = pool[int(rng.integers(len(pool)))]
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
    train_dir = ctx.work / "speech-train"
    shutil.rmtree(train_dir, ignore_errors=True)
    train_dir.mkdir()
    rows, audio_parts = [], []
    for row, audio in _run_synth(_plan(ctx, "train"), workers, "synth train"):
        rows.append({**row, "samples": len(audio)})
        audio_parts.append(audio)
    np.savez(train_dir / "audio.npz", audio=np.concatenate(audio_parts),
             offsets=np.concatenate([[0], np.cumsum([len(a) for a in audio_parts])]))
    write_jsonl(train_dir / "manifest.jsonl", rows)
    hours = sum(r["samples"] for r in rows) / SAMPLE_RATE / 3600
    log.info("train speech: %d utterances, %.2f hours", len(rows), hours)

    test_dir = ctx.work / "speech-test"
    shutil.rmtree(test_dir, ignore_errors=True)
    test_dir.mkdir()
    library = augment_library(ctx, "test")
    test_rows = []
    for row, audio in _run_synth(_plan(ctx, "test"), workers, "synth test"):
        speech = audio.astype(np.float32) / 32768.0
        for condition in ctx.config["test_conditions"]:
            rng = np.random.default_rng([ctx.seed, int(row["id"].split("-")[1]), len(condition)])
            mixed = augment.apply_condition(library, speech, condition, rng)
            path = test_dir / condition / f"{row['id']}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, mixed, SAMPLE_RATE, subtype="PCM_16")
            test_rows.append({**row, "condition": condition, "path": str(path.relative_to(ctx.work))})
    write_jsonl(test_dir / "manifest.jsonl", test_rows)
    log.info("test speech: %d files", len(test_rows))


def augment_library(ctx: Any, split: str) -> augment.SourceLibrary:
    return augment.SourceLibrary.discover(ctx.work.parent / "cache" / "noise", split=split, seed=ctx.seed)


# -- 4 features ------------------------------------------------------------------------------------------
_FEATURE_STATE: dict[str, Any] = {}


def _feature_job(job: tuple[int, int, str, float]) -> tuple[int, np.ndarray]:
    index, seed, condition, snr = job
    audio, offsets, library = _FEATURE_STATE["audio"], _FEATURE_STATE["offsets"], _FEATURE_STATE["library"]
    speech = audio[offsets[index] : offsets[index + 1]].astype(np.float32) / 32768.0
    rng = np.random.default_rng(seed)
    mixed = augment.apply_condition(library, speech, condition, rng, snr_db=snr)
    return index, Frontend().compute(mixed)


def make_features(ctx: Any) -> None:
    cfg = ctx.config["augment"]
    train_dir = ctx.work / "speech-train"
    rows = read_jsonl(train_dir / "manifest.jsonl")
    with np.load(train_dir / "audio.npz", allow_pickle=False) as z:
        _FEATURE_STATE["audio"], _FEATURE_STATE["offsets"] = z["audio"], z["offsets"]
    _FEATURE_STATE["library"] = augment_library(ctx, "train")
    names = list(cfg["conditions"])
    weights = np.array([cfg["conditions"][n] for n in names], dtype=np.float64)
    rng = np.random.default_rng([ctx.seed, 4])
    jobs = []
    for copy in range(int(cfg.get("copies", 1))):
        for i in range(len(rows)):
            condition = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            jobs.append((i, int(rng.integers(2**31)) + copy, condition, _uniform(rng, cfg["snr_db"])))
    items: list[tuple[np.ndarray, list[int]]] = []
    workers = int(ctx.config["synth"].get("workers", 2))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for index, feats in tqdm(pool.imap(_feature_job, jobs, chunksize=16), total=len(jobs), desc="features"):
            items.append((feats, TOKENS.encode(rows[index]["text"])))
    FeatureShard.build(items).save(ctx.work / "features-train.npz")
    _FEATURE_STATE.clear()


# -- 5 train ---------------------------------------------------------------------------------------------
def _dataclass_from(cls: Any, overrides: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s): {', '.join(sorted(unknown))}")
    return cls(**overrides)


def train_model(ctx: Any) -> None:
    from training.model import ModelConfig
    from training.train import TrainConfig, train

    model_cfg = _dataclass_from(ModelConfig, ctx.config.get("model") or {})
    train_cfg = _dataclass_from(TrainConfig, ctx.config.get("train") or {})
    shard = FeatureShard.load(ctx.work / "features-train.npz")
    started = time.monotonic()
    train(shard, model_cfg, train_cfg, ctx.work / "checkpoints")
    (ctx.work / "train-time.json").write_text(json.dumps({"seconds": time.monotonic() - started}) + "\n")


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
