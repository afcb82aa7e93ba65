"""models/manifest.json: what each model file is, how to feed it, and how to check it is intact.

A user's own model (e.g. a MobileFaceNet or ArcFace TFLite) plugs in by adding an entry here; the
runtime reads input size, normalisation, alignment template and output size from the entry.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeface.data import FloatArray
from edgeface.errors import ModelError

MANIFEST_NAME = "manifest.json"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Entry):
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    channels: Literal[1, 3] = 3
    color: Literal["rgb", "bgr", "gray"] = "rgb"
    dtype: Literal["float32", "uint8", "int8"] = "float32"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


# Which five face points an alignment template names (edgeface.vision.landmarks.POINT_SETS):
# "dlib5": image-right eye outer corner, image-right eye inner corner, image-left eye outer corner,
# image-left eye inner corner, base of the nose (dlib's 5-point predictor order);
# "arcface5": image-left eye centre, image-right eye centre, nose tip, image-left mouth corner,
# image-right mouth corner (the InsightFace/ArcFace order).
PointSet = Literal["dlib5", "arcface5"]


class AlignmentSpec(_Entry):
    size: int = Field(ge=16)
    points: PointSet = "dlib5"
    # Five reference points in chip pixels, in the order of ``points``.
    template: tuple[tuple[float, float], ...] = Field(min_length=5, max_length=5)


class OutputSpec(_Entry):
    size: int = Field(ge=1)
    normalise: bool = True


class CropSpec(_Entry):
    """How a liveness model's input is cut from the frame around the detector's face box."""

    # The crop is the box scaled by this about its centre, shifted to stay inside the image.
    scale: float = Field(gt=0)


class SourceSpec(_Entry):
    package: str
    version: str
    file: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # of the source file, when it is not a registry package


class ModelSpec(_Entry):
    id: str
    role: Literal["detector", "landmarker", "embedder", "liveness", "attributes"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)
    input: InputSpec
    alignment: AlignmentSpec | None = None
    output: OutputSpec | None = None
    crop: CropSpec | None = None
    # Classifiers: one label per output, in output order; for liveness models "live" marks the bona fide class.
    classes: tuple[str, ...] | None = None
    metric: Literal["cosine"] | None = None
    default_threshold: float | None = Field(None, ge=-1, le=1)
    # How default_threshold was chosen (data set, rule, figures), so that a user can judge and redo it.
    threshold_source: str | None = None
    # Width of the "uncertain" band below the threshold, and the lead over the second-best person a
    # match needs; calibrated with the threshold (``edgeface eval --calibrate``). Unset: generic defaults.
    uncertain_band: float | None = Field(None, ge=0, le=2)
    margin: float | None = Field(None, ge=0, le=2)
    # Embedders: describe the chip and its mirror image and use the normalised sum of the two vectors
    # (test-time flip augmentation; twice the interpreter work per face, chosen on LFW View 1).
    flip: bool = False
    quantization: str | None = None
    licence: str
    source: SourceSpec | None = None
    build: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _embedder_fields(self) -> ModelSpec:
        if self.role == "embedder" and (
            self.alignment is None or self.output is None or self.default_threshold is None
        ):
            raise ValueError(f"embedder {self.id} needs alignment, output and default_threshold")
        if self.role == "liveness" and (
            self.crop is None or self.output is None or self.classes is None or self.default_threshold is None
        ):
            raise ValueError(f"liveness model {self.id} needs crop, output, classes and default_threshold")
        if self.classes is not None and (self.output is None or len(self.classes) != self.output.size):
            raise ValueError(f"model {self.id}: {len(self.classes)} classes for an output of another size")
        if self.role == "liveness" and self.classes is not None and "live" not in self.classes:
            raise ValueError(f"liveness model {self.id} has no 'live' class")
        if self.role == "attributes" and not self.classes:
            raise ValueError(f"attributes model {self.id} needs its classes")
        if self.flip and self.role != "embedder":
            raise ValueError(f"model {self.id}: flip applies to embedders only, this is a {self.role}")
        return self

    @cached_property
    def template(self) -> FloatArray:
        """The alignment template as a (5, 2) float32 array (embedders only)."""
        if self.alignment is None:
            raise ModelError(f"model {self.id} has no alignment template")
        return np.asarray(self.alignment.template, dtype=np.float32)


class ComponentSpec(_Entry):
    """One model of a fused embedder and where its chip lies in the fused chip."""

    id: str
    weight: float = Field(gt=0, le=1)
    # 2x3 similarity from fused-chip pixels to this component's chip pixels (its own alignment size).
    transform: tuple[tuple[float, float, float], tuple[float, float, float]]
    # Flip augmentation of this component inside the fusion (as ModelSpec.flip). It is the fused
    # entry's own choice: the component's entry's ``flip`` applies only when that model is used alone.
    flip: bool = False


class FusedSpec(_Entry):
    """An embedder whose vector is the weighted concatenation of its components' unit vectors.

    With weights w_i (sum of squares 1) the cosine of two fused vectors is sum(w_i^2 cos_i): score
    fusion that the database, matcher and commands see as one ordinary embedder.
    """

    id: str
    role: Literal["embedder"]
    components: tuple[ComponentSpec, ...] = Field(min_length=2)
    alignment: AlignmentSpec
    output: OutputSpec
    metric: Literal["cosine"] = "cosine"
    default_threshold: float = Field(ge=-1, le=1)
    # As for a model file's entry (ModelSpec): how the threshold was chosen, and the calibrated band and margin.
    threshold_source: str | None = None
    uncertain_band: float | None = Field(None, ge=0, le=2)
    margin: float | None = Field(None, ge=0, le=2)
    quantization: str | None = None
    licence: str
    build: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _unit_weights(self) -> FusedSpec:
        total = sum(c.weight**2 for c in self.components)
        if abs(total - 1.0) > 1e-3:
            raise ValueError(f"fused embedder {self.id}: squared weights sum to {total:.4f}, not 1")
        return self

    @cached_property
    def template(self) -> FloatArray:
        """The fused chip's alignment template as a (5, 2) float32 array."""
        return np.asarray(self.alignment.template, dtype=np.float32)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = Field(alias="schema")
    models: tuple[ModelSpec | FusedSpec, ...]
    path: Path | None = Field(None, exclude=True)  # where it was read from, for error messages

    def embedder(self, model_id: str) -> ModelSpec | FusedSpec:
        """The entry with this id, a model file's or a fused one, or a ModelError listing the ids there are."""
        for spec in self.models:
            if spec.id == model_id:
                return spec
        known = ", ".join(s.id for s in self.models)
        raise ModelError(f"no model {model_id!r} in the manifest {self.path or MANIFEST_NAME} (known: {known})")

    def get(self, model_id: str) -> ModelSpec:
        """The entry of a model file with this id (a fused entry is an error: it has no file)."""
        spec = self.embedder(model_id)
        if isinstance(spec, FusedSpec):
            raise ModelError(f"model {model_id!r} in {self.path or MANIFEST_NAME} is fused from other models")
        return spec


def load_manifest(models_dir: Path) -> Manifest:
    """Parse and validate ``models_dir/manifest.json``."""
    path = models_dir / MANIFEST_NAME
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise ModelError(f"model manifest {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"model manifest {path} is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise ModelError(f"model manifest {path} is invalid: {exc}") from exc
    return manifest.model_copy(update={"path": path})


def model_path(models_dir: Path, spec: ModelSpec, *, verify: bool = True) -> Path:
    """Path of the model file, checked against the manifest's size and sha256 when ``verify``."""
    path = models_dir / spec.file
    if not path.is_file():
        raise ModelError(f"model file {path} ({spec.id}) is missing; reinstall or run scripts/build_models.py")
    if verify:
        data = path.read_bytes()
        if len(data) != spec.bytes:
            raise ModelError(
                f"model file {path}: {len(data)} bytes, manifest says {spec.bytes} (truncated or replaced?)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelError(f"model file {path}: sha256 {digest} does not match the manifest's {spec.sha256}")
    return path
