"""Face embeddings: an aligned chip in, an L2-normalised descriptor out, on LiteRT.

Everything model-specific comes from the manifest entry (input size, colour order, normalisation,
dtype and quantisation, alignment template, output size, default threshold), so a user's own
embedder plugs in by adding an entry; nothing here knows about dlib.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import FloatArray, ImageArray
from edgeface.errors import ImageError, ModelError
from edgeface.vision.manifest import ModelSpec, PointSet, load_manifest
from edgeface.vision.runtime import TFLiteModel

# Norms below this are a dead output (all zeros), not a face; normalising it would amplify noise.
MIN_NORM = 1e-6

# An embedder's work as independent model calls, and who runs them. Vision has no threads of its
# own: a caller that does (the pipeline's embed stage) passes a runner that runs the calls at once.
ModelCall = Callable[[], FloatArray]
Runner = Callable[[Sequence[ModelCall]], list[FloatArray]]


def in_order(calls: Sequence[ModelCall]) -> list[FloatArray]:
    """The default runner: each call on the calling thread, one after the other."""
    return [call() for call in calls]


class Embedder:
    """One embedding model from the manifest, ready to describe chips of ``chip_size``²."""

    def __init__(self, models_dir: Path, model_id: str, threads: int = 1, *, flip: bool | None = None) -> None:
        """``flip`` None takes the manifest entry's ``flip``; a fused entry passes its component's choice."""
        spec: ModelSpec = load_manifest(models_dir).get(model_id)
        if spec.role != "embedder" or spec.alignment is None or spec.output is None or spec.default_threshold is None:
            raise ModelError(f"model {model_id!r} in {models_dir} is a {spec.role}, not an embedder")
        path = models_dir / spec.file
        self._model = TFLiteModel(models_dir, spec, threads)
        if self._model.input_dtype != np.dtype(spec.input.dtype):
            raise ModelError(
                f"model file {path} ({model_id}): input dtype {self._model.input_dtype}, "
                f"manifest says {spec.input.dtype}"
            )
        outputs = self._model.output_details
        shape = tuple(int(v) for v in outputs[0]["shape"]) if len(outputs) == 1 else None
        if shape is None or len(shape) != 2 or shape[1] != spec.output.size:
            shapes = [tuple(int(v) for v in d["shape"]) for d in outputs]
            raise ModelError(
                f"model file {path} ({model_id}): outputs {shapes}, manifest says one (N, {spec.output.size})"
            )
        self._spec = spec
        self._path = path
        self._template = np.asarray(spec.alignment.template, dtype=np.float32)
        self._mean = np.asarray(spec.input.mean, dtype=np.float32)[: spec.input.channels]
        self._scale = np.float32(spec.input.scale)
        self._quant = self._model.input_quant
        self._flip = spec.flip if flip is None else flip
        if self._model.batch != 1:
            raise ModelError(f"model file {path} ({model_id}): input batch {self._model.batch}, expected 1")

    @property
    def model_id(self) -> str:
        return self._spec.id

    @property
    def dim(self) -> int:
        assert self._spec.output is not None
        return self._spec.output.size

    @property
    def flip(self) -> bool:
        """Whether each chip is described together with its mirror image (the vectors summed)."""
        return self._flip

    @property
    def default_threshold(self) -> float:
        """The manifest's cosine similarity at which two faces count as the same person."""
        assert self._spec.default_threshold is not None
        return float(self._spec.default_threshold)

    @property
    def uncertain_band(self) -> float | None:
        """The manifest's calibrated width of the "uncertain" band below the threshold, if any."""
        return self._spec.uncertain_band

    @property
    def default_margin(self) -> float | None:
        """The manifest's calibrated lead over the second-best person, if any."""
        return self._spec.margin

    @property
    def template(self) -> FloatArray:
        """(5, 2) alignment template in chip pixels, for :class:`edgeface.vision.align.Aligner`."""
        return self._template.copy()

    @property
    def chip_size(self) -> int:
        assert self._spec.alignment is not None
        return self._spec.alignment.size

    @property
    def points(self) -> PointSet:
        """Which five face points the template names."""
        assert self._spec.alignment is not None
        return self._spec.alignment.points

    def _prepare(self, chips: Sequence[ImageArray]) -> npt.NDArray[Any]:
        spec = self._spec.input
        batch = np.empty((len(chips), spec.height, spec.width, spec.channels), dtype=np.float32)
        for i, chip in enumerate(chips):
            if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3 or chip.shape[0] != chip.shape[1]:
                raise ImageError(f"chip {i}: expected a square BGR uint8 chip, got shape {chip.shape} {chip.dtype}")
            image: npt.NDArray[Any] = chip
            if image.shape[:2] != (spec.height, spec.width):
                image = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
            if spec.color == "rgb":
                image = image[..., ::-1]
            elif spec.color == "gray":
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[..., None]
            batch[i] = image
        batch = (batch - self._mean) * self._scale
        dtype = self._model.input_dtype
        if dtype == np.float32:
            return batch
        scale, zero = self._quant
        # Integer input: quantise with the tensor's own parameters (none: take the values as they are).
        quantized = np.round(batch / np.float32(scale)) + zero if scale else np.round(batch)
        limits = np.iinfo(dtype)
        return np.asarray(np.clip(quantized, limits.min, limits.max), dtype=dtype)

    def embed(self, chips: Sequence[ImageArray], run: Runner = in_order) -> FloatArray:
        """(N, dim) L2-normalised float32 descriptors of N aligned BGR chips (N may be 0).

        ``run`` is handed one call: a chip and its mirror take turns on the one interpreter.
        One chip per interpreter call: a batch of 8 took as long per chip (measured 12.9 ms/chip
        alone, 14.2 ms/chip in 8s on the fused embedder) while its activation arena, which the
        interpreter keeps at its largest size, added ~100 MB of resident memory.
        """
        return run([lambda: self._describe(chips)])[0]

    def _describe(self, chips: Sequence[ImageArray]) -> FloatArray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self._prepare(chips)
        if self._flip:
            # The mirror of the prepared tensor is the prepared mirror chip (per-pixel maps commute
            # with a flip): one more interpreter call per chip.
            x = np.concatenate([x, x[:, :, ::-1]], axis=0)
        detail = self._model.output_details[0]
        parts = [self._model.dequantize(self._model.run(x[i : i + 1])[0], detail) for i in range(len(x))]
        vectors = np.concatenate(parts, axis=0).reshape(len(x), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if (norms < MIN_NORM).any():
            raise ModelError(f"model {self.model_id} ({self._path}) returned an all-zero descriptor")
        units = vectors / norms
        if self._flip:
            # Each view's unit vector counts alike; a face and its mirror never give opposite vectors.
            units = units[: len(chips)] + units[len(chips) :]
            sums = np.linalg.norm(units, axis=1, keepdims=True)
            if (sums < MIN_NORM).any():
                raise ModelError(f"model {self.model_id} ({self._path}) described a chip and its mirror as opposites")
            units /= sums
        return np.asarray(units, dtype=np.float32)

    def close(self) -> None:
        """Nothing to release: the interpreter is freed with the object."""
