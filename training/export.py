"""Export the RNN-T as three int8 TFLite graphs (encoder, predictor, joiner) and check them against torch.

Quantisation is PT2E *static* int8: weights per-channel symmetric (zero point 0), activations per-tensor,
calibrated on real feature chunks. The encoder is calibrated by streaming each calibration utterance chunk by
chunk, so the state input sees the values it sees on the device; the predictor and joiner are calibrated on
the states and outputs those utterances produce along their token sequences (given, or greedy-decoded with
the float model). Dynamic int8 is not used: its FULLY_CONNECTED v12 does not load in tflite-runtime 2.14.

Graph inputs and outputs stay float32 (quantize/dequantize happen inside the graph): with int8 I/O a
streaming state's input and output get different quantization parameters. Tensor names and shapes are
documented in ``daemon/tflite.py``, which runs the graphs on the device.

Layers the int8 quantizer does not cover stay float inside the graphs: LayerNorm, the residual adds, ReLU
after a linear, the LSTM gate nonlinearities and the token embedding (a small float table).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from daemon.tflite import (
    ENCODER_FILE,
    JOINER_FILE,
    PREDICTOR_FILE,
    Graph,
)
from training.model import ModelConfig, Transducer

logger = logging.getLogger(__name__)

JOINER_EXPORT_BATCH = 8  # the joiner's batch is resizable; this is only the traced size
MAX_SYMBOLS_PER_FRAME = 5  # greedy decoding: emissions allowed before moving to the next frame


# --- export-only wrappers: named inputs and outputs, same maths as training/model.py ---


class EncoderGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, feats: torch.Tensor, state: torch.Tensor) -> dict[str, torch.Tensor]:
        enc, state_out = self.encoder(feats, state)
        return {"enc": enc, "state_out": state_out}


class PredictorGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.predictor = model.predictor

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> dict[str, torch.Tensor]:
        pred, h_out, c_out = self.predictor.step(token, h, c)
        return {"pred": pred, "h_out": h_out, "c_out": c_out}


class JoinerGraph(nn.Module):
    def __init__(self, model: Transducer) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.joiner(enc, pred)}


# --- streaming and greedy decoding, shared by the float and the TFLite references ---


def feature_chunks(feats: np.ndarray, cfg: ModelConfig, pad_value: np.ndarray) -> Iterator[np.ndarray]:
    """(T, n_mels) -> chunks (1, chunk_features, n_mels); the last one is padded with ``pad_value``.

    ``pad_value`` should be the feature mean (it normalises to zero).
    """
    if feats.ndim != 2 or feats.shape[1] != cfg.n_mels:
        raise ValueError(f"features must be (T, {cfg.n_mels}), got {feats.shape}")
    size = cfg.chunk_features
    for start in range(0, feats.shape[0], size):
        chunk = feats[start : start + size].astype(np.float32)
        if chunk.shape[0] < size:
            pad = np.broadcast_to(pad_value.astype(np.float32), (size - chunk.shape[0], cfg.n_mels))
            chunk = np.concatenate([chunk, pad], axis=0)
        yield chunk[None]


def feature_mean(model: Transducer) -> np.ndarray:
    """The encoder's feature mean (n_mels,): the value that pads a last partial chunk."""
    mean = cast(torch.Tensor, model.encoder.feat_mean)  # a registered buffer
    return mean.detach().cpu().numpy().astype(np.float32)


# step(token, h, c) -> (pred (joint_dim,), h, c); joint(enc (joint_dim,), pred (joint_dim,)) -> logits
PredictorStep = Callable[[int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
JointFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def greedy_decode(enc: np.ndarray, step: PredictorStep, joint: JointFn, pred_dim: int) -> tuple[int, ...]:
    """Greedy RNN-T decoding of encoder frames (T, joint_dim); blank is token 0."""
    h = np.zeros(pred_dim, dtype=np.float32)
    c = np.zeros(pred_dim, dtype=np.float32)
    pred, h, c = step(0, h, c)
    tokens: list[int] = []
    for frame in enc:
        for _ in range(MAX_SYMBOLS_PER_FRAME):
            best = int(np.argmax(joint(frame, pred)))
            if best == 0:
                break
            tokens.append(best)
            pred, h, c = step(best, h, c)
    return tuple(tokens)


@dataclass(frozen=True)
class Reference:
    """What a model makes of one utterance: streamed encoder frames and the greedy transcript."""

    enc: np.ndarray  # (frames, joint_dim) float32
    tokens: tuple[int, ...]


def _float_encode(model: Transducer, feats: np.ndarray) -> np.ndarray:
    encoder = model.encoder
    pad = feature_mean(model)
    state = encoder.initial_state(1)
    frames = []
    with torch.no_grad():
        for chunk in feature_chunks(feats, model.cfg, pad):
            enc, state = encoder(torch.from_numpy(chunk), state)
            frames.append(enc[0].numpy())
    return np.concatenate(frames, axis=0)


def _float_step(model: Transducer) -> PredictorStep:
    def step(token: int, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            pred, h_t, c_t = model.predictor.step(
                torch.tensor([token]), torch.from_numpy(h[None]), torch.from_numpy(c[None])
            )
        return pred[0].numpy(), h_t[0].numpy(), c_t[0].numpy()

    return step


def _float_joint(model: Transducer) -> JointFn:
    def joint(enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.joiner(torch.from_numpy(enc), torch.from_numpy(pred)).numpy()

    return joint


def float_reference(model: Transducer, feats: np.ndarray) -> Reference:
    """The float model streamed chunk by chunk over ``feats`` (T, n_mels) and greedy-decoded."""
    model.eval()
    enc = _float_encode(model, feats)
    tokens = greedy_decode(enc, _float_step(model), _float_joint(model), model.cfg.pred_dim)
    return Reference(enc=enc, tokens=tokens)


@dataclass
class TfliteGraphs:
    """The three exported graphs, loaded for running (see daemon/tflite.py for names and shapes)."""

    encoder: Graph
    predictor: Graph
    joiner: Graph

    @classmethod
    def load(cls, model_dir: Path, num_threads: int = 1) -> TfliteGraphs:
        return cls(
            encoder=Graph(model_dir / ENCODER_FILE, num_threads),
            predictor=Graph(model_dir / PREDICTOR_FILE, num_threads),
            joiner=Graph(model_dir / JOINER_FILE, num_threads),
        )

    def encode(self, feats: np.ndarray, cfg: ModelConfig, feat_mean: np.ndarray) -> np.ndarray:
        state = np.zeros(self.encoder.input_shape("state"), dtype=np.float32)
        frames = []
        for chunk in feature_chunks(feats, cfg, feat_mean):
            out = self.encoder.run(feats=chunk, state=state)
            state = out["state_out"]
            frames.append(out["enc"][0])
        return np.concatenate(frames, axis=0)

    def step(self, token: int, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = self.predictor.run(token=np.array([token], dtype=np.int32), h=h[None], c=c[None])
        return out["pred"][0], out["h_out"][0], out["c_out"][0]

    def joint(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return self.joiner.run(enc=enc[None], pred=pred[None])["logits"][0]


def tflite_reference(graphs: TfliteGraphs, model: Transducer, feats: np.ndarray) -> Reference:
    """Like :func:`float_reference`, through the exported graphs (``model`` gives config and feature mean)."""
    feat_mean = feature_mean(model)
    enc = graphs.encode(feats, model.cfg, feat_mean)
    tokens = greedy_decode(enc, graphs.step, graphs.joint, model.cfg.pred_dim)
    return Reference(enc=enc, tokens=tokens)


# --- calibration data ---


@dataclass(frozen=True)
class _Calibration:
    encoder: list[dict[str, torch.Tensor]]
    predictor: list[dict[str, torch.Tensor]]
    joiner: list[dict[str, torch.Tensor]]


def _spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spread over the list."""
    if len(items) <= limit:
        return items
    keep = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in keep]


def _calibration_data(
    model: Transducer,
    calibration_feats: Sequence[np.ndarray],
    calibration_tokens: Sequence[Sequence[int]] | None,
    max_encoder_chunks: int,
    max_predictor_steps: int,
    max_joiner_batches: int,
) -> _Calibration:
    cfg = model.cfg
    pad = feature_mean(model)
    encoder_inputs: list[dict[str, torch.Tensor]] = []
    predictor_inputs: list[dict[str, torch.Tensor]] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.no_grad():
        for n, feats in enumerate(calibration_feats):
            state = model.encoder.initial_state(1)
            frames = []
            for chunk in feature_chunks(feats, cfg, pad):
                chunk_t = torch.from_numpy(chunk)
                encoder_inputs.append({"feats": chunk_t, "state": state})
                enc, state = model.encoder(chunk_t, state)
                frames.append(enc[0].numpy())
            enc_np = np.concatenate(frames, axis=0)
            if calibration_tokens is not None:
                tokens: Sequence[int] = calibration_tokens[n]
            else:
                tokens = greedy_decode(enc_np, _float_step(model), _float_joint(model), cfg.pred_dim)
            h = torch.zeros(1, cfg.pred_dim)
            c = torch.zeros(1, cfg.pred_dim)
            preds = []
            for token in [0, *tokens]:
                token_t = torch.tensor([token], dtype=torch.int32)
                predictor_inputs.append({"token": token_t, "h": h, "c": c})
                pred, h, c = model.predictor.step(token_t, h, c)
                preds.append(pred[0].numpy())
            # Pair each frame with predictor outputs near a linear alignment (what decoding roughly visits).
            n_pred = len(preds)
            for t, frame in enumerate(enc_np):
                u = round(t * (n_pred - 1) / max(len(enc_np) - 1, 1))
                for v in {max(u - 1, 0), u, min(u + 1, n_pred - 1)}:
                    pairs.append((frame, preds[v]))
    pairs = _spread(pairs, max_joiner_batches * JOINER_EXPORT_BATCH)
    joiner_inputs = []
    for start in range(0, len(pairs) - JOINER_EXPORT_BATCH + 1, JOINER_EXPORT_BATCH):
        batch = pairs[start : start + JOINER_EXPORT_BATCH]
        joiner_inputs.append(
            {
                "enc": torch.from_numpy(np.stack([e for e, _ in batch])),
                "pred": torch.from_numpy(np.stack([p for _, p in batch])),
            }
        )
    return _Calibration(
        encoder=_spread(encoder_inputs, max_encoder_chunks),
        predictor=_spread(predictor_inputs, max_predictor_steps),
        joiner=joiner_inputs,
    )


# --- conversion ---


@contextlib.contextmanager
def _strict_qdq_conversion() -> Iterator[None]:
    """Ask the converter to keep quantize/dequantize exactly where PT2E put them.

    litert-torch 0.10's default (non-strict) conversion folds the first quantize and last dequantize into
    the graph's inputs and outputs, which gives int8 I/O with different parameters for a state's input and
    output. Strict mode (the default of its newer V2 converter, which needs TensorFlow) keeps float I/O.
    It has no public flag in the V1 path, so the config is set on its way into the converter passes.
    """
    from litert_torch._convert import litert_converter

    ext = litert_converter.converter_api_ext
    original = ext.run_convert_to_tfl_passes

    def run_passes(module: Any, pass_manager: Any, config: Any) -> Any:
        config.strict_qdq_mode = True
        return original(module, pass_manager, config)

    ext.run_convert_to_tfl_passes = run_passes
    try:
        yield
    finally:
        ext.run_convert_to_tfl_passes = original


def _convert_static_int8(
    module: nn.Module,
    sample: dict[str, torch.Tensor],
    calibration: Sequence[dict[str, torch.Tensor]],
    out_path: Path,
    dynamic_shapes: dict[str, Any] | None = None,
) -> Path:
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ValueError(f"{out_path.name}: no calibration data (are the calibration utterances empty?)")
    litert_torch.config.show_progress = False
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
    )
    exported = torch.export.export(module.eval(), (), sample, dynamic_shapes=dynamic_shapes).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for inputs in calibration:
            prepared(**inputs)
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    quantized.training = False  # the flag the converter checks; the graph itself is already in eval form
    with _strict_qdq_conversion():
        edge = litert_torch.convert(
            quantized,
            sample_kwargs=sample,
            quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer),
            dynamic_shapes=dynamic_shapes,
        )
    edge.export(str(out_path))
    logger.info(
        "wrote %s (%d bytes, calibrated on %d inputs)", out_path, out_path.stat().st_size, len(calibration)
    )
    return out_path


def export_tflite(
    model: Transducer,
    calibration_feats: Sequence[np.ndarray],
    out_dir: Path,
    calibration_tokens: Sequence[Sequence[int]] | None = None,
    *,
    max_encoder_chunks: int = 2000,
    max_predictor_steps: int = 2000,
    max_joiner_batches: int = 500,
) -> dict[str, Path]:
    """Write ``encoder.tflite``, ``predictor.tflite`` and ``joiner.tflite`` (static int8) to ``out_dir``.

    ``calibration_feats``: log-mel features (T, n_mels) of real utterances (a few dozen suffice).
    ``calibration_tokens``: their token sequences (without blanks), one per utterance; when left out, the
    float model's greedy transcripts are used. The ``max_*`` limits spread calibration evenly over the data.
    Returns the paths by graph name: ``encoder``, ``predictor``, ``joiner``.
    """
    if not calibration_feats:
        raise ValueError("calibration_feats is empty")
    if calibration_tokens is not None and len(calibration_tokens) != len(calibration_feats):
        raise ValueError(
            f"{len(calibration_tokens)} token sequences for {len(calibration_feats)} calibration utterances"
        )
    cfg = model.cfg
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration = _calibration_data(
        model,
        calibration_feats,
        calibration_tokens,
        max_encoder_chunks,
        max_predictor_steps,
        max_joiner_batches,
    )
    encoder_sample = {
        "feats": torch.zeros(1, cfg.chunk_features, cfg.n_mels),
        "state": model.encoder.initial_state(1),
    }
    predictor_sample = {
        "token": torch.zeros(1, dtype=torch.int32),
        "h": torch.zeros(1, cfg.pred_dim),
        "c": torch.zeros(1, cfg.pred_dim),
    }
    joiner_sample = {
        "enc": torch.zeros(JOINER_EXPORT_BATCH, cfg.joint_dim),
        "pred": torch.zeros(JOINER_EXPORT_BATCH, cfg.joint_dim),
    }
    batch = torch.export.Dim("batch", min=1, max=1024)
    return {
        "encoder": _convert_static_int8(
            EncoderGraph(model), encoder_sample, calibration.encoder, out_dir / ENCODER_FILE
        ),
        "predictor": _convert_static_int8(
            PredictorGraph(model), predictor_sample, calibration.predictor, out_dir / PREDICTOR_FILE
        ),
        "joiner": _convert_static_int8(
            JoinerGraph(model),
            joiner_sample,
            calibration.joiner,
            out_dir / JOINER_FILE,
            dynamic_shapes={"enc": {0: batch}, "pred": {0: batch}},
        ),
    }


# --- weight inspection ---


@dataclass(frozen=True)
class WeightTensor:
    """A constant int8 tensor of a .tflite file: a quantized weight."""

    name: str
    values: np.ndarray  # int8
    zero_points: np.ndarray  # int64, one per channel (or one)
    scales: np.ndarray  # float32
    channel_axis: int  # the axis the per-channel parameters run along


def int8_weight_tensors(tflite_path: Path) -> list[WeightTensor]:
    """Every constant int8 tensor of the model, read from its flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    data = tflite_path.read_bytes()
    fb_model = schema.Model.GetRootAs(data, 0)
    weights = []
    for s in range(fb_model.SubgraphsLength()):
        subgraph = fb_model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            if tensor.Type() != schema.TensorType.INT8:
                continue
            buffer = fb_model.Buffers(tensor.Buffer())
            if buffer is None:
                continue
            if buffer.DataLength() > 0:
                raw = buffer.DataAsNumpy().tobytes()
            elif buffer.Offset() > 1:  # stored after the flatbuffer (large models)
                raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            else:
                continue  # an activation, no constant data
            quant = tensor.Quantization()
            zero_points = np.zeros(1, dtype=np.int64)
            scales = np.zeros(1, dtype=np.float32)
            axis = 0
            if quant is not None and quant.ZeroPointLength() > 0:
                zero_points = quant.ZeroPointAsNumpy().astype(np.int64)
                scales = quant.ScaleAsNumpy().astype(np.float32)
                axis = int(quant.QuantizedDimension())
            name = tensor.Name()
            weights.append(
                WeightTensor(
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    values=np.frombuffer(raw, dtype=np.int8).reshape(tensor.ShapeAsNumpy()),
                    zero_points=zero_points,
                    scales=scales,
                    channel_axis=axis,
                )
            )
    return weights


def count_zero_weights(tflite_path: Path) -> tuple[int, int]:
    """(weights that are exactly zero, all weights) over the int8 weight tensors of a .tflite file.

    A weight counts as zero when its stored value equals its zero point (it dequantizes to exactly 0.0);
    the exporter's weights are symmetric, so that zero point is 0. Float constants (LayerNorm, the
    embedding table) and int32 biases are not counted.
    """
    zeros = 0
    total = 0
    for weight in int8_weight_tensors(tflite_path):
        total += weight.values.size
        if np.all(weight.zero_points == 0):
            zeros += int(np.count_nonzero(weight.values == 0))
            continue
        # An asymmetric constant: a quantized activation-side constant such as the feature normaliser.
        logger.debug("%s: %s has non-zero zero points", tflite_path.name, weight.name)
        if weight.zero_points.size == 1:
            zeros += int(np.count_nonzero(weight.values == weight.zero_points[0]))
        else:
            shape = [1] * weight.values.ndim
            shape[weight.channel_axis] = -1
            zeros += int(np.count_nonzero(weight.values == weight.zero_points.reshape(shape)))
    return zeros, total
