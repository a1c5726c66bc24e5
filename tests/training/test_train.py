"""Training: feature augmentation (voice/channel perturbation, SpecAugment) and the pruned transducer loss."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.features import Batch, FeatureShard
from training.model import ModelConfig, Transducer
from training.rnnt_loss import rnnt_loss
from training.train import (
    SimpleJoiner,
    TrainConfig,
    bf16_supported,
    noisy_history,
    spec_augment,
    train,
    transducer_loss,
    voice_augment,
)

N_MELS = 40


def _batch(frames: int = 60, peak_band: int = 20) -> Batch:
    """Two utterances whose energy sits in one mel band (a formant-like peak), the rest quiet."""
    feats = torch.full((2, frames, N_MELS), -10.0)
    feats[:, :, peak_band] = 0.0
    return Batch(feats, torch.tensor([frames // 6, frames // 6]), torch.zeros(2, 3, dtype=torch.long),
                 torch.tensor([3, 3]))


def test_no_perturbation_when_switched_off() -> None:
    batch = _batch()
    off = TrainConfig(mel_warp=0.0, eq_tilt=0.0, eq_ripple=0.0)
    out = voice_augment(batch, off, np.random.default_rng(0))
    assert torch.equal(out.feats, batch.feats) and out.feats is not batch.feats


def test_mel_warp_moves_the_peak_and_keeps_the_shape() -> None:
    batch = _batch(peak_band=20)
    warp_only = TrainConfig(mel_warp=0.15, eq_tilt=0.0, eq_ripple=0.0)
    peaks = set()
    for seed in range(8):
        out = voice_augment(batch, warp_only, np.random.default_rng(seed))
        assert out.feats.shape == batch.feats.shape and torch.equal(out.tokens, batch.tokens)
        assert torch.isfinite(out.feats).all()
        peaks.update(int(p) for p in out.feats[:, 0].argmax(dim=1))
        # A warp only moves energy along the mel axis: never louder than the loudest input band.
        assert float(out.feats.max()) <= 0.0 + 1e-6
    assert len(peaks) > 2  # formants land in several different bands (factors 0.85..1.15 move 20 by ±3)
    assert all(17 <= p <= 24 for p in peaks)


def test_equaliser_curve_is_smooth_bounded_and_the_same_for_every_frame() -> None:
    batch = _batch()
    eq_only = TrainConfig(mel_warp=0.0, eq_tilt=0.8, eq_ripple=0.3)
    out = voice_augment(batch, eq_only, np.random.default_rng(3))
    curve = (out.feats - batch.feats)[0]
    assert torch.allclose(curve, curve[0].expand_as(curve))  # one filter per utterance, not per frame
    assert float(curve.abs().max()) <= 0.4 + 3 * 0.3 + 1e-5  # |tilt| / 2 + three ripples
    assert float((curve[0, 1:] - curve[0, :-1]).abs().max()) < 0.2  # smooth across neighbouring bands
    assert not torch.allclose(out.feats[0], out.feats[1])  # each utterance gets its own


def test_time_masks_grow_with_the_utterance() -> None:
    cfg = TrainConfig(freq_masks=0, time_masks=1, time_mask_every=100, time_mask_width=10)
    long = Batch(torch.zeros(1, 1200, N_MELS) + torch.arange(1200.0)[None, :, None],
                 torch.tensor([200]), torch.zeros(1, 3, dtype=torch.long), torch.tensor([3]))
    masked = []
    for seed in range(5):
        out = spec_augment(long, cfg, 6, np.random.default_rng(seed))
        masked.append(int((out.feats[0, :, 0] != long.feats[0, :, 0]).sum()))
    # 12 masks of up to 10 frames each (one per 100 frames), against one mask of at most 10 frames.
    assert max(masked) > 10


TINY = ModelConfig(dim=16, blocks_low=1, blocks_high=1, embed_dim=8, pred_dim=16, joint_dim=16, vocab_size=6)


def _token_batch(seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(3, 48, N_MELS, generator=gen)
    tokens = torch.randint(1, 6, (3, 5), generator=gen)
    return Batch(feats, torch.tensor([8, 6, 7]), tokens, torch.tensor([5, 3, 4]))


def test_pruned_loss_with_bands_as_wide_as_the_labels_is_the_full_loss() -> None:
    torch.manual_seed(0)
    model, simple, batch = Transducer(TINY), SimpleJoiner(TINY), _token_batch(1)
    full = rnnt_loss(model.joint_logits(batch.feats, batch.tokens), batch.tokens, batch.feat_lengths,
                     batch.token_lengths)
    _, nll = transducer_loss(model, simple, batch, TrainConfig(prune_width=6), progress=1.0)
    assert nll == pytest.approx(float(full.detach()), rel=1e-4)


def test_the_pruned_loss_trains_the_transducer() -> None:
    torch.manual_seed(0)
    model, simple, batch = Transducer(TINY), SimpleJoiner(TINY), _token_batch(2)
    params = list(model.parameters()) + list(simple.parameters())
    optimiser = torch.optim.Adam(params, lr=1e-2)
    cfg = TrainConfig(prune_width=2)
    before = rnnt_loss(model.joint_logits(batch.feats, batch.tokens), batch.tokens, batch.feat_lengths,
                       batch.token_lengths)
    for step in range(60):
        loss, _ = transducer_loss(model, simple, batch, cfg, progress=step / 60)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = rnnt_loss(model.joint_logits(batch.feats, batch.tokens), batch.tokens, batch.feat_lengths,
                      batch.token_lengths)
    # The full loss falls though only 2 label positions per frame were joined.
    assert float(after.detach()) < 0.5 * float(before.detach())


def test_noisy_history_replaces_about_the_fraction_asked_and_never_padding() -> None:
    tokens = torch.randint(1, 29, (8, 400), generator=torch.Generator().manual_seed(0))
    tokens[:, 300:] = 0  # padding
    noisy = noisy_history(tokens, 0.15, 29, np.random.default_rng(0))
    changed = (noisy != tokens)[:, :300].float().mean()
    assert 0.12 < float(changed) < 0.16  # 1 in 28 draws picks the same token again
    assert bool((noisy[:, 300:] == 0).all()) and bool((noisy[:, :300] > 0).all())
    assert noisy_history(tokens, 0.0, 29, np.random.default_rng(0)) is tokens


def test_the_predictor_reads_the_history_and_the_loss_scores_the_targets() -> None:
    torch.manual_seed(0)
    model, batch = Transducer(TINY), _token_batch(3)
    clean, _ = transducer_loss(model, None, batch, TrainConfig(), progress=1.0)
    same, _ = transducer_loss(model, None, batch, TrainConfig(), progress=1.0, history=batch.tokens.clone())
    other, _ = transducer_loss(model, None, batch, TrainConfig(), progress=1.0, history=batch.tokens.flip(1))
    full = rnnt_loss(model.joint_logits(batch.feats, batch.tokens), batch.tokens, batch.feat_lengths,
                     batch.token_lengths)
    assert float(clean) == pytest.approx(float(full), rel=1e-5) and float(same) == pytest.approx(float(clean))
    assert float(other) != pytest.approx(float(clean))


@pytest.mark.parametrize("width", [0, 2])
def test_bfloat16_products_give_nearly_the_float_loss_and_gradients(width: int) -> None:
    torch.manual_seed(0)
    model, simple, batch = Transducer(TINY), SimpleJoiner(TINY) if width else None, _token_batch(3)
    losses, grads = [], []
    for bf16 in (False, True):
        model.zero_grad()
        loss, _ = transducer_loss(model, simple, batch, TrainConfig(prune_width=width, bf16=bf16), progress=0.5)
        loss.backward()
        assert loss.dtype == torch.float32  # the loss itself is computed in float32
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    if bf16_supported():
        assert losses[1] != losses[0]  # the products really were made in bfloat16
    else:  # oneDNN has no bfloat16 LSTM without the CPU's bfloat16 arithmetic: the products stay float32
        assert losses[1] == losses[0]
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert float(cosine) > 0.99


def test_the_pruned_loss_trains_the_transducer_with_bfloat16_products() -> None:
    torch.manual_seed(0)
    model, simple, batch = Transducer(TINY), SimpleJoiner(TINY), _token_batch(2)
    optimiser = torch.optim.Adam(list(model.parameters()) + list(simple.parameters()), lr=1e-2)
    cfg = TrainConfig(prune_width=2, bf16=True)
    before, _ = transducer_loss(model, simple, batch, cfg, progress=1.0)
    for step in range(60):
        loss, _ = transducer_loss(model, simple, batch, cfg, progress=step / 60)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after, _ = transducer_loss(model, simple, batch, cfg, progress=1.0)
    assert float(after.detach()) < 0.5 * float(before.detach())


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A run stopped after 3 steps (its checkpoint every step) and started again with a longer run's settings
    # goes on from last.pt, its optimiser state included, instead of starting over.
    rng = np.random.default_rng(0)
    shard = FeatureShard.build([(rng.standard_normal((48, N_MELS)), rng.integers(1, 6, 4)) for _ in range(6)])
    cfg = TrainConfig(steps=3, time_budget_min=60.0, max_frames=100, prune_width=2, checkpoint_every=1, threads=1)
    train(shard, TINY, cfg, tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3
    with caplog.at_level(logging.INFO, logger="training.train"):
        train(shard, TINY, replace(cfg, steps=6), tmp_path)
    assert "resuming at step 3" in caplog.text
    state = torch.load(tmp_path / "final.pt", weights_only=True)
    assert state["step"] == 6
    assert {int(s["step"]) for s in state["optimiser"]["state"].values()} == {6}  # Adam's own step counts
