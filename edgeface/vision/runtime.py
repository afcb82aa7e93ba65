"""TFLite interpreter loading: LiteRT (``ai_edge_litert``) first, ``tflite_runtime`` as a fallback.

Wraps one model with its manifest entry: checks tensor shapes against the manifest so a wrong file
fails at start with a message naming it, not with a shape error deep in numpy per frame.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeface.errors import ModelError
from edgeface.vision.manifest import ModelSpec, model_path

_LOGGER = logging.getLogger(__name__)


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)") from exc
    return Interpreter


class TFLiteModel:
    """One loaded model: ``run(x)`` feeds input 0 and returns every output, in output-index order."""

    def __init__(self, models_dir: Path, spec: ModelSpec, threads: int = 1, *, verify: bool = True) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        path = model_path(models_dir, spec, verify=verify)
        try:
            self._interp = _interpreter_class()(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model file {path} ({spec.id}) cannot be loaded: {exc}") from exc
        inp = self._interp.get_input_details()[0]
        self._input_index = int(inp["index"])
        self.input_dtype = np.dtype(inp["dtype"])
        scale, zero = inp.get("quantization", (0.0, 0))
        self.input_quant: tuple[float, int] = (float(scale), int(zero))
        shape = tuple(int(v) for v in inp["shape"])
        expected = (spec.input.height, spec.input.width, spec.input.channels)
        if len(shape) != 4 or shape[1:] != expected:
            raise ModelError(f"model file {path} ({spec.id}): input shape {shape}, manifest says (N, {expected})")
        self.batch = shape[0]
        self._outputs = sorted(self._interp.get_output_details(), key=lambda d: int(d["index"]))
        _LOGGER.debug("loaded %s from %s (%d threads)", spec.id, path, threads)

    @property
    def output_details(self) -> list[dict[str, Any]]:
        return list(self._outputs)

    def run(self, x: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        """Invoke on ``x`` (already in the input dtype) and return copies of all outputs.

        Thread-safe: one lock per interpreter, so threads that call a model rarely (the pipeline's
        embed stage and the command thread's enrollments) share one copy of its packed weights.
        """
        with self._lock:
            self._interp.set_tensor(self._input_index, x)
            self._interp.invoke()
            return [self._interp.get_tensor(int(d["index"])).copy() for d in self._outputs]

    def dequantize(self, values: npt.NDArray[Any], detail: dict[str, Any]) -> npt.NDArray[np.float32]:
        """Float values of a (possibly quantized) output tensor."""
        scale, zero = detail.get("quantization", (0.0, 0))
        out: npt.NDArray[np.float32] = values.astype(np.float32)
        if scale:
            out = (out - np.float32(zero)) * np.float32(scale)
        return out
