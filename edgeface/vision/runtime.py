"""TFLite interpreter loading: LiteRT (``ai_edge_litert``) first, ``tflite_runtime`` as a fallback.

Wraps one model with its manifest entry: checks tensor shapes against the manifest so a wrong file
fails at start with a message naming it, not with a shape error deep in numpy per frame.

Both runtimes map the model file into memory and XNNPACK copies the weights into its own packed
buffers while the interpreter is prepared (measured: ``allocate_tensors`` reads every page of the
file, a first ``invoke`` none more). From then on the file's pages are read only by the few
operators XNNPACK does not take, yet they stay resident: 20 MB of the default models' RSS
(SFace int8 alone 9.4 MB). ``release_file_pages`` hands them back once the interpreter is ready.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeface.errors import ModelError
from edgeface.pages import drop_pages, own_mappings
from edgeface.vision.manifest import ModelSpec, model_path

_LOGGER = logging.getLogger(__name__)


def release_file_pages(path: Path) -> int:
    """Drop this process's resident pages of every read-only mapping of ``path``; bytes advised.

    ``madvise(MADV_DONTNEED)`` on a read-only file mapping cannot lose data: a page read again
    faults back in from the page cache (or the file), so a later read still sees the file. Only
    mappings without write permission are touched, since dropping a private mapping's written
    pages would discard them. Returns 0 where there is no ``/proc/self/maps`` or no madvise
    (not Linux), and when the runtime read the file into its own heap instead of mapping it.
    """
    maps = own_mappings("maps")
    if maps is None:
        return 0
    target = os.path.realpath(path)
    advised = 0
    for line in maps.splitlines():
        # address perms offset dev inode pathname; the pathname may itself hold spaces.
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != target or "w" in fields[1]:
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        if drop_pages(start, end, target):
            advised += end - start
    return advised


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
        self._warm_up(path)
        released = release_file_pages(path)
        _LOGGER.debug(
            "loaded %s from %s (%d threads; %d kB of the file released)", spec.id, path, threads, released // 1024
        )

    def _warm_up(self, path: Path) -> None:
        # One invoke before the file's pages are released: a runtime that finishes preparing an
        # operator at its first run (instead of in allocate_tensors, as LiteRT 2.3's XNNPACK does)
        # reads its weights now, not after the release. It also takes that one-off cost off the
        # first camera frame.
        shape = tuple(int(v) for v in self._interp.get_input_details()[0]["shape"])
        try:
            self._interp.set_tensor(self._input_index, np.zeros(shape, dtype=self.input_dtype))
            self._interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"model file {path} ({self.spec.id}) cannot be run: {exc}") from exc

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
