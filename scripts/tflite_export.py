"""Convert rebuilt networks to TFLite (float32, dynamic-range, full int8, int8 weights) and measure them."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings

# "int8-weights" is not a converter mode: ``dequantized_weights`` derives it from a dynamic-range export.
Quantization = Literal["none", "dynamic-range", "int8-full", "int8-weights"]

TIMING_WARMUP = 5
TIMING_RUNS = 30  # median of 30 single-chip runs: stable to ~0.1 ms on an idle 2-core box


def convert(
    fn: Callable[[tf.Tensor], tf.Tensor], quantization: Quantization, calibration: Array | None = None
) -> bytes:
    """TFLite flatbuffer of ``fn``; ``int8-full`` needs normalised float32 ``calibration`` chips ``[N, 150, 150, 3]``.

    Input and output stay float32 in every variant: the int8 model quantizes its input in its first op,
    so the runtime feeds all models the same normalised chip.
    """
    if quantization == "int8-weights":
        raise ValueError("int8-weights is built from a dynamic-range export by dequantized_weights")
    concrete = fn.get_concrete_function()  # type: ignore[attr-defined]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8-full":
        if calibration is None:
            raise ValueError("int8-full quantization needs calibration chips")
        chips = calibration.astype(np.float32)

        def representative() -> Iterator[list[Array]]:
            for chip in chips:
                yield [chip[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # Raised because inference_input_type stays float32 on purpose (see the docstring).
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected", UserWarning)
        return bytes(converter.convert())


def read_graph(model: bytes) -> tuple[Any, list[int]]:
    """A TFLite flatbuffer as its mutable object tree, and the builtin op of each of its operator codes."""
    from tensorflow.lite.tools import flatbuffer_utils  # models extra only

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    return tree, [max(c.builtinCode, c.deprecatedBuiltinCode) for c in tree.operatorCodes]


def write_graph(tree: Any) -> bytes:
    """The flatbuffer of an object tree from ``read_graph``."""
    from tensorflow.lite.tools import flatbuffer_utils  # models extra only

    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def float_depthwise(model: bytes) -> bytes:
    """``model`` with every int8 depthwise filter of a dynamic-range graph dequantized back to float32.

    XNNPACK runs dynamic-range (int8-weight) convolutions and fully connected layers on their int8
    weights but has no such depthwise kernel, so each hybrid depthwise conv ran on LiteRT's own
    kernels and split the graph into partitions whose boundary tensors exist twice. On SFace (13
    depthwise convs, 0.5 % of its weights) that cost 3.5 MB of resident memory and 2.4 of 7.5 ms per
    chip; with float depthwise filters the graph stays in XNNPACK, and the output comes closer to
    the float model (those layers are no longer rounded).
    """
    from tensorflow.lite.python import schema_py_generated as schema  # models extra only

    tree, codes = read_graph(model)
    for graph in tree.subgraphs:
        for op in graph.operators:
            if codes[op.opcodeIndex] != schema.BuiltinOperator.DEPTHWISE_CONV_2D:
                continue
            tensor = graph.tensors[op.inputs[1]]
            if tensor.type != schema.TensorType.INT8:
                continue
            params = tensor.quantization
            buffer = tree.buffers[tensor.buffer]
            q = np.frombuffer(bytes(bytearray(buffer.data)), dtype=np.int8).reshape(tensor.shape)
            shape = [1] * q.ndim
            shape[params.quantizedDimension] = -1
            w = q.astype(np.float32) * np.asarray(params.scale, np.float32).reshape(shape)
            buffer.data = np.frombuffer(w.tobytes(), dtype=np.uint8)
            tensor.type = schema.TensorType.FLOAT32
            tensor.quantization = None
    return write_graph(tree)


def dequantized_weights(model: bytes) -> bytes:
    """``model`` (a dynamic-range graph) with each int8 weight read through a DEQUANTIZE op: int8 file, float32 maths.

    A dynamic-range (hybrid) kernel quantizes its input to int8 on every invoke; on MiniFASNet that moves a
    probability near the decision boundary as much as the weight rounding does (docs/models.md). Here each
    convolution and matrix whose weights the converter stored as int8 gets them from a DEQUANTIZE op instead,
    so it computes in float32 on the dequantized weights. LiteRT and XNNPACK dequantize such constant weights
    once, when the model is prepared (as for float16 weights), so the file keeps int8's size and the runtime
    float32's speed. The weights keep their per-channel scales; nothing is re-rounded.
    """
    from tensorflow.lite.python import schema_py_generated as schema  # models extra only

    weighted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED}
    tree, codes = read_graph(model)
    dequantize = schema.OperatorCodeT()
    dequantize.builtinCode = dequantize.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    dequantize.version = 4  # the DEQUANTIZE version that reads per-channel int8
    tree.operatorCodes.append(dequantize)
    dequantize_index = len(tree.operatorCodes) - 1
    for graph in tree.subgraphs:
        operators = []
        for op in graph.operators:
            weights = graph.tensors[op.inputs[1]] if codes[op.opcodeIndex] in weighted else None
            if weights is not None and weights.type == schema.TensorType.INT8:
                dequantized = schema.TensorT()
                dequantized.shape, dequantized.type = list(weights.shape), schema.TensorType.FLOAT32
                dequantized.name = bytes(weights.name or b"weights") + b"/dequantized"
                tree.buffers.append(schema.BufferT())
                dequantized.buffer = len(tree.buffers) - 1
                graph.tensors.append(dequantized)
                read = schema.OperatorT()
                read.opcodeIndex, read.inputs, read.outputs = dequantize_index, [op.inputs[1]], [len(graph.tensors) - 1]
                operators.append(read)
                op.inputs = [*op.inputs[:1], len(graph.tensors) - 1, *op.inputs[2:]]
                if hasattr(op.builtinOptions, "asymmetricQuantizeInputs"):
                    op.builtinOptions.asymmetricQuantizeInputs = False  # a hybrid-kernel option, now moot
            operators.append(op)
        graph.operators = operators
    return write_graph(tree)


def _interpreter(model: bytes, threads: int) -> Interpreter:
    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def run(model: bytes, chips: Array, threads: int = 2) -> Array:
    """Embeddings of normalised float32 chips ``[N, 150, 150, 3]``, one invoke per chip (as the runtime does)."""
    interpreter = _interpreter(model, threads)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    result = []
    for chip in chips:
        interpreter.set_tensor(inp["index"], chip[None].astype(np.float32))
        interpreter.invoke()
        result.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.array(result)


def ms_per_chip(model: bytes, chip: Array, threads: int) -> float:
    """Median milliseconds of one ``invoke`` on one chip (tensor copy included) with ``threads`` threads."""
    interpreter = _interpreter(model, threads)
    index = interpreter.get_input_details()[0]["index"]
    batch = chip[None].astype(np.float32)
    samples = []
    for i in range(TIMING_WARMUP + TIMING_RUNS):
        start = time.perf_counter()
        interpreter.set_tensor(index, batch)
        interpreter.invoke()
        if i >= TIMING_WARMUP:
            samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def cosine(a: Array, b: Array) -> Array:
    """Row-wise cosine similarity of two ``[N, D]`` arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)))


@dataclass(frozen=True)
class Measurement:
    """How one exported variant compares with dlib and how fast it runs."""

    quantization: Quantization
    bytes: int
    cosine_min: float
    cosine_mean: float
    ms_1_thread: float
    ms_2_threads: float

    def summary(self, against: str = "dlib") -> str:
        """One human-readable line; ``against`` names the reference the cosines were measured to."""
        return (
            f"{self.quantization:>13}: {self.bytes / 1e6:5.2f} MB  cosine vs {against} min {self.cosine_min:.5f} "
            f"mean {self.cosine_mean:.5f}  {self.ms_1_thread:.2f} ms (1 thread) {self.ms_2_threads:.2f} ms (2 threads)"
        )


def measure(model: bytes, quantization: Quantization, chips: Array, reference: Array) -> Measurement:
    """Compare ``model`` with dlib's ``reference`` descriptors on normalised ``chips`` and time it."""
    cos = cosine(run(model, chips), reference)
    return Measurement(
        quantization=quantization,
        bytes=len(model),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        ms_1_thread=ms_per_chip(model, chips[0], 1),
        ms_2_threads=ms_per_chip(model, chips[0], 2),
    )
