"""Score-level fusion of several embedders as one embedder (a manifest entry with ``components``).

A fused chip is aligned once, on the fused entry's own template; each component's chip is cut out
of it by a fixed similarity (``transform``) onto that component's template, so one chip travels
through the pipeline, is stored for ``db rebuild``, and yields every component's input. The vector
is ``w_1 u_1 || w_2 u_2 || ...`` of the components' unit vectors with ``sum(w_i^2) = 1``: it is unit
length and its cosine with another fused vector is ``sum(w_i^2 cos_i)``, so the database, matcher,
commands and replication treat it as one ordinary embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from edgeface.data import FloatArray, ImageArray
from edgeface.errors import ImageError, ModelError
from edgeface.vision.embed import Embedder, ModelCall, Runner, in_order
from edgeface.vision.manifest import FusedSpec, Manifest, ModelSpec, PointSet, load_manifest


class FusedEmbedder:
    """The components of a fused manifest entry behind the :class:`~edgeface.vision.embed.Embedder` interface."""

    def __init__(self, models_dir: Path, spec: FusedSpec, threads: int = 1, manifest: Manifest | None = None) -> None:
        manifest = manifest or load_manifest(models_dir)
        self._spec = spec
        self._parts: list[tuple[Embedder, float, FloatArray]] = []
        for component in spec.components:
            known = [s for s in manifest.models if s.id == component.id]
            if not known or not isinstance(known[0], ModelSpec) or known[0].role != "embedder":
                what = "is not in it" if not known else "is not an embedder with a model file"
                raise ModelError(
                    f"fused embedder {spec.id!r} in {manifest.path or models_dir} names component "
                    f"{component.id!r}, which {what}; rebuild models/ with scripts/build_models.py "
                    f"(it writes every component) or set vision.embedder to a single model"
                )
            embedder = Embedder(models_dir, component.id, threads, flip=component.flip)
            self._parts.append((embedder, component.weight, np.asarray(component.transform, dtype=np.float64)))
        dims = sum(e.dim for e, _, _ in self._parts)
        if dims != spec.output.size:
            raise ModelError(
                f"fused embedder {spec.id!r} in {manifest.path or models_dir}: its components give {dims} values, "
                f"the entry's output.size says {spec.output.size}"
            )
        self._template = np.asarray(spec.alignment.template, dtype=np.float32)

    @property
    def model_id(self) -> str:
        return self._spec.id

    @property
    def dim(self) -> int:
        return self._spec.output.size

    @property
    def flip(self) -> bool:
        """Whether any component describes each chip together with its mirror image."""
        return any(embedder.flip for embedder, _, _ in self._parts)

    @property
    def default_threshold(self) -> float:
        return float(self._spec.default_threshold)

    @property
    def uncertain_band(self) -> float | None:
        """The fused entry's calibrated width of the "uncertain" band below the threshold, if any."""
        return self._spec.uncertain_band

    @property
    def default_margin(self) -> float | None:
        """The fused entry's calibrated lead over the second-best person, if any."""
        return self._spec.margin

    @property
    def template(self) -> FloatArray:
        return self._template.copy()

    @property
    def chip_size(self) -> int:
        return self._spec.alignment.size

    @property
    def points(self) -> PointSet:
        return self._spec.alignment.points

    def component_chips(self, chips: Sequence[ImageArray]) -> list[list[ImageArray]]:
        """Per component, its chips cut out of the fused ``chips`` (what :meth:`embed` feeds it)."""
        out: list[list[ImageArray]] = []
        for embedder, _, transform in self._parts:
            n = embedder.chip_size
            part = []
            for i, chip in enumerate(chips):
                if chip.shape[:2] != (self.chip_size, self.chip_size):
                    raise ImageError(f"chip {i}: {chip.shape[:2]}, {self.model_id} takes {self.chip_size}px chips")
                warped = cv2.warpAffine(chip, transform, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                part.append(np.asarray(warped, dtype=np.uint8))
            out.append(part)
        return out

    def embed(self, chips: Sequence[ImageArray], run: Runner = in_order) -> FloatArray:
        """(N, dim) unit vectors: the weighted concatenation of every component's unit vectors.

        The components are independent model calls; ``run`` may run them at once (the pipeline's
        embed stage does, beside the passive check: that set went from ~20 to ~13 ms a face).
        """
        if len(chips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        calls: list[ModelCall] = [
            _weighted(embedder, weight, part)
            for (embedder, weight, _), part in zip(self._parts, self.component_chips(chips), strict=True)
        ]
        vectors = np.concatenate(run(calls), axis=1)
        # sum(w^2) is 1 to 1e-3 (validated); renormalise so the cosine is exactly the dot product.
        return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)

    def close(self) -> None:
        for embedder, _, _ in self._parts:
            embedder.close()


def _weighted(embedder: Embedder, weight: float, chips: list[ImageArray]) -> ModelCall:
    """One component's part of the fused vectors, as a call to run later."""
    return lambda: np.asarray(weight * embedder.embed(chips), dtype=np.float32)


AnyEmbedder = Embedder | FusedEmbedder


def create_embedder(models_dir: Path, model_id: str, threads: int = 1) -> AnyEmbedder:
    """The manifest's embedder ``model_id``: one model file, or a fused entry over several."""
    manifest = load_manifest(models_dir)
    spec = manifest.embedder(model_id)
    if isinstance(spec, FusedSpec):
        return FusedEmbedder(models_dir, spec, threads, manifest)
    return Embedder(models_dir, model_id, threads)
