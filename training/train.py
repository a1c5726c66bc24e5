"""Training loop: RNN-T loss, AdamW, warm-up + cosine schedule, gradual pruning, resumable checkpoints.

Progress through training is ``max(step / steps, elapsed / time_budget)``: the learning rate and the
sparsity schedule follow it, so a run that hits its time budget still ends fully pruned and annealed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from daemon.frontend import MeanNormConfig, RunningMeanNorm
from training.features import Batch, FeatureShard, length_bucketed_batches, make_batch
from training.model import ModelConfig, Transducer
from training.rnnt_loss import (
    band_positions,
    lattice_occupancy,
    prune_ranges,
    pruned_log_likelihood,
    rnnt_loss,
    simple_lattice,
)
from training.sparsity import GradualPruner, zero_fraction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000  # optimiser steps at most
    time_budget_min: float = 75.0  # minutes of wall-clock at most
    max_frames: int = 10000  # feature frames (10 ms) per batch, padding included
    lr: float = 2e-3
    warmup: float = 0.05  # fraction of progress
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    final_sparsity: float = 0.6  # of every weight matrix
    prune_begin: float = 0.2  # progress at which pruning starts
    prune_end: float = 0.75  # progress at which the final sparsity is reached
    freq_masks: int = 2  # SpecAugment masks per utterance
    freq_mask_width: int = 6  # mel bins at most
    time_masks: int = 2  # at least this many time masks per utterance ...
    time_mask_every: int = 0  # ... and one more per this many feature frames (0: no more)
    time_mask_width: int = 15  # frames at most
    # Voice and channel perturbation in the log-mel domain (voice_augment). Off by default: tried with
    # mel_warp 0.12, eq_tilt 0.8, eq_ripple 0.3 and time_mask_every 100 (one training thread, 95 min, 5,500
    # steps), the held-out WER did not move (clean 46.4% vs 46.7%; festival/flite voices 69-72% either way).
    mel_warp: float = 0.0  # vocal-tract-length style warp of the mel axis by a factor in 1 +- this (0: off)
    eq_tilt: float = 0.0  # random spectral tilt, natural-log units from the lowest to the highest band (0: off)
    eq_ripple: float = 0.0  # amplitude of random smooth ripples over the bands (0: off)
    # Pruned RNN-T (training.rnnt_loss): the full joiner runs on this many label positions per frame, chosen
    # by a "simple" joiner trained beside it (0: the full joiner on every position). Measured here (python -m
    # bench.train_step): width 5 makes a step 2.0x cheaper (1.7x when autograd differentiated the lattices).
    # On the first model's data alone it fitted the training utterances far better but held-out voices no
    # better; with speed-perturbed copies of 30,000 sentences (training/configs/recognizer.yaml, which sets 5)
    # the whole change improved held-out voices (49.0% -> 42.7% WER, all conditions); the parts were not
    # measured apart.
    prune_width: int = 0
    simple_loss_scale: float = 0.5  # weight of the simple joiner's loss once warmed up (1.0 before)
    prune_warmup: float = 0.1  # progress over which the pruned loss's weight grows from 0.1 to 1
    # The predictor's input history, not its targets, has this fraction of its tokens replaced by random
    # characters (0: off). On held-out voices the model used to answer weak acoustic evidence with a fluent,
    # unrelated in-domain sentence: the predictor had become a strong language model. A noisy history makes
    # it a weaker one, so the joiner has to lean on the encoder. Measured (training/configs/recognizer.yaml,
    # 60,000 sentences, 80 minutes): 0.15 brought held-out WER, all five conditions, from 42.4% to 37.8%;
    # 0.25 to 33.7% (in a run that also made 15% more steps: 14,267 against 12,356).
    history_noise: float = 0.0
    # Matrix products in bfloat16 (torch.autocast; the weights, the optimiser and the loss stay float32): only
    # for CPUs with bfloat16 arithmetic (avx512_bf16, AMX), elsewhere it is emulated and slower, and oneDNN has
    # no bfloat16 LSTM at all; there the products stay float32 (bf16_supported). Measured in
    # training/configs/recognizer.yaml, which sets it.
    bf16: bool = False
    threads: int = 2
    seed: int = 0
    checkpoint_every: int = 100  # steps


def voice_augment(batch: Batch, cfg: TrainConfig, rng: np.random.Generator) -> Batch:
    """Make each utterance sound like another voice and another channel, in the log-mel domain.

    The synthetic corpus has few voices per TTS engine, and a model trained on it learns the voices: held-out
    voices of the same engine were recognised far worse than held-out text. Two cheap perturbations widen the
    voices seen: a warp of the mel axis by a random factor (formants move up or down, as a longer or shorter
    vocal tract moves them: vocal-tract-length perturbation) and a random smooth equaliser curve added to the
    log energies (a tilt plus low-order ripples: another microphone, loudspeaker or synthesiser timbre).
    """
    feats = batch.feats
    n_mels = feats.shape[2]
    bands = np.arange(n_mels, dtype=np.float64)
    x = bands / (n_mels - 1)
    out = feats.clone()
    for b in range(feats.shape[0]):
        if cfg.mel_warp > 0:
            alpha = rng.uniform(1.0 - cfg.mel_warp, 1.0 + cfg.mel_warp)
            src = np.clip(bands / alpha, 0.0, n_mels - 1.0)
            lo = np.floor(src).astype(np.int64)
            hi = np.minimum(lo + 1, n_mels - 1)
            frac = torch.from_numpy((src - lo).astype(np.float32))
            out[b] = feats[b][:, lo] * (1.0 - frac) + feats[b][:, hi] * frac
        curve = np.zeros(n_mels)
        if cfg.eq_tilt > 0:
            curve += rng.uniform(-cfg.eq_tilt, cfg.eq_tilt) * (x - 0.5)
        if cfg.eq_ripple > 0:
            for k in (1, 2, 3):
                curve += rng.uniform(-cfg.eq_ripple, cfg.eq_ripple) * np.cos(np.pi * k * x + rng.uniform(0, np.pi))
        out[b] += torch.from_numpy(curve.astype(np.float32))
    return Batch(out, batch.feat_lengths, batch.tokens, batch.token_lengths)


def mean_normalise(batch: Batch, norm: MeanNormConfig | None) -> Batch:
    """The device's streaming mean normalisation, after the voice perturbations (which it partly undoes, as
    it would undo a real voice's colour) and before the masks."""
    if norm is None:
        return batch
    feats = torch.from_numpy(RunningMeanNorm(norm).apply(batch.feats.numpy()))
    return Batch(feats, batch.feat_lengths, batch.tokens, batch.token_lengths)


def spec_augment(batch: Batch, cfg: TrainConfig, subsampling: int, rng: np.random.Generator) -> Batch:
    feats = batch.feats.clone()
    fill = feats.mean()
    n_mels = feats.shape[2]
    for b in range(feats.shape[0]):
        frames = int(batch.feat_lengths[b]) * subsampling
        for _ in range(cfg.freq_masks):
            w = int(rng.integers(0, cfg.freq_mask_width + 1))
            f0 = int(rng.integers(0, n_mels - w + 1))
            feats[b, :, f0 : f0 + w] = fill
        extra = frames // cfg.time_mask_every if cfg.time_mask_every > 0 else 0
        for _ in range(max(cfg.time_masks, extra)):
            w = int(rng.integers(0, cfg.time_mask_width + 1))
            t0 = int(rng.integers(0, max(1, frames - w)))
            feats[b, t0 : t0 + w, :] = fill
    return Batch(feats, batch.feat_lengths, batch.tokens, batch.token_lengths)


class SimpleJoiner(torch.nn.Module):
    """Training-only joiner with logits am(enc) + lm(pred): its lattice picks the bands of the pruned loss."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.am = torch.nn.Linear(model_cfg.joint_dim, model_cfg.vocab_size)
        self.lm = torch.nn.Linear(model_cfg.joint_dim, model_cfg.vocab_size)


def noisy_history(tokens: torch.Tensor, fraction: float, vocab_size: int, rng: np.random.Generator) -> torch.Tensor:
    """``tokens`` with about ``fraction`` of them replaced by random non-blank tokens (the predictor's input)."""
    if fraction <= 0.0:
        return tokens
    hit = torch.from_numpy(rng.random(tuple(tokens.shape)) < fraction)
    random = torch.from_numpy(rng.integers(1, vocab_size, size=tuple(tokens.shape))).to(tokens.dtype)
    return torch.where(hit & (tokens > 0), random, tokens)


def transducer_loss(
    model: Transducer,
    simple: SimpleJoiner | None,
    batch: Batch,
    cfg: TrainConfig,
    progress: float,
    history: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """The loss to minimise and the transducer's own mean negative log likelihood (for the progress bar).

    Without a simple joiner both are the full RNN-T loss; with one (``cfg.prune_width`` > 0) the loss is the
    pruned transducer's plus the simple joiner's, weighted as in Kuang et al. (the simple one alone at first).
    ``history`` is what the predictor reads (default: the targets themselves, ``batch.tokens``).
    """
    history = batch.tokens if history is None else history
    frames, labels = batch.feat_lengths, batch.token_lengths
    # the network; the loss in float32
    low = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 and bf16_supported())
    if simple is None:
        with low:
            logits = model.joint_logits(batch.feats, history)
        loss = rnnt_loss(logits.float(), batch.tokens, frames, labels)
        return loss, float(loss.detach())
    with low:
        enc, _ = model.encoder(batch.feats, model.encoder.initial_state(batch.feats.shape[0]))  # (B, T, J)
        pred = model.predictor(history)  # (B, U+1, J)
        am, lm = simple.am(enc), simple.lm(pred)
    enc, pred = enc.float(), pred.float()
    blank_lp, label_lp = simple_lattice(am.float(), lm.float(), batch.tokens)
    simple_ll, occupancy = lattice_occupancy(blank_lp, label_lp, frames, labels)
    start, fits = prune_ranges(occupancy, frames, labels, cfg.prune_width)
    positions = band_positions(start, min(cfg.prune_width, pred.shape[1]))  # (B, T, W)
    index = positions.reshape(pred.shape[0], -1, 1).expand(-1, -1, pred.shape[2])
    pred_band = torch.gather(pred, 1, index).reshape(*positions.shape, pred.shape[2])
    with low:
        logits = model.joiner(enc.unsqueeze(2), pred_band)
    pruned_ll = pruned_log_likelihood(logits.float(), start, batch.tokens, frames, labels)
    warm = min(1.0, progress / cfg.prune_warmup) if cfg.prune_warmup > 0 else 1.0
    simple_scale = 1.0 - warm * (1.0 - cfg.simple_loss_scale)
    pruned_scale = 0.1 + 0.9 * warm
    per_utterance = -(simple_scale * simple_ll + pruned_scale * pruned_ll)
    loss = torch.where(fits, per_utterance, torch.zeros_like(per_utterance)).mean()
    return loss, float(-pruned_ll.detach()[fits].mean()) if bool(fits.any()) else 0.0


def set_feature_stats(model: Transducer, shard: FeatureShard) -> None:
    sample = shard.feats[:: max(1, len(shard.feats) // 200000)].astype(np.float32)
    with torch.no_grad():
        model.encoder.feat_mean.copy_(torch.from_numpy(sample.mean(axis=0)))
        model.encoder.feat_inv_std.copy_(torch.from_numpy(1.0 / (sample.std(axis=0) + 1e-3)))


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    if progress < cfg.warmup:
        return cfg.lr * max(progress / cfg.warmup, 0.01)
    frac = (progress - cfg.warmup) / (1.0 - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """Whether this CPU does bfloat16 arithmetic (avx512_bf16 or AMX tiles), which ``TrainConfig.bf16`` needs."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def train(
    shard: FeatureShard, model_cfg: ModelConfig, cfg: TrainConfig, out_dir: Path
) -> Path:
    """Train (resuming from ``out_dir/last.pt`` if present); returns the path of the final checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final_path = out_dir / "final.pt"
    if cfg.bf16 and not bf16_supported():
        log.warning("train.bf16: this CPU has no bfloat16 arithmetic (avx512_bf16 or AMX); products stay float32")
        cfg = replace(cfg, bf16=False)  # recorded as trained
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = Transducer(model_cfg)
    simple = SimpleJoiner(model_cfg) if cfg.prune_width > 0 else None
    params = list(model.parameters()) + (list(simple.parameters()) if simple is not None else [])
    # fused: one kernel over all the tensors (a probe here: 2 ms a step against 7-12 ms for the loop over them)
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    pruner = GradualPruner(model, cfg.final_sparsity, cfg.prune_begin, cfg.prune_end)
    (out_dir / "config.json").write_text(
        json.dumps({"model": model_cfg.to_dict(), "train": asdict(cfg)}, indent=2) + "\n"
    )

    step, elapsed_before = 0, 0.0
    last = out_dir / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        if simple is not None:
            simple.load_state_dict(state["simple"])
        optimiser.load_state_dict(state["optimiser"])
        pruner.load_state_dict(state["pruner"])
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        rng = np.random.default_rng(cfg.seed + step)
        log.info("resuming at step %d (%.1f min)", step, elapsed_before / 60)
    else:
        set_feature_stats(model, shard)

    lengths = shard.num_frames()
    start = time.monotonic()

    def progress_now() -> float:
        elapsed = elapsed_before + time.monotonic() - start
        return max(step / cfg.steps, elapsed / (cfg.time_budget_min * 60.0))

    def save(path: Path) -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "simple": simple.state_dict() if simple is not None else None,
                "optimiser": optimiser.state_dict(),
                "pruner": pruner.state_dict(),
                "step": step,
                "elapsed": elapsed_before + time.monotonic() - start,
                "model_config": model_cfg.to_dict(),
                "train_config": asdict(cfg),
            },
            path.with_suffix(".tmp"),
        )
        path.with_suffix(".tmp").replace(path)

    norm = model.mean_norm()  # fixed once the feature statistics are set (or restored)
    model.train()
    bar = tqdm(total=100, desc="train", unit="%", initial=int(100 * progress_now()))
    smoothed = None
    while progress_now() < 1.0:
        for indices in length_bucketed_batches(lengths, cfg.max_frames, rng):
            progress = progress_now()
            if progress >= 1.0:
                break
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(cfg, progress)
            batch = make_batch(shard, indices, model_cfg.subsampling)
            batch = mean_normalise(voice_augment(batch, cfg, rng), norm)
            batch = spec_augment(batch, cfg, model_cfg.subsampling, rng)
            history = noisy_history(batch.tokens, cfg.history_noise, model_cfg.vocab_size, rng)
            loss, nll = transducer_loss(model, simple, batch, cfg, progress, history)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimiser.step()
            sparsity = pruner.update(progress)
            step += 1
            value = nll / max(1.0, float(batch.token_lengths.float().mean()))
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            bar.set_postfix(step=step, loss_per_token=f"{smoothed:.3f}", sparsity=f"{sparsity:.2f}")
            bar.update(int(100 * progress_now()) - bar.n)
            if step % cfg.checkpoint_every == 0:
                save(last)
    bar.close()
    pruner.update(1.0)
    zeros, total = zero_fraction(model)
    log.info("finished at step %d; %.1f%% of weights are zero", step, 100.0 * zeros / total)
    save(last)
    save(final_path)
    return final_path


def load_checkpoint(path: Path) -> Transducer:
    state = torch.load(path, weights_only=True)
    model = Transducer(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model
