from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="training extra (torch) not installed")

from training.model import ModelConfig, Transducer  # noqa: E402
from training.sparsity import GradualPruner, schedule, zero_fraction  # noqa: E402

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
