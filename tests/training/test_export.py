"""Parity of the int8 TFLite export with the float model (a tiny random-weight RNN-T, pruned by magnitude).

One export (about 15 s on two busy cores) serves every test in this file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from recognizer_model import speech_like
from torch import nn

from daemon.frontend import Frontend
from daemon.tflite import (
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    JOINER_INPUTS,
    JOINER_OUTPUTS,
    PREDICTOR_INPUTS,
    PREDICTOR_OUTPUTS,
    Graph,
)
from training.export import (
    TfliteGraphs,
    count_zero_weights,
    export_tflite,
    feature_mean,
    float_reference,
    int8_weight_tensors,
    tflite_reference,
)
from training.model import ModelConfig, Transducer

logger = logging.getLogger(__name__)

TINY = ModelConfig(
    dim=48, blocks_low=1, blocks_high=2, expand=2, embed_dim=24, pred_dim=48, joint_dim=48, chunk_frames=4
)
PRUNE_FRACTION = 0.6
CLEAR_MARGIN = 0.05  # of the spread (max - min) of a row of logits


def _prune_by_magnitude(model: nn.Module, fraction: float) -> None:
    """Zero the smallest ``fraction`` of every weight matrix (what the training recipe's pruning does)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() < 2 or "embed" in name:
                continue
            threshold = param.abs().flatten().kthvalue(int(fraction * param.numel())).values
            param[param.abs() <= threshold] = 0.0


@pytest.fixture(scope="module")
def features() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    frontend = Frontend()
    return [frontend.compute(speech_like(rng, rng.uniform(1.5, 3.0))) for _ in range(6)]


@pytest.fixture(scope="module")
def model(features: list[np.ndarray]) -> Transducer:
    torch.manual_seed(3)
    model = Transducer(TINY).eval()
    stacked = np.concatenate(features, axis=0)
    encoder = model.encoder
    encoder.feat_mean = torch.from_numpy(stacked.mean(axis=0))
    encoder.feat_inv_std = torch.from_numpy(1.0 / (stacked.std(axis=0) + 1e-5))
    with torch.no_grad():  # a non-trivial LayerNorm, as after training
        for block in [*model.encoder.low, *model.encoder.high]:
            block.norm.weight.uniform_(0.5, 1.5)
            block.norm.bias.uniform_(-0.2, 0.2)
    _prune_by_magnitude(model, PRUNE_FRACTION)
    return model


@pytest.fixture(scope="module")
def exported(
    model: Transducer, features: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out_dir = tmp_path_factory.mktemp("tflite")
    # Calibrate on the first four utterances; the parity tests use the other two.
    return export_tflite(model, features[:4], out_dir, max_predictor_steps=300, max_joiner_batches=100)


@pytest.fixture(scope="module")
def graphs(exported: dict[str, Path]) -> TfliteGraphs:
    return TfliteGraphs.load(exported["encoder"].parent, num_threads=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def test_three_graphs_with_stable_float_io(exported: dict[str, Path]) -> None:
    expected = {
        "encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS),
        "predictor": (PREDICTOR_INPUTS, PREDICTOR_OUTPUTS),
        "joiner": (JOINER_INPUTS, JOINER_OUTPUTS),
    }
    assert set(exported) == set(expected)
    for name, (inputs, outputs) in expected.items():
        graph = Graph(exported[name])
        assert set(graph.inputs) == set(inputs), name
        assert set(graph.outputs) == set(outputs), name
        for spec in [*graph.inputs.values(), *graph.outputs.values()]:
            want = np.int32 if spec.name == "token" else np.float32
            assert spec.dtype == np.dtype(want) and not spec.quantized, (name, spec)
    encoder = Graph(exported["encoder"])
    assert encoder.input_shape("feats") == (1, TINY.chunk_features, TINY.n_mels)
    assert encoder.input_shape("state") == (1, TINY.n_blocks, TINY.kernel - 1, TINY.dim)


def test_weights_are_int8_and_pruned_zeros_survive(exported: dict[str, Path]) -> None:
    for name, path in exported.items():
        weights = [w for w in int8_weight_tensors(path) if w.values.ndim >= 2]
        assert weights, f"{name}: no int8 weight matrices"
        for weight in weights:
            assert np.all(weight.zero_points == 0), f"{name}: {weight.name} is not symmetric"
            assert weight.scales.size == weight.values.shape[weight.channel_axis], "not per-channel"
        zeros, total = count_zero_weights(path)
        logger.info("%s: %d of %d int8 weights are zero", name, zeros, total)
        assert zeros / total >= 0.5, f"{name}: only {zeros}/{total} weights are zero"


def test_encoder_streaming_parity(
    model: Transducer, graphs: TfliteGraphs, features: list[np.ndarray]
) -> None:
    for feats in features[4:]:
        want = float_reference(model, feats).enc
        got = tflite_reference(graphs, model, feats).enc
        assert got.shape == want.shape
        cosine = _cosine(got, want)
        max_abs = float(np.abs(got - want).max())
        relative = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        logger.info("encoder: max abs %.4f, relative %.4f, min cosine %.5f", max_abs, relative, cosine.min())
        assert cosine.min() > 0.99, f"min cosine {cosine.min():.4f} (max abs {max_abs:.4f})"
        assert relative < 0.1, f"relative error {relative:.4f}"


def test_predictor_and_joiner_parity(
    model: Transducer, graphs: TfliteGraphs, features: list[np.ndarray]
) -> None:
    """Teacher-forced on the float model's transcript, so one early disagreement does not cascade."""
    agree = 0
    total = 0
    clear_agree = 0  # decisions whose float top-1 margin is at least CLEAR_MARGIN of the logits' spread
    clear_total = 0
    for feats in features[4:]:
        reference = float_reference(model, feats)
        enc_tfl = graphs.encode(feats, model.cfg, feature_mean(model))
        h = np.zeros(TINY.pred_dim, np.float32)
        c = np.zeros(TINY.pred_dim, np.float32)
        h_t, c_t = torch.zeros(1, TINY.pred_dim), torch.zeros(1, TINY.pred_dim)
        preds_tfl, preds_ref = [], []
        for token in [0, *reference.tokens[:40]]:
            pred, h, c = graphs.step(token, h, c)
            with torch.no_grad():
                pred_t, h_t, c_t = model.predictor.step(torch.tensor([token]), h_t, c_t)
            preds_tfl.append(pred)
            preds_ref.append(pred_t[0].numpy())
        cosine = _cosine(np.stack(preds_tfl), np.stack(preds_ref))
        assert cosine.min() > 0.99, f"predictor min cosine {cosine.min():.4f}"
        # Every frame against every predictor output, through the joiner, 8 at a time (the beam layout).
        pairs = [(t, u) for t in range(len(enc_tfl)) for u in range(len(preds_tfl))]
        for start in range(0, len(pairs), 8):
            batch = pairs[start : start + 8]
            logits = graphs.joiner.run(
                enc=np.stack([enc_tfl[t] for t, _ in batch]), pred=np.stack([preds_tfl[u] for _, u in batch])
            )["logits"]
            with torch.no_grad():
                want = model.joiner(
                    torch.from_numpy(np.stack([reference.enc[t] for t, _ in batch])),
                    torch.from_numpy(np.stack([preds_ref[u] for _, u in batch])),
                ).numpy()
            same = logits.argmax(-1) == want.argmax(-1)
            top2 = np.sort(want, axis=-1)[:, -2:]
            spread = want.max(axis=-1) - want.min(axis=-1)
            clear = top2[:, 1] - top2[:, 0] >= CLEAR_MARGIN * spread
            agree += int(np.count_nonzero(same))
            total += len(batch)
            clear_agree += int(np.count_nonzero(same & clear))
            clear_total += int(np.count_nonzero(clear))
    logger.info(
        "joiner argmax agreement %d/%d, on clear decisions %d/%d", agree, total, clear_agree, clear_total
    )
    # A random-weight model has many near-ties, which int8 may flip; clear decisions must not flip.
    assert agree / total > 0.9, f"joiner argmax agrees on {agree}/{total}"
    assert clear_total > total // 4 and clear_agree / clear_total > 0.99, f"{clear_agree}/{clear_total}"


def test_joiner_batch_is_resizable(graphs: TfliteGraphs) -> None:
    rng = np.random.default_rng(1)
    enc = rng.normal(size=(8, TINY.joint_dim)).astype(np.float32)
    pred = rng.normal(size=(8, TINY.joint_dim)).astype(np.float32)
    full = graphs.joiner.run(enc=enc, pred=pred)["logits"]
    assert full.shape == (8, TINY.vocab_size)
    for n in (3, 1, 8):
        part = graphs.joiner.run(enc=enc[:n], pred=pred[:n])["logits"]
        np.testing.assert_allclose(part, full[:n], atol=1e-6)


def test_greedy_transcripts_mostly_agree(
    model: Transducer, graphs: TfliteGraphs, features: list[np.ndarray]
) -> None:
    for feats in features[4:]:
        want = float_reference(model, feats).tokens
        got = tflite_reference(graphs, model, feats).tokens
        same_prefix = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), None)
        logger.info(
            "greedy: float %d tokens, tflite %d, first difference at %s", len(want), len(got), same_prefix
        )
        assert abs(len(want) - len(got)) <= max(2, len(want) // 10)


def test_export_rejects_bad_calibration(model: Transducer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        export_tflite(model, [], tmp_path)
    with pytest.raises(ValueError, match="token sequences"):
        export_tflite(model, [np.zeros((48, TINY.n_mels), np.float32)], tmp_path, calibration_tokens=[])
