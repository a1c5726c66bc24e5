"""The TFLite runtime wrapper on small models written here as flatbuffers (no torch, no converter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.tflite import Graph, TFLiteError, load_interpreter

schema = pytest.importorskip(
    "ai_edge_litert.schema_py_generated", reason="writing test models needs ai-edge-litert's schema"
)
flatbuffers = pytest.importorskip("flatbuffers", reason="writing test models needs flatbuffers")

IN_SCALE, IN_ZERO = 0.5, 3
OUT_SCALE, OUT_ZERO = 0.25, -2


def _tensor(
    name: str, shape: list[int], signature: list[int], dtype: int, quant: tuple[float, int] | None
) -> Any:
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = shape
    tensor.shapeSignature = signature
    tensor.type = dtype
    tensor.buffer = 0
    if quant is not None:
        params = schema.QuantizationParametersT()
        params.scale = [quant[0]]
        params.zeroPoint = [quant[1]]
        tensor.quantization = params
    return tensor


def _write_model(
    path: Path,
    tensors: list[Any],
    ops: list[tuple[int, list[int], list[int]]],
    inputs: dict[str, int],
    outputs: dict[str, int],
) -> Path:
    """A one-subgraph model; ``ops`` are (builtin operator, input tensors, output tensors)."""
    codes = sorted({op for op, _, _ in ops})
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    for code in codes:
        op_code = schema.OperatorCodeT()
        op_code.builtinCode = code
        op_code.deprecatedBuiltinCode = code
        op_code.version = 1
        model.operatorCodes.append(op_code)
    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = list(inputs.values())
    subgraph.outputs = list(outputs.values())
    subgraph.operators = []
    for code, ins, outs in ops:
        op = schema.OperatorT()
        op.opcodeIndex = codes.index(code)
        op.inputs = ins
        op.outputs = outs
        if code == schema.BuiltinOperator.ADD:
            op.builtinOptionsType = schema.BuiltinOptions.AddOptions
            op.builtinOptions = schema.AddOptionsT()
        subgraph.operators.append(op)
    model.subgraphs = [subgraph]
    signature = schema.SignatureDefT()
    signature.signatureKey = b"serving_default"
    signature.subgraphIndex = 0
    signature.inputs, signature.outputs = [], []
    for names, target in ((inputs, signature.inputs), (outputs, signature.outputs)):
        for name, index in names.items():
            entry = schema.TensorMapT()
            entry.name = name.encode()
            entry.tensorIndex = index
            target.append(entry)
    model.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


@pytest.fixture
def add_model(tmp_path: Path) -> Path:
    """sum = x + y, float, batch resizable; tensor names differ from signature names on purpose."""
    f32 = schema.TensorType.FLOAT32
    tensors = [
        _tensor("serving_default_x:0", [1, 4], [-1, 4], f32, None),
        _tensor("serving_default_y:0", [1, 4], [-1, 4], f32, None),
        _tensor("PartitionedCall:0", [1, 4], [-1, 4], f32, None),
    ]
    return _write_model(
        tmp_path / "add.tflite",
        tensors,
        [(schema.BuiltinOperator.ADD, [0, 1], [2])],
        {"x": 0, "y": 1},
        {"sum": 2},
    )


@pytest.fixture
def quantized_model(tmp_path: Path) -> Path:
    """int8 in -> dequantize -> quantize with other parameters -> int8 out (what int8 I/O looks like)."""
    i8, f32 = schema.TensorType.INT8, schema.TensorType.FLOAT32
    tensors = [
        _tensor("q_in", [1, 6], [1, 6], i8, (IN_SCALE, IN_ZERO)),
        _tensor("real", [1, 6], [1, 6], f32, None),
        _tensor("q_out", [1, 6], [1, 6], i8, (OUT_SCALE, OUT_ZERO)),
    ]
    ops = [(schema.BuiltinOperator.DEQUANTIZE, [0], [1]), (schema.BuiltinOperator.QUANTIZE, [1], [2])]
    return _write_model(tmp_path / "quant.tflite", tensors, ops, {"state": 0}, {"state_out": 2})


def test_runs_by_signature_name(add_model: Path) -> None:
    graph = Graph(add_model, num_threads=1)
    assert set(graph.inputs) == {"x", "y"} and set(graph.outputs) == {"sum"}
    x = np.arange(4, dtype=np.float32)[None]
    out = graph.run(x=x, y=np.full((1, 4), 0.5, np.float32))
    np.testing.assert_array_equal(out["sum"], x + 0.5)


def test_outputs_are_not_overwritten_by_the_next_call(add_model: Path) -> None:
    graph = Graph(add_model)
    first = graph.run(x=np.ones((1, 4), np.float32), y=np.ones((1, 4), np.float32))["sum"]
    graph.run(x=np.zeros((1, 4), np.float32), y=np.zeros((1, 4), np.float32))
    np.testing.assert_array_equal(first, np.full((1, 4), 2.0))


def test_resizes_a_resizable_batch(add_model: Path) -> None:
    graph = Graph(add_model)
    for batch in (3, 1, 5):
        x = np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)
        out = graph.run(x=x, y=x)["sum"]
        assert out.shape == (batch, 4)
        np.testing.assert_allclose(out, 2 * x)
        assert graph.input_shape("x") == (batch, 4)


def test_rejects_fixed_dimension_change_and_bad_names(add_model: Path) -> None:
    graph = Graph(add_model)
    with pytest.raises(ValueError, match="shape"):
        graph.run(x=np.zeros((1, 5), np.float32), y=np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="missing"):
        graph.run(x=np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="unknown"):
        graph.run(x=np.zeros((1, 4), np.float32), y=np.zeros((1, 4), np.float32), z=np.zeros(1))


def test_quantizes_and_dequantizes_int8_io(quantized_model: Path) -> None:
    graph = Graph(quantized_model)
    spec_in, spec_out = graph.inputs["state"], graph.outputs["state_out"]
    assert spec_in.quantized and spec_out.quantized
    assert (spec_in.scale, spec_in.zero_point) == (IN_SCALE, IN_ZERO)
    assert (spec_out.scale, spec_out.zero_point) == (OUT_SCALE, OUT_ZERO)
    state = np.array([[-3.0, -1.24, 0.0, 0.26, 7.5, 1000.0]], dtype=np.float32)
    out = graph.run(state=state)["state_out"]
    assert out.dtype == np.float32
    # Input grid 0.5, clipped to int8: 1000 -> (127 - 3) * 0.5 = 62; the output grid 0.25 then clips at 32.25.
    np.testing.assert_allclose(out, [[-3.0, -1.0, 0.0, 0.5, 7.5, 32.25]])


def test_names_the_file_when_it_is_not_a_model(tmp_path: Path) -> None:
    bogus = tmp_path / "encoder.tflite"
    bogus.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(TFLiteError, match=r"encoder\.tflite"):
        load_interpreter(bogus, num_threads=1)
    with pytest.raises(TFLiteError, match=r"missing\.tflite"):
        Graph(tmp_path / "missing.tflite")
