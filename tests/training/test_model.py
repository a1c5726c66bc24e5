from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training extra (torch) not installed")

from daemon.frontend import RunningMeanNorm  # noqa: E402
from training.features import FeatureShard, make_batch  # noqa: E402
from training.model import ModelConfig, Transducer  # noqa: E402
from training.sparsity import GradualPruner, schedule, zero_fraction  # noqa: E402
from training.train import mean_normalise  # noqa: E402

SMALL = ModelConfig(dim=32, blocks_low=1, blocks_high=2, embed_dim=16, pred_dim=24, joint_dim=32)


def test_chunked_encoder_equals_whole_utterance() -> None:
    torch.manual_seed(0)
    model = Transducer(SMALL).eval()
    feats = torch.randn(1, SMALL.chunk_features * 5, SMALL.n_mels)
    with torch.no_grad():
        whole, _ = model.encoder(feats, model.encoder.initial_state())
        state = model.encoder.initial_state()
        parts = []
        for i in range(0, feats.shape[1], SMALL.chunk_features):
            out, state = model.encoder(feats[:, i : i + SMALL.chunk_features], state)
            parts.append(out)
    assert torch.allclose(whole, torch.cat(parts, dim=1), atol=1e-5)


def test_predictor_step_equals_lstm() -> None:
    torch.manual_seed(0)
    model = Transducer(SMALL).eval()
    tokens = torch.tensor([[3, 7, 1, 20]])
    with torch.no_grad():
        full = model.predictor(tokens)[0]
        h = torch.zeros(1, SMALL.pred_dim)
        c = torch.zeros(1, SMALL.pred_dim)
        steps = []
        for tok in [0, 3, 7, 1, 20]:
            out, h, c = model.predictor.step(torch.tensor([tok]), h, c)
            steps.append(out[0])
    assert torch.allclose(full, torch.stack(steps), atol=1e-5)


def test_gradual_pruning_reaches_the_target_with_exact_zeros() -> None:
    model = Transducer(SMALL)
    pruner = GradualPruner(model, final_sparsity=0.6, begin=0.2, end=0.8)
    assert pruner.update(0.1) == 0.0
    mid = pruner.update(0.5)
    assert 0.0 < mid < 0.6
    assert pruner.update(1.0) == pytest.approx(0.6)
    for p in pruner.params.values():
        assert float((p == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    zeros, total = zero_fraction(model)
    assert zeros / total > 0.5
    assert schedule(0.8, 0.6, 0.2, 0.8) == pytest.approx(0.6)


def test_pruning_masks_move_in_steps_of_the_resolution() -> None:
    model = Transducer(SMALL)
    pruner = GradualPruner(model, final_sparsity=0.6, begin=0.0, end=1.0, resolution=0.05)
    first = pruner.update(0.2)
    assert schedule(0.2, 0.6, 0.0, 1.0) > first == pytest.approx(0.25)
    masks = {name: m.clone() for name, m in pruner.masks.items()}
    assert pruner.update(0.205) == first  # the schedule moved less than a step: the masks stay
    assert all(torch.equal(masks[name], m) for name, m in pruner.masks.items())
    assert pruner.update(0.3) > first
    assert pruner.update(0.999) < 0.6 and pruner.update(1.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="resolution"):
        GradualPruner(model, final_sparsity=0.6, resolution=0.0)


def test_mean_norm_follows_the_config_and_the_feature_mean_and_normalises_batches_as_streams() -> None:
    assert Transducer(ModelConfig()).mean_norm() is None
    model = Transducer(ModelConfig(mean_norm_frames=80))
    mean = torch.linspace(-7.0, -2.0, 40)
    model.encoder.feat_mean.copy_(mean)
    norm = model.mean_norm()
    assert norm is not None and norm.frames == 80.0
    assert np.allclose(norm.initial_mean, mean.numpy())
    rng = np.random.default_rng(0)
    utterances = [rng.normal(-4.0, 2.0, size=(n, 40)).astype(np.float32) for n in (30, 54)]
    shard = FeatureShard.build([(f, [1, 2]) for f in utterances])
    batch = mean_normalise(make_batch(shard, [0, 1], subsampling=6), norm)
    for b, feats in enumerate(utterances):
        n = len(feats) // 6 * 6
        expected = RunningMeanNorm(norm).apply(feats.astype(np.float16).astype(np.float32))[:n]
        assert np.array_equal(batch.feats[b, :n].numpy(), expected)
