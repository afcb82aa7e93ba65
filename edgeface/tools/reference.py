"""The face_recognition/dlib reference pipeline, for eval and bench comparisons only.

It reproduces ``face_recognition.face_locations`` + ``face_recognition.face_encodings`` (1.3.0,
defaults): dlib's HOG frontal detector upsampling once, boxes trimmed to the image, the 5-point
shape predictor, and ``face_recognition_model_v1.compute_face_descriptor`` with one jitter, on the
RGB image. Matching is face_recognition's: Euclidean distance, a match at distance <= 0.6.

It uses the prebuilt ``dlib-bin`` wheel and the ``face-recognition-models`` data package (extra
``reference``) instead of the ``face_recognition`` package, which would build dlib from source.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeface.data import BBox, FloatArray, ImageArray
from edgeface.errors import ModelError

REFERENCE_ID = "dlib_reference"
# face_recognition's default ``tolerance``: a distance at or below it is the same person.
TOLERANCE = 0.6
# face_recognition.face_locations' default: upsample once so that faces down to ~40 px are found.
UPSAMPLE = 1
NUM_JITTERS = 1
_INSTALL_HINT = "the dlib reference pipeline needs the 'reference' extra: pip install edgeface[reference]"


class ReferenceUnavailableError(ModelError):
    """dlib or the face_recognition model files are not installed."""


@dataclass(frozen=True, slots=True)
class ReferenceFace:
    """One face found by the reference pipeline: its box and 128-d dlib descriptor (not normalised)."""

    bbox: BBox
    descriptor: FloatArray


def available() -> bool:
    """Whether ``dlib`` and ``face_recognition_models`` can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))


def dlib_version() -> str:
    """The installed dlib's version (part of the reference's cache fingerprint)."""
    return str(getattr(_import_dlib(), "__version__", "unknown"))


def _models_dir() -> Path:
    # Locate the data files without importing face_recognition_models: its __init__ imports the
    # deprecated pkg_resources, which is slow and warns on recent setuptools.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailableError(f"face_recognition_models is not installed; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise ReferenceUnavailableError(f"dlib is not installed; {_INSTALL_HINT}") from exc
    return dlib


class ReferencePipeline:
    """face_recognition's detector + encoder, callable stage by stage so bench can time each."""

    model_id = REFERENCE_ID

    def __init__(self, *, upsample: int = UPSAMPLE, num_jitters: int = NUM_JITTERS) -> None:
        dlib = _import_dlib()
        models = _models_dir()
        predictor = models / "shape_predictor_5_face_landmarks.dat"
        encoder = models / "dlib_face_recognition_resnet_model_v1.dat"
        for path in (predictor, encoder):
            if not path.is_file():
                raise ReferenceUnavailableError(f"reference model file {path} is missing; {_INSTALL_HINT}")
        try:
            self._detector = dlib.get_frontal_face_detector()
            self._predictor = dlib.shape_predictor(str(predictor))
            self._encoder = dlib.face_recognition_model_v1(str(encoder))
        except RuntimeError as exc:
            raise ReferenceUnavailableError(f"reference models in {models} cannot be loaded: {exc}") from exc
        self._rectangle = dlib.rectangle
        self.upsample = upsample
        self.num_jitters = num_jitters

    @staticmethod
    def to_rgb(image_bgr: ImageArray) -> ImageArray:
        """The contiguous RGB copy dlib wants (face_recognition loads images as RGB)."""
        return np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))

    def locate(self, rgb: ImageArray) -> list[BBox]:
        """``face_recognition.face_locations(rgb)``: HOG boxes trimmed to the image, as BBoxes."""
        height, width = rgb.shape[:2]
        boxes = []
        for rect in self._detector(rgb, self.upsample):
            # face_recognition's _trim_css_to_bounds: clamp to the image; its css tuples are
            # inclusive-exclusive, which is the same arithmetic as dlib's rect here.
            x0, y0 = max(rect.left(), 0), max(rect.top(), 0)
            x1, y1 = min(rect.right(), width), min(rect.bottom(), height)
            boxes.append(BBox(float(x0), float(y0), float(x1), float(y1)))
        return boxes

    def shapes(self, rgb: ImageArray, boxes: list[BBox]) -> list[Any]:
        """The 5-point ``dlib.full_object_detection`` of each box (face_recognition's ``model="small"``)."""
        return [self._predictor(rgb, self._rectangle(int(b.x0), int(b.y0), int(b.x1), int(b.y1))) for b in boxes]

    def describe(self, rgb: ImageArray, shapes: list[Any]) -> list[FloatArray]:
        """One 128-d descriptor per shape: ``compute_face_descriptor(rgb, shape, num_jitters)``."""
        return [
            np.asarray(self._encoder.compute_face_descriptor(rgb, shape, self.num_jitters), dtype=np.float32)
            for shape in shapes
        ]

    def encode(self, rgb: ImageArray, boxes: list[BBox]) -> list[FloatArray]:
        """``face_recognition.face_encodings(rgb, boxes, model="small")``: one descriptor per box."""
        return self.describe(rgb, self.shapes(rgb, boxes))

    def analyze(self, image_bgr: ImageArray) -> list[ReferenceFace]:
        """Every face in a BGR image with its descriptor."""
        rgb = self.to_rgb(image_bgr)
        boxes = self.locate(rgb)
        return [ReferenceFace(box, vec) for box, vec in zip(boxes, self.encode(rgb, boxes), strict=True)]
