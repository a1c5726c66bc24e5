"""Running the exported RNN-T graphs with a TFLite interpreter (no torch on the device).

``ai-edge-litert`` is preferred (x86-64, aarch64; its XNNPACK runs int8 graphs); 32-bit Pi OS only has
``tflite-runtime``. Both have the same ``Interpreter`` class.

The exporter (``training/export.py``) writes three graphs whose tensors are addressed by these names:

* ``encoder.tflite``: ``feats`` (1, chunk_features, n_mels), ``state`` (1, n_blocks, kernel - 1, dim)
  -> ``enc`` (1, chunk_frames, joint_dim), ``state_out`` (same shape as ``state``). Feed ``state_out`` back
  as the next chunk's ``state``; start from zeros.
* ``predictor.tflite``: ``token`` (1,) int32, ``h``, ``c`` (1, pred_dim) -> ``pred`` (1, joint_dim),
  ``h_out``, ``c_out``. One hypothesis per call; start with token 0 (blank) and zero ``h``, ``c``.
* ``joiner.tflite``: ``enc``, ``pred`` (N, joint_dim) -> ``logits`` (N, vocab). The batch N is resizable:
  :class:`Graph` resizes it when a call brings a different N (a resize costs a re-allocation, so keep N fixed,
  e.g. padded to the beam width).

All of them take and return float32 (the weights and most activations inside are int8), but :class:`Graph`
also quantizes and dequantizes int8 inputs and outputs if a graph has them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.tflite"
PREDICTOR_FILE = "predictor.tflite"
JOINER_FILE = "joiner.tflite"

ENCODER_INPUTS = ("feats", "state")
ENCODER_OUTPUTS = ("enc", "state_out")
PREDICTOR_INPUTS = ("token", "h", "c")
PREDICTOR_OUTPUTS = ("pred", "h_out", "c_out")
JOINER_INPUTS = ("enc", "pred")
JOINER_OUTPUTS = ("logits",)

SIGNATURE_KEY = "serving_default"


class TFLiteError(RuntimeError):
    """A model file that cannot be loaded or run."""


def _interpreter_class() -> tuple[type[Any], str]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found,unused-ignore]

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found,unused-ignore]

        return Interpreter, "tflite-runtime"
    except ImportError as err:
        raise TFLiteError(
            "no TFLite interpreter is installed: install ai-edge-litert (x86-64, aarch64) "
            "or tflite-runtime with numpy<2 (armv7l)"
        ) from err


def load_interpreter(path: Path, num_threads: int) -> Any:
    """An allocated interpreter for the model at ``path``; raises :class:`TFLiteError` naming the file."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    interpreter_class, runtime = _interpreter_class()
    if not path.is_file():
        raise TFLiteError(f"{path}: no such model file")
    try:
        interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise TFLiteError(f"{path}: not a valid TFLite model for {runtime}: {err}") from err
    logger.debug("loaded %s with %s (%d threads)", path, runtime, num_threads)
    return interpreter


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: where it lives and how it is stored."""

    name: str
    index: int
    shape: tuple[int, ...]  # -1 where the dimension is resizable
    dtype: np.dtype[Any]
    scale: float  # 0.0 when the tensor is not quantized
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in (np.dtype(np.int8), np.dtype(np.uint8))


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    shape = detail.get("shape_signature", detail["shape"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        name=name,
        index=int(detail["index"]),
        shape=tuple(int(d) for d in shape),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


def _signature_specs(interpreter: Any) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """Inputs and outputs by signature name, or by tensor name for a model without a signature."""
    if SIGNATURE_KEY in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(SIGNATURE_KEY)
        ins = {name: _spec(name, d) for name, d in runner.get_input_details().items()}
        outs = {name: _spec(name, d) for name, d in runner.get_output_details().items()}
        return ins, outs
    ins = {d["name"]: _spec(d["name"], d) for d in interpreter.get_input_details()}
    outs = {d["name"]: _spec(d["name"], d) for d in interpreter.get_output_details()}
    return ins, outs


class Graph:
    """One TFLite graph called by tensor name: ``graph.run(feats=..., state=...)["enc"]``."""

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        self.path = path
        self.interpreter = load_interpreter(path, num_threads)
        self.inputs, self.outputs = _signature_specs(self.interpreter)
        self._shapes = {
            name: tuple(int(d) for d in self.interpreter.get_tensor(spec.index).shape)
            for name, spec in self.inputs.items()
        }

    def input_shape(self, name: str) -> tuple[int, ...]:
        """The shape the named input currently has (after any resize)."""
        return self._shapes[name]

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Invoke with every input given by name; returns every output by name (float32 unless integer)."""
        missing = self.inputs.keys() - inputs.keys()
        unknown = inputs.keys() - self.inputs.keys()
        if missing or unknown:
            raise ValueError(
                f"{self.path.name}: inputs are {sorted(self.inputs)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        self._resize_if_needed(inputs)
        for name, value in inputs.items():
            spec = self.inputs[name]
            self.interpreter.set_tensor(spec.index, self._to_tensor(spec, value))
        self.interpreter.invoke()
        return {name: self._from_tensor(spec) for name, spec in self.outputs.items()}

    def _resize_if_needed(self, inputs: dict[str, np.ndarray]) -> None:
        changed = False
        for name, value in inputs.items():
            shape = tuple(int(d) for d in np.shape(value))
            if shape == self._shapes[name]:
                continue
            spec = self.inputs[name]
            fixed_ok = len(shape) == len(spec.shape) and all(
                want in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
            )
            if not fixed_ok:
                raise ValueError(f"{self.path.name}: input {name!r} has shape {spec.shape}, got {shape}")
            self.interpreter.resize_tensor_input(spec.index, list(shape), strict=True)
            self._shapes[name] = shape
            changed = True
        if changed:
            self.interpreter.allocate_tensors()

    @staticmethod
    def _to_tensor(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            q = np.round(np.asarray(value, dtype=np.float32) / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(spec.dtype)
        return np.asarray(value, dtype=spec.dtype)

    def _from_tensor(self, spec: TensorSpec) -> np.ndarray:
        value = self.interpreter.get_tensor(spec.index)
        if spec.quantized:
            return (value.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
        return value  # get_tensor returns a copy, safe to keep across invokes
