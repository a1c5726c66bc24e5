"""The wake-word recipe: numbered, re-runnable stages from installable packages to a model directory.

    python -m training.wake_recipe --config training/configs/wake.yaml [--phrase "hey computer"]
                                   [--work work] [--stages 1-9] [--force] [--install models/wake]

``--phrase`` trains another wake phrase from its text alone with the same recipe (voices, data, model,
evaluation); the work directory and model are then named ``wake-<phrase>``. The config's hand-written
confusable phrases belong to the config's own phrase and are dropped for another one; the generated ones
(the phrase's words in other sentences, its first words before other names, sound-alikes of its last word)
are always made.

Stages (outputs under ``<work>/<name>/``; runner and done-markers shared with :mod:`training.recipe`):
  1 text      positive phrase variants and negative texts by kind (commands, general, confusables)
  2 voices    every installed TTS voice; whole voices held out for testing
  3 synth     clips of every kind from training and held-out voices, and the recorded Asterisk prompts
  4 features  augmented training scenes through the device's front end; test WAVs (positives in each test
              condition, and long negative streams: commands, general, confusables, real speech, music, noise)
  5 train     the small convolutional detector on windows of the stored features (one or more members
              from different seeds: `train.members`)
  6 export    one int8 TFLite graph averaging the members, + parity against the float members
  7 calibrate the operating threshold, from false accepts on fresh calibration negatives (not the test set)
  8 evaluate  false rejects per condition and false accepts per hour through the daemon's own detector
  9 package   model directory: wake.tflite, card.yaml (sha256, threshold, data, voices, metrics), README.md
"""

from __future__ import annotations

import argparse
import bisect
import copy
import json
import logging
import multiprocessing
import platform
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from tqdm import tqdm

from daemon.frontend import SAMPLE_RATE, Frontend, FrontendConfig
from daemon.modelcard import ModelCard, sha256_file
from daemon.wake import WAKE_FILE, Detection, WakeDetector, WakeModel, WakeSettings, detections_from_scores
from training import augment, text_corpus, voices, wake_data
from training.recipe import Context, StageTable, install_package, lazy_stage, parse_stages, run_stages
from training.stages import (
    _run_synth,
    _uniform,
    augment_config,
    augment_library,
    choose_voices,
    load_voices,
    parse_condition,
    read_jsonl,
    write_jsonl,
)

log = logging.getLogger("training.wake_recipe")

RECIPE_COMMAND = "python -m training.wake_recipe --config training/configs/{config}.yaml"
HIT_AFTER_S = 1.0  # a detection up to this long after the phrase's end still counts as hearing it


# -- 1 text ----------------------------------------------------------------------------------------------
def positive_variants(phrase: str) -> list[str]:
    """The phrase as written, as a statement, as a call and with a pause (engines vary their prosody)."""
    words = phrase.split()
    variants = [phrase, f"{phrase}.", f"{phrase}!"]
    if len(words) > 1:
        variants.append(f"{words[0]}, {' '.join(words[1:])}.")
    return variants


def make_text(ctx: Context) -> None:
    phrase = wake_data.normalise_phrase(str(ctx.config["phrase"]))
    cfg = ctx.config["text"]
    test_fraction = float(cfg.get("test_fraction", 0.3))
    general_train, general_test = wake_data.split_by_hash(wake_data.general_texts(), test_fraction, ctx.seed)
    conf = wake_data.confusable_texts(phrase, ctx.config.get("confusables") or [])
    conf_train, conf_test = wake_data.split_by_hash(conf, test_fraction, ctx.seed)
    doc = {
        "phrase": phrase,
        "positive": {"train": positive_variants(phrase), "test": positive_variants(phrase)},
        "command": {split: [u.text for u in text_corpus.generate(int(cfg["command_sentences"]), split, ctx.seed)]
                    for split in ("train", "test")},
        "general": {"train": general_train, "test": general_test},
        "confusable": {"train": conf_train, "test": conf_test},
    }
    (ctx.work / "texts.json").write_text(json.dumps(doc, indent=1) + "\n")
    log.info("texts: %s", {k: {s: len(v) for s, v in d.items()} for k, d in doc.items() if isinstance(d, dict)})


# -- 3 synth ---------------------------------------------------------------------------------------------
def _plan(ctx: Context, split: str, texts: dict[str, list[str]], counts: dict[str, int], stream: int,
          prefix: str | None = None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Synthesis jobs: ``counts[kind]`` clips of each kind from ``texts[kind]``, read by the ``split``'s voices,
    drawn engine first (so the hundreds of espeak-ng variants do not drown the other engines); ``stream``
    keys the random draws, ``prefix`` (default: the split) the clip ids."""
    cfg = ctx.config["synth"]
    rng = np.random.default_rng([ctx.seed, 3, stream])
    draw = voices.engine_first(load_voices(ctx, split), cfg.get("engine_weights", {}))
    jobs = []
    for kind, count in counts.items():
        pool = texts[kind]
        for i in range(count):
            voice = draw(rng)
            row = {"id": f"{prefix or split}-{kind}-{i:06d}", "kind": kind, "text": pool[i % len(pool)],
                   "voice": voice.name, "engine": voice.engine, "cohort": voice.cohort,
                   "speed": _uniform(rng, cfg["speed"]), "pitch": _uniform(rng, cfg["pitch"])}
            jobs.append((row, asdict(voice)))
    return jobs


def _split_plan(ctx: Context, split: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The ``clips.<kind>_<split>`` clips of every kind for the training or test split."""
    texts = json.loads((ctx.work / "texts.json").read_text())
    kinds = ("positive", "command", "general", "confusable")
    return _plan(ctx, split, {k: texts[k][split] for k in kinds},
                 {k: int(ctx.config["clips"][f"{k}_{split}"]) for k in kinds}, 0 if split == "train" else 1)


def _real_speech(ctx: Context, split: str) -> list[tuple[dict[str, Any], np.ndarray]]:
    cfg = ctx.config.get("real_speech") or {}
    if not cfg.get("enabled", True):
        return []
    files = wake_data.asterisk_recordings()
    if not files:
        log.warning("no recorded speech (apt install asterisk-core-sounds-en-wav): real speech left out")
        return []
    names = [str(p) for p in files]
    train, test = wake_data.split_by_hash(names, float(cfg.get("test_fraction", 0.67)), ctx.seed)
    chosen = train if split == "train" else test
    limit = cfg.get(f"limit_{split}")
    if limit is not None:
        chosen = chosen[: int(limit)]
    out = []
    for i, name in enumerate(chosen):
        audio = wake_data.read_recording(Path(name))
        out.append(({"id": f"{split}-real-{i:06d}", "kind": "real", "text": Path(name).stem, "voice": "allison",
                     "engine": "human", "cohort": "asterisk", "speed": 1.0, "pitch": 1.0}, audio))
    return out


def synthesise(ctx: Context) -> None:
    workers = int(ctx.config["synth"].get("workers", 2))
    for split in ("train", "test"):
        out = ctx.work / f"clips-{split}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        rows, parts = [], []
        for row, audio in [*_run_synth(_split_plan(ctx, split), workers, f"synth {split}"), *_real_speech(ctx, split)]:
            rows.append({**row, "samples": len(audio)})
            parts.append(audio)
        np.savez(out / "audio.npz", audio=np.concatenate(parts),
                 offsets=np.concatenate([[0], np.cumsum([len(a) for a in parts])]))
        write_jsonl(out / "clips.jsonl", rows)
        counts = Counter(r["kind"] for r in rows)
        log.info("%s clips: %s, %.2f hours", split, dict(counts), sum(r["samples"] for r in rows) / SAMPLE_RATE / 3600)


def load_clips(ctx: Context, split: str) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """Rows and the clips' int16 audio by kind (views into one array)."""
    directory = ctx.work / f"clips-{split}"
    rows = read_jsonl(directory / "clips.jsonl")
    with np.load(directory / "audio.npz", allow_pickle=False) as z:
        audio, offsets = z["audio"], z["offsets"]
    by_kind: dict[str, list[np.ndarray]] = {}
    for i, row in enumerate(rows):
        by_kind.setdefault(row["kind"], []).append(audio[offsets[i] : offsets[i + 1]])
    return rows, by_kind


# -- 4 features ------------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _scene_job(job: tuple[str, int, int]) -> tuple[str, np.ndarray, int]:
    kind, index, seed = job
    rng = np.random.default_rng(seed)
    clips: dict[str, list[np.ndarray]] = _STATE["clips"]
    spec: wake_data.SceneSpec = _STATE["spec"]
    augmenter = augment.Augmenter(_STATE["bank"], rng, _STATE["augment"])
    frontend = Frontend()
    if kind == "positive":
        context = _STATE["context"]
        commands = clips.get("command", [])
        after = commands[int(rng.integers(len(commands)))] if commands else None
        audio, end = wake_data.positive_scene(clips["positive"][index], context, after, spec, augmenter, rng)
        return kind, frontend.compute(audio), wake_data.end_frame(end, frontend)
    if kind in wake_data.SPEECH_KINDS:
        pool = clips[kind]
        n = int(rng.integers(spec.negative_clips[0], spec.negative_clips[1] + 1))
        chosen = [pool[int(rng.integers(len(pool)))] for _ in range(n)]
        audio = wake_data.negative_scene(chosen, spec, augmenter, rng)
    else:
        audio = wake_data.ambient_scene(kind, _STATE["bank"], spec, rng)
    return kind, frontend.compute(audio), -1


def _training_scenes(ctx: Context) -> None:
    cfg = ctx.config["scenes"]
    _, clips = load_clips(ctx, "train")
    _STATE["clips"] = clips
    _STATE["context"] = [c for k in ("command", "general", "real") for c in clips.get(k, [])]
    _STATE["bank"] = augment_library(ctx, "train")
    _STATE["augment"] = augment_config(ctx)
    _STATE["spec"] = wake_data.SceneSpec()
    rng = np.random.default_rng([ctx.seed, 4])
    jobs: list[tuple[str, int, int]] = []
    for _ in range(int(cfg.get("positive_copies", 1))):
        jobs += [("positive", i, int(rng.integers(2**31))) for i in range(len(clips["positive"]))]
    for kind in wake_data.NEGATIVE_KINDS:
        count = int(cfg.get(kind, 0))
        if kind in wake_data.SPEECH_KINDS and not clips.get(kind):
            if count:
                log.warning("no %s clips: no %s scenes", kind, kind)
            continue
        jobs += [(kind, i, int(rng.integers(2**31))) for i in range(count)]
    items: list[tuple[str, np.ndarray, int]] = []
    workers = int(ctx.config["synth"].get("workers", 2))
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for item in tqdm(pool.imap(_scene_job, jobs, chunksize=16), total=len(jobs), desc="scenes"):
            items.append(item)
    _STATE.clear()
    from training.wake_model import SceneFeatures

    data = SceneFeatures.build(items)
    data.save(ctx.work / "features-train.npz")
    log.info("training scenes: %s, %.2f hours", dict(Counter(str(k) for k in data.kinds)),
             len(data.feats) / 100 / 3600)


def _test_positives(ctx: Context, clips: dict[str, list[np.ndarray]], rows: list[dict[str, Any]],
                    bank: augment.SourceBank) -> list[dict[str, Any]]:
    out_dir = ctx.work / "test" / "positive"
    positive_rows = [r for r in rows if r["kind"] == "positive"]
    manifest = []
    rng = np.random.default_rng([ctx.seed, 41])
    for i, (row, clip) in enumerate(zip(positive_rows, clips["positive"], strict=True)):
        lead = round(float(rng.uniform(0.6, 1.2)) * SAMPLE_RATE)
        speech = augment.as_float32(clip)
        scene = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
        for c, condition in enumerate(ctx.config["test_conditions"]):
            kind, level = parse_condition(condition)
            mixed = wake_data.eval_scene(scene, augment.power(speech), kind, level, bank,
                                         seed=ctx.seed * 1_000_003 + i * 31 + c)
            path = out_dir / condition / f"{row['id']}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wake_data.to_int16(mixed), SAMPLE_RATE, subtype="PCM_16")
            manifest.append({"id": row["id"], "condition": condition, "path": str(path.relative_to(ctx.work)),
                             "voice": row["voice"], "engine": row["engine"], "cohort": row["cohort"],
                             "text": row["text"], "phrase_start": lead,
                             "phrase_end": lead + wake_data.speech_end(len(clip))})
    return manifest


def _stream(parts: list[np.ndarray], rng: np.random.Generator, gap: tuple[float, float]
            ) -> tuple[np.ndarray, float, list[tuple[int, int]]]:
    """Clips strung together with pauses; returns (audio, speech power, each clip's (start, end) sample)."""
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    at = 0
    for clip in parts:
        pause = np.zeros(round(float(rng.uniform(*gap)) * SAMPLE_RATE), np.float32)
        pieces += [augment.as_float32(clip), pause]
        spans.append((at, at + len(clip)))
        at += len(clip) + len(pause)
    speech = np.concatenate([augment.as_float32(c) for c in parts]) if parts else np.zeros(1, np.float32)
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32), augment.power(speech), spans


def _spans(texts: list[str], spans: list[tuple[int, int]], offset: int) -> list[dict[str, Any]]:
    return [{"text": text, "start": offset + a, "end": offset + b} for text, (a, b) in zip(texts, spans, strict=True)]


def _negative_streams(ctx: Context, clips: dict[str, list[np.ndarray]], rows: list[dict[str, Any]],
                      bank: augment.SourceBank, out_dir: Path, kinds: tuple[str, ...] = wake_data.NEGATIVE_KINDS,
                      salt: int = 0) -> list[dict[str, Any]]:
    """One WAV per negative kind in ``out_dir``. Speech streams go in ~30 s segments, each in one test
    condition; ``salt`` (0 for the test set) varies the pauses and the noise and music mixed in.

    A speech stream's manifest entry lists its clips (text, start and end sample) so that false accepts
    can be traced to what was said.
    """
    cfg = ctx.config["test"]
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([ctx.seed, 42, salt] if salt else [ctx.seed, 42])
    conditions = list(ctx.config["test_conditions"])
    texts: dict[str, list[str]] = {}
    for row in rows:
        texts.setdefault(row["kind"], []).append(str(row.get("text", "")))
    manifest = []
    for kind in kinds:
        segments: list[np.ndarray] = []
        said: list[dict[str, Any]] = []  # each clip's text and span in the kind's stream
        if kind in ("command", "general", "confusable"):
            pool = clips.get(kind, [])
            per_segment = max(1, int(cfg.get("clips_per_segment", 10)))
            for s, start in enumerate(range(0, len(pool), per_segment)):
                audio, speech_power, spans = _stream(pool[start : start + per_segment], rng, (0.3, 1.5))
                condition = conditions[s % len(conditions)]
                name, level = parse_condition(condition)
                said += _spans(texts[kind][start : start + len(spans)], spans, sum(len(a) for a in segments))
                segments.append(wake_data.eval_scene(audio, speech_power, name, level, bank,
                                                     seed=ctx.seed * 7919 + s * 13 + len(kind) + salt * 1_000_003))
        elif kind == "real":
            for s, start in enumerate(range(0, len(clips.get("real", [])), 20)):
                audio, _, spans = _stream(clips["real"][start : start + 20], rng, (0.3, 1.0))
                said += _spans(texts[kind][start : start + len(spans)], spans, sum(len(a) for a in segments))
                segments.append(wake_data.eval_scene(audio, 1.0, "clean", None, bank, seed=s))
        else:
            minutes = float(cfg.get(f"{kind}_minutes", 0))
            spec = wake_data.SceneSpec(ambient_seconds=30.0)
            for _ in range(round(minutes * 2)):
                segments.append(wake_data.ambient_scene(kind, bank, spec, rng))
        if not segments:
            continue
        audio = np.concatenate(segments)
        path = out_dir / f"{kind}.wav"
        sf.write(path, wake_data.to_int16(audio), SAMPLE_RATE, subtype="PCM_16")
        entry: dict[str, Any] = {"kind": kind, "path": str(path.relative_to(ctx.work)),
                                 "seconds": round(len(audio) / SAMPLE_RATE, 2)}
        if said:
            entry["clips"] = said
        manifest.append(entry)
        log.info("negatives %s: %.1f min", path.relative_to(ctx.work), len(audio) / SAMPLE_RATE / 60)
    return manifest


def make_features(ctx: Context) -> None:
    _training_scenes(ctx)
    rows, clips = load_clips(ctx, "test")
    bank = augment_library(ctx, "test")
    test_dir = ctx.work / "test"
    shutil.rmtree(test_dir, ignore_errors=True)
    manifest = {"phrase": ctx.config["phrase"], "positive": _test_positives(ctx, clips, rows, bank),
                "negative": _negative_streams(ctx, clips, rows, bank, test_dir / "negative")}
    (test_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


# -- 5 train ---------------------------------------------------------------------------------------------
def train_model(ctx: Context) -> None:
    from training.wake_model import SceneFeatures, WakeModelConfig, WakeTrainConfig, train_members

    model_cfg = WakeModelConfig.from_dict(ctx.config.get("model") or {})
    train_cfg = WakeTrainConfig.from_dict(ctx.config.get("train") or {})
    data = SceneFeatures.load(ctx.work / "features-train.npz")
    shutil.rmtree(ctx.work / "checkpoints", ignore_errors=True)  # no stale member of an earlier run
    train_members(data, model_cfg, train_cfg, ctx.work / "checkpoints", seed=ctx.seed)


# -- 6 export --------------------------------------------------------------------------------------------
def _card(ctx: Context, directory: Path, details: dict[str, Any] | None = None,
          threshold: float | None = None) -> ModelCard:
    """The card; ``threshold`` is the calibrated operating point (stage 7), which the daemon uses unless its
    config sets ``wake.threshold``."""
    from training.wake_model import FILL_VALUE, load_members, macs_per_window, parameter_count

    members = load_members(ctx.work / "checkpoints")
    cfg = members[0].cfg
    operating = {} if threshold is None else {"threshold": threshold}
    return ModelCard(
        name=f"harkd-{ctx.name}",
        kind="wake",
        version=time.strftime("%Y%m%d"),
        files={WAKE_FILE: sha256_file(directory / WAKE_FILE)},
        frontend=FrontendConfig().to_dict(),
        model={
            "type": "wake-tc-resnet",
            "phrase": str(ctx.config["phrase"]),
            "file": WAKE_FILE,
            "window_frames": cfg.window_frames,
            "stride_frames": cfg.stride_frames,
            "fill_value": round(FILL_VALUE, 6),
            **operating,
            "members": len(members),  # models trained from different seeds; the graph averages their logits
            "parameters": sum(parameter_count(m) for m in members),
            "macs_per_window": len(members) * macs_per_window(cfg),
            "architecture": cfg.to_dict(),
        },
        details=details or {},
    )


def _parity_windows(ctx: Context, model_cfg: Any, limit: int) -> np.ndarray:
    """Windows of held-out audio (positives around their end, and negative streams) for the parity check."""
    from training.wake_model import FILL_VALUE

    manifest = json.loads((ctx.work / "test" / "manifest.json").read_text())
    frontend = Frontend()
    windows = []
    w = model_cfg.window_frames
    for row in manifest["positive"][: limit // 2]:
        feats = frontend.compute(sf.read(ctx.work / row["path"], dtype="int16")[0])
        end = min(len(feats) - 1, wake_data.end_frame(row["phrase_end"], frontend) + 8)
        window = np.full((w, feats.shape[1]), FILL_VALUE, np.float32)
        part = feats[max(0, end - w + 1) : end + 1]
        window[w - len(part):] = part
        windows.append(window)
    for row in manifest["negative"]:
        audio, _ = sf.read(ctx.work / row["path"], dtype="int16", frames=30 * SAMPLE_RATE)
        feats = frontend.compute(audio)
        for end in range(w, len(feats), max(1, len(feats) // 20)):
            windows.append(feats[end - w + 1 : end + 1])
    return np.stack(windows).astype(np.float32)


def export_model(ctx: Context) -> None:
    from training.wake_model import (
        SceneFeatures,
        WakeTrainConfig,
        WindowSampler,
        export_tflite,
        float_scores,
        load_members,
    )

    members = load_members(ctx.work / "checkpoints")
    model_cfg = members[0].cfg
    out = ctx.work / "export"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    data = SceneFeatures.load(ctx.work / "features-train.npz")
    n_cal = int(ctx.config.get("export", {}).get("calibration_windows", 400))
    sampler = WindowSampler(data, model_cfg, WakeTrainConfig(freq_mask=0, time_mask=0, positive_share=0.4),
                            np.random.default_rng([ctx.seed, 6]))
    calibration, _ = sampler.batch(n_cal)
    export_tflite(members, calibration, out / WAKE_FILE)
    _card(ctx, out).save(out)

    windows = _parity_windows(ctx, model_cfg, int(ctx.config.get("export", {}).get("parity_windows", 400)))
    reference = float_scores(members, windows)
    scorer = WakeModel(out)
    int8 = np.array([scorer.score(win) for win in windows], dtype=np.float32)
    threshold = 0.5  # the export is checked before the operating threshold is calibrated (stage 7)
    diff = np.abs(reference - int8)
    report = {"windows": len(windows), "max_abs_diff": round(float(diff.max()), 4),
              "mean_abs_diff": round(float(diff.mean()), 5),
              "same_decision_at_threshold": round(float(np.mean((reference >= threshold) == (int8 >= threshold))), 4)}
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("parity: %s", report)
    export_cfg = ctx.config.get("export", {})
    if report["mean_abs_diff"] > float(export_cfg.get("max_mean_abs_diff", 0.05)) or \
            report["same_decision_at_threshold"] < float(export_cfg.get("min_agreement", 0.95)):
        raise RuntimeError(f"the int8 export strays too far from the float model: {report}")


# -- scoring (stages 7 and 8) ---------------------------------------------------------------------------
def score_file(detector: WakeDetector, samples: np.ndarray) -> list[tuple[int, float]]:
    """Every (position, raw score) of a fresh stream over ``samples``, in 20 ms pieces (as a microphone)."""
    detector.restart(0)
    detector.trace = []
    for i in range(0, len(samples), 320):
        detector.process(samples[i : i + 320])
    trace, detector.trace = detector.trace, None
    return trace


def _thresholds(configured: float) -> list[float]:
    return sorted({round(t, 2) for t in (*np.arange(0.1, 0.96, 0.05), 0.97, 0.98, 0.99, configured)})


def evaluate_traces(positives: list[tuple[dict[str, Any], list[tuple[int, float]]]],
                    negatives: list[tuple[dict[str, Any], list[tuple[int, float]]]],
                    settings: WakeSettings, phrase: str) -> dict[str, Any]:
    """False rejects by condition and by voice engine, and false accepts per hour by kind, at ``settings``."""
    by_condition: dict[str, list[int]] = {}
    by_engine: dict[str, list[int]] = {}
    for row, trace in positives:
        found = detections_from_scores(trace, settings, phrase)
        hit = any(row["phrase_start"] <= d.end <= row["phrase_end"] + HIT_AFTER_S * SAMPLE_RATE for d in found)
        by_condition.setdefault(row["condition"], []).append(0 if hit else 1)
        by_engine.setdefault(str(row.get("engine", "?")), []).append(0 if hit else 1)
    by_kind: dict[str, dict[str, float]] = {}
    total_fa = 0
    total_hours = 0.0
    by_text: dict[str, list[tuple[str, int]]] = {}
    for row, trace in negatives:
        found = detections_from_scores(trace, settings, phrase)
        fa = len(found)
        hours = row["seconds"] / 3600
        by_kind[row["kind"]] = {"false_accepts": fa, "hours": round(hours, 3),
                                "per_hour": round(fa / hours, 2) if hours else 0.0}
        if found and row.get("clips"):
            by_text[row["kind"]] = _false_accepts_by_text(found, row["clips"])
        total_fa += fa
        total_hours += hours
    misses = [m for ms in by_condition.values() for m in ms]
    # The confusable stream ("hey travis", "jarvis" inside other sentences) is a stress test written to be
    # hard; the negatives (real and synthetic speech, commands, music, noise) are the rest.
    plain_fa = sum(int(v["false_accepts"]) for k, v in by_kind.items() if k != "confusable")
    plain_hours = sum(float(v["hours"]) for k, v in by_kind.items() if k != "confusable")
    return {
        "threshold": settings.threshold,
        "false_reject_percent": {c: round(100 * float(np.mean(ms)), 2) for c, ms in by_condition.items()},
        "false_reject_percent_all": round(100 * float(np.mean(misses)), 2) if misses else None,
        "positives": {c: len(ms) for c, ms in by_condition.items()},
        # The voice engines of the positives (all conditions): piper's neural voice is the most like a person's.
        "false_reject_percent_by_engine": {e: round(100 * float(np.mean(ms)), 2)
                                           for e, ms in sorted(by_engine.items())},
        "positives_by_engine": {e: len(ms) for e, ms in sorted(by_engine.items())},
        "false_accepts": total_fa,
        "negative_hours": round(total_hours, 3),
        "false_accepts_per_hour": round(total_fa / total_hours, 3) if total_hours else None,
        "false_accepts_per_hour_without_confusables": round(plain_fa / plain_hours, 3) if plain_hours else None,
        "false_accepts_by_kind": by_kind,
        "false_accepts_by_text": by_text,
    }


def _false_accepts_by_text(found: list[Detection], clips: list[dict[str, Any]], most: int = 12
                           ) -> list[tuple[str, int]]:
    """The texts whose clips the detections fired on (up to ``HIT_AFTER_S`` after a clip's end), most first.

    A detection in no clip's span (in a pause, more than ``HIT_AFTER_S`` after the clip before it) counts as
    "(between clips)".
    """
    counts: Counter[str] = Counter()
    starts = [int(c["start"]) for c in clips]
    slack = round(HIT_AFTER_S * SAMPLE_RATE)
    for d in found:
        i = bisect.bisect_right(starts, d.end) - 1
        inside = i >= 0 and d.end <= int(clips[i]["end"]) + slack
        counts[str(clips[i]["text"]) if inside else "(between clips)"] += 1
    return counts.most_common(most)


def _settings(ctx: Context, threshold: float) -> WakeSettings:
    cfg = ctx.config.get("evaluate") or {}
    return WakeSettings(threshold=threshold, smoothing=int(cfg.get("smoothing", 5)),
                        refractory_ms=int(cfg.get("refractory_ms", 2000)))


def _score_files(detector: WakeDetector, rows: list[dict[str, Any]], work: Path, desc: str
                 ) -> tuple[list[tuple[dict[str, Any], list[tuple[int, float]]]], float, float]:
    """Each row's WAV (``row["path"]`` under ``work``) scored as a fresh stream; also the CPU seconds spent
    and the seconds of audio."""
    traces = []
    audio_s = cpu_s = 0.0
    for row in tqdm(rows, desc=desc):
        samples = sf.read(work / row["path"], dtype="int16")[0]
        started = time.process_time()
        traces.append((row, score_file(detector, samples)))
        cpu_s += time.process_time() - started
        audio_s += len(samples) / SAMPLE_RATE
    return traces, cpu_s, audio_s


# -- 7 calibrate -----------------------------------------------------------------------------------------
def choose_threshold(sweep: list[dict[str, Any]], max_per_hour: float) -> float:
    """The lowest (most sensitive) threshold whose calibration false accepts per hour are at most
    ``max_per_hour``, and at every higher threshold too; the highest one tried if none is."""
    chosen = sweep[-1]["threshold"]
    for row in reversed(sweep):
        if row["false_accepts_per_hour"] > max_per_hour:
            break
        chosen = row["threshold"]
    return float(chosen)


def calibrate_model(ctx: Context) -> None:
    """Choose the operating threshold on calibration negatives, not on the test set.

    Fresh in-domain commands (new sentences from the held-out name and appliance lists) and general
    sentences, read by the held-out voices in the test conditions, strung together like the test
    streams but synthesised and mixed anew. The threshold is the most sensitive one that keeps their false
    accepts within ``calibrate.max_false_accepts_per_hour``; it goes into the model card, and the daemon
    uses it unless its config sets ``wake.threshold``.
    """
    cfg = ctx.config["calibrate"]
    out = ctx.work / "calibration"
    shutil.rmtree(out, ignore_errors=True)
    doc = json.loads((ctx.work / "texts.json").read_text())
    counts = {"command": int(cfg.get("command", 0)), "general": int(cfg.get("general", 0))}
    texts = {"command": [u.text for u in text_corpus.generate(counts["command"], "test", ctx.seed + 1)],
             "general": doc["general"]["test"]}
    jobs = _plan(ctx, "test", texts, {k: n for k, n in counts.items() if n > 0}, 2, prefix="calibrate")
    rows: list[dict[str, Any]] = []
    clips: dict[str, list[np.ndarray]] = {}
    for row, audio in _run_synth(jobs, int(ctx.config["synth"].get("workers", 2)), "synth calibration"):
        rows.append(row)
        clips.setdefault(row["kind"], []).append(audio)
    streams = _negative_streams(ctx, clips, rows, augment_library(ctx, "test"), out,
                                kinds=tuple(k for k in counts if clips.get(k)), salt=1)
    detector = WakeDetector(WakeModel(ctx.work / "export", threads=1), _settings(ctx, 0.5))
    traces, _, audio_s = _score_files(detector, streams, ctx.work, "calibration negatives")
    hours = audio_s / 3600
    sweep = []
    phrase = str(ctx.config["phrase"])
    for threshold in _thresholds(0.5):
        settings = _settings(ctx, threshold)
        fired = sum(len(detections_from_scores(trace, settings, phrase)) for _, trace in traces)
        sweep.append({"threshold": threshold, "false_accepts": fired,
                      "false_accepts_per_hour": round(fired / hours, 3) if hours else 0.0})
    limit = float(cfg.get("max_false_accepts_per_hour", 0.25))
    result = {"threshold": choose_threshold(sweep, limit), "max_false_accepts_per_hour": limit,
              "hours": round(hours, 3), "clips": {k: len(v) for k, v in clips.items()},
              "streams": [{k: v for k, v in st.items() if k != "clips"} for st in streams], "sweep": sweep}
    (ctx.work / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("calibrated threshold %.2f: at most %.2f false accepts per hour over %.2f h of calibration "
             "negatives", result["threshold"], limit, hours)


def calibration_result(ctx: Context) -> dict[str, Any]:
    """What stage 7 wrote: the calibrated ``threshold``, the sweep and the calibration audio."""
    return dict(json.loads((ctx.work / "calibration.json").read_text()))


def calibrated_threshold(ctx: Context) -> float:
    return float(calibration_result(ctx)["threshold"])


# -- 8 evaluate ------------------------------------------------------------------------------------------
def evaluate_model(ctx: Context) -> None:
    out = ctx.work / "export"
    manifest = json.loads((ctx.work / "test" / "manifest.json").read_text())
    settings = _settings(ctx, calibrated_threshold(ctx))
    detector = WakeDetector(WakeModel(out, threads=1), settings)
    phrase = str(ctx.config["phrase"])
    positives, cpu_pos, audio_pos = _score_files(detector, manifest["positive"], ctx.work, "evaluate positives")
    negatives, cpu_neg, audio_neg = _score_files(detector, manifest["negative"], ctx.work, "evaluate negatives")
    cpu_s, audio_s = cpu_pos + cpu_neg, audio_pos + audio_neg
    at_threshold = evaluate_traces(positives, negatives, settings, phrase)
    sweep = []
    for threshold in _thresholds(settings.threshold):
        result = evaluate_traces(positives, negatives, _settings(ctx, threshold), phrase)
        sweep.append({"threshold": threshold, "false_reject_percent": result["false_reject_percent_all"],
                      "false_accepts_per_hour": result["false_accepts_per_hour"],
                      "false_accepts_per_hour_without_confusables":
                          result["false_accepts_per_hour_without_confusables"]})
    size = (out / WAKE_FILE).stat().st_size
    metrics = {
        "at_threshold": at_threshold,
        "sweep": sweep,
        "settings": {"threshold": settings.threshold, "smoothing": settings.smoothing,
                     "refractory_ms": settings.refractory_ms},
        "cpu_seconds_per_audio_second_1_thread": round(cpu_s / audio_s, 5) if audio_s else None,
        "audio_hours": round(audio_s / 3600, 3),
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "size_bytes": size,
        "parity": json.loads((out / "parity.json").read_text()),
        "test_conditions": ctx.config["test_conditions"],
    }
    (ctx.work / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("false rejects %s%% (%s), false accepts %s/h over %.2f h", at_threshold["false_reject_percent_all"],
             at_threshold["false_reject_percent"], at_threshold["false_accepts_per_hour"],
             at_threshold["negative_hours"])


# -- 9 package -------------------------------------------------------------------------------------------
def package_model(ctx: Context) -> None:
    from training.wake_model import member_dirs

    src = ctx.work / "export"
    dst = ctx.work / "package"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    shutil.copy2(src / WAKE_FILE, dst / WAKE_FILE)
    metrics = json.loads((ctx.work / "metrics.json").read_text())
    train_rows = read_jsonl(ctx.work / "clips-train" / "clips.jsonl")
    test_rows = read_jsonl(ctx.work / "clips-test" / "clips.jsonl")
    voices_doc = json.loads((ctx.work / "voices.json").read_text())
    members = [json.loads((d / "config.json").read_text()) for d in member_dirs(ctx.work / "checkpoints")]
    manifest = json.loads((ctx.work / "test" / "manifest.json").read_text())
    calibration = calibration_result(ctx)
    command = str(ctx.config.get("command") or RECIPE_COMMAND.format(config=ctx.config.get("config_name", "wake")))

    def hours(rows: list[dict[str, Any]]) -> dict[str, float]:
        out: Counter[str] = Counter()
        for r in rows:
            out[r["kind"]] += r["samples"] / SAMPLE_RATE / 3600
        return {k: round(v, 3) for k, v in sorted(out.items())}

    details = {
        "training": {
            "command": command,
            "recipe_config": ctx.config,
            "clips": dict(Counter(r["kind"] for r in train_rows)),
            "hours_by_kind": hours(train_rows),
            "voices_by_cohort": dict(Counter(v["cohort"] for v in voices_doc["train"])),
            "train_time_minutes": round(sum(m["seconds"] for m in members) / 60, 1),  # all members
            "train_cpu_minutes": round(sum(m["cpu_seconds"] for m in members) / 60, 1),
            "steps": [m["steps_done"] for m in members],  # one per member (the card's model.members)
            "train_config": members[0]["train"],
            "augmentation": ctx.config["augment"],
            "real_speech": "Debian asterisk-core-sounds-en-wav prompts (one speaker), split by file between "
                           "training and test" if any(r["kind"] == "real" for r in train_rows) else "none",
        },
        "quantization": (
            "PT2E static int8 (per-channel symmetric weights, per-tensor activations), batch norms folded, "
            f"calibrated on {ctx.config.get('export', {}).get('calibration_windows', 400)} training windows; "
            "float input and output"
        ),
        "evaluation": {
            "command": command + " --stages 8",
            "benchmark_command": "python -m bench.wake --work " + str(ctx.work.parent) + f" --name {ctx.name}",
            "held_out_voices_by_cohort": dict(Counter(v["cohort"] for v in voices_doc["test"])),
            "held_out_positive_clips": sum(1 for r in test_rows if r["kind"] == "positive"),
            "calibration": {k: v for k, v in calibration.items() if k != "streams"},
            # The stream's size, not its clip spans (those stay in the test manifest for stage 8)
            "negative_streams": [{**{k: v for k, v in stream.items() if k != "clips"},
                                  "clips": len(stream.get("clips", []))} for stream in manifest["negative"]],
            **metrics,
        },
    }
    card = _card(ctx, dst, details, threshold=float(calibration["threshold"]))
    card.save(dst)
    (dst / "README.md").write_text(render_card(card), encoding="utf-8")


def _members_text(training: dict[str, Any]) -> str:
    """"6000 steps", or for several members "3 members (6000, 6000, 6000 steps) from different seeds, ..."."""
    steps = training.get("steps", "?")
    if not isinstance(steps, list):  # cards written before the recipe trained members
        return f"{steps} steps"
    if len(steps) == 1:
        return f"{steps[0]} steps"
    return f"{len(steps)} members ({', '.join(map(str, steps))} steps) from different seeds, their logits averaged"


def _calibration_text(calibration: dict[str, Any] | None) -> str:
    if not calibration:  # cards written before stage 7 calibrated the threshold
        return "The threshold was set in the recipe config, not calibrated."
    return (f"The threshold was calibrated (stage 7), not chosen on this test set: the most sensitive one at which "
            f"{calibration['hours']} h of fresh calibration negatives ({calibration['clips']} clips: new command "
            "sentences and general speech by the held-out voices, in the test conditions) gave at most "
            f"{calibration['max_false_accepts_per_hour']} false accepts per hour. The daemon uses it unless "
            "`wake.threshold` is set.")


def render_card(card: ModelCard) -> str:
    ev = card.details.get("evaluation", {})
    tr = card.details.get("training", {})
    at = ev.get("at_threshold", {})
    model = card.model
    lines = [
        f"# {card.name} {card.version}: wake phrase \"{model.get('phrase')}\"",
        "",
        "A small streaming keyword detector for harkd (temporal convolutions over "
        f"{model.get('window_frames')} log-mel frames, scored every {model.get('stride_frames')} frames), "
        "int8 TFLite, trained from synthesised speech only. Machine-readable card: `card.yaml` "
        "(with the sha256 of every file).",
        "",
        f"- Rebuild: `{tr.get('command', '')}` ({tr.get('train_time_minutes', '?')} min of training, "
        f"{_members_text(tr)}; clips by kind: {tr.get('clips', {})})",
        f"- Evaluate: `{ev.get('command', '')}`; compare with other engines: `{ev.get('benchmark_command', '')}`",
        f"- Size: {ev.get('size_bytes', 0) / 1000:.1f} kB; {model.get('parameters')} weights, "
        f"{model.get('macs_per_window')} multiply-adds per scoring",
        f"- CPU, one thread: {ev.get('cpu_seconds_per_audio_second_1_thread')} s per second of audio, front end "
        f"included ({ev.get('machine', '')})",
        f"- Quantization: {card.details.get('quantization', '')}; parity with the float model: {ev.get('parity')}",
        f"- Training voices by cohort: {tr.get('voices_by_cohort', {})}",
        f"- Held-out voices by cohort: {ev.get('held_out_voices_by_cohort', {})}",
        "",
        f"## Held-out results at threshold {at.get('threshold')} (smoothing and refractory: "
        f"{ev.get('settings', {})})",
        "",
        _calibration_text(ev.get("calibration")),
        "",
        "| test condition | false rejects % | positives |",
        "| --- | --- | --- |",
    ]
    for condition, value in at.get("false_reject_percent", {}).items():
        lines.append(f"| {condition} | {value} | {at.get('positives', {}).get(condition)} |")
    lines.append(f"| all | {at.get('false_reject_percent_all')} | {sum(at.get('positives', {}).values())} |")
    by_engine = at.get("false_reject_percent_by_engine", {})
    if by_engine:  # cards written before stage 7 counted by voice engine have none
        lines += ["", "| voice engine (all conditions) | false rejects % | positives |", "| --- | --- | --- |"]
        lines += [f"| {engine} | {value} | {at.get('positives_by_engine', {}).get(engine)} |"
                  for engine, value in by_engine.items()]
    lines += [
        "",
        f"False accepts: {at.get('false_accepts')} in {at.get('negative_hours')} h of negatives = "
        f"{at.get('false_accepts_per_hour')} per hour.",
        "",
        "| negative stream | hours | false accepts | per hour |",
        "| --- | --- | --- | --- |",
    ]
    for kind, value in at.get("false_accepts_by_kind", {}).items():
        lines.append(f"| {kind} | {value['hours']} | {value['false_accepts']} | {value['per_hour']} |")
    for kind, texts in at.get("false_accepts_by_text", {}).items():
        said = "; ".join(f"\"{text}\" {n}" for text, n in texts)
        lines += ["", f"What the {kind} false accepts fired on (most first): {said}."]
    lines += ["", "## Threshold sweep (all conditions, all negatives)", "",
              "| threshold | false rejects % | false accepts per hour | ... without the confusable stream |",
              "| --- | --- | --- | --- |"]
    for row in ev.get("sweep", []):
        lines.append(f"| {row['threshold']} | {row['false_reject_percent']} | {row['false_accepts_per_hour']} | "
                     f"{row.get('false_accepts_per_hour_without_confusables', '')} |")
    bench = card.details.get("benchmark")
    if bench:
        lines += ["", "## Side by side with other engines (same audio, same run)", "",
                  f"Command: `{bench.get('command', '')}`; {bench.get('positives')} positives, "
                  f"{bench.get('negative_hours')} h of negatives ({bench.get('negative_minutes')} minutes by "
                  "kind); CPU seconds per second of audio on one thread, front end included "
                  f"({bench.get('machine', '')}).", "",
                  "| engine | false rejects % | false accepts per hour | ... without the confusable stream | "
                  "CPU s per audio s |", "| --- | --- | --- | --- | --- |"]
        for name, e in bench.get("engines", {}).items():
            lines.append(f"| {name} ({e['detail']}) | {e['false_reject_percent_all']} | "
                         f"{e['false_accepts_per_hour']} | {e['false_accepts_per_hour_without_confusables']} | "
                         f"{e['cpu_s_per_audio_s']} |")
        voices = bench.get("positives_by_voice_engine", {})
        if voices:
            lines += ["", "False rejects % by the voice engine of the positives (all conditions; piper's neural "
                      "voice is the one most like a person's):", "",
                      "| engine | " + " | ".join(f"{v} ({n})" for v, n in voices.items()) + " |",
                      "| --- | " + " | ".join("---" for _ in voices) + " |"]
            for name, e in bench.get("engines", {}).items():
                by_voice = e.get("false_reject_percent_by_voice_engine", {})
                lines.append(f"| {name} | " + " | ".join(str(by_voice.get(v)) for v in voices) + " |")
    lines += ["", "## Files", ""]
    lines += [f"- `{name}` sha256 `{digest}`" for name, digest in card.files.items()]
    lines += [
        "",
        "## Your own wake phrase",
        "",
        "The same recipe trains any phrase from its text alone (about an hour on two cores, with the TTS "
        "voices, music and noise of `training/setup_system.sh` installed):",
        "",
        "```",
        "python -m training.wake_recipe --config training/configs/wake.yaml --phrase \"hey computer\" \\",
        "    --install /usr/share/harkd/models/wake-hey-computer",
        "```",
        "",
        "then set `wake: {engine: model, model: wake-hey-computer}` (or `model_dir:`) in `/etc/harkd/harkd.yaml`, "
        "and check it "
        "on recordings with `harkd wake --model DIR FILE.wav`. The new directory has its own card with the "
        "same held-out figures as this one; read them before relying on it.",
    ]
    return "\n".join(lines) + "\n"


STAGES: StageTable = (
    (1, "text", ("seed", "phrase", "text", "confusables"), lazy_stage("training.wake_recipe", "make_text")),
    (2, "voices", ("seed", "voices"), choose_voices),
    (3, "synth", ("seed", "synth", "clips", "real_speech"), lazy_stage("training.wake_recipe", "synthesise")),
    (4, "features", ("seed", "scenes", "augment", "test", "test_conditions"),
     lazy_stage("training.wake_recipe", "make_features")),
    (5, "train", ("seed", "model", "train"), lazy_stage("training.wake_recipe", "train_model")),
    (6, "export", ("export",), lazy_stage("training.wake_recipe", "export_model")),
    (7, "calibrate", ("calibrate", "evaluate"), lazy_stage("training.wake_recipe", "calibrate_model")),
    (8, "evaluate", ("evaluate",), lazy_stage("training.wake_recipe", "evaluate_model")),
    (9, "package", (), lazy_stage("training.wake_recipe", "package_model")),
)


def recipe_config(path: Path, phrase: str | None) -> dict[str, Any]:
    """The YAML config, with ``phrase`` (and the name, and the command in the card) replaced when given."""
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or "name" not in config or "phrase" not in config:
        raise ValueError(f"{path}: expected a mapping with at least 'name' and 'phrase'")
    config = copy.deepcopy(config)
    config["phrase"] = wake_data.normalise_phrase(str(config["phrase"]))
    command = RECIPE_COMMAND.format(config=path.stem) if path.parent.name == "configs" else \
        f"python -m training.wake_recipe --config {path}"
    if phrase is not None:
        new = wake_data.normalise_phrase(phrase)
        if new != config["phrase"]:
            if config.get("confusables"):
                log.info("the config's confusables are for %r: left out for %r", config["phrase"], new)
            config["confusables"] = []
            config["phrase"] = new
            config["name"] = f"{config['name']}-{wake_data.slug(new)}"
            command += f" --phrase '{new}'"
    config["command"] = command
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.wake_recipe",
        description="Build a harkd wake-word detector from synthesised speech, stage by stage "
                    "(see the module docstring).",
    )
    parser.add_argument("--config", type=Path, required=True, help="recipe YAML, e.g. training/configs/wake.yaml")
    parser.add_argument("--phrase", default=None,
                        help='train this wake phrase instead of the config\'s, from its text alone '
                             '(e.g. "hey computer")')
    parser.add_argument("--work", type=Path, default=Path("work"), help="git-ignored work directory (default: work)")
    parser.add_argument("--stages", default="1-9", help="stages to run, e.g. 1-9, 5, 6-9 (default: all)")
    parser.add_argument("--force", action="store_true", help="re-run the selected stages even if up to date")
    parser.add_argument("--install", type=Path, default=None,
                        help="after packaging, copy the model directory here (e.g. models/wake)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        config = recipe_config(args.config, args.phrase)
        stages = parse_stages(args.stages)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx = Context(config=config, work=args.work / str(config["name"]), repo=Path(__file__).resolve().parents[1])
    ctx.work.mkdir(parents=True, exist_ok=True)
    run_stages(ctx, stages, args.force, STAGES)
    if args.install is not None:
        install_package(ctx, args.install)
    return 0


if __name__ == "__main__":
    sys.exit(main())
