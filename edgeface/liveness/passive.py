"""Passive liveness: is the face in one image a live person or a replica (a print, a screen)?

Two MiniFASNet classifiers (Silent-Face, Apache-2.0) look at the face at two scales: one crop 2.7x
the detector box (skin texture, the edge of a print or a bezel close to the face) and one 4.0x
(the scene around the head: a hand holding a phone, a paper border). Each crop is centred on the
box and shifted to stay inside the image (the scale shrinks when the image cannot hold it) and, for
a still image with black border fill (rotation fill, letterbox bars: ``edgeface.liveness.fill``),
inside the picture the same way, so the models judge the scene rather than the padding; resized
to the model's input and fed as BGR 0..255. The fused score is the mean of the models' "live"
probabilities; a face is live when it reaches the threshold.

Pure: no threads, no I/O after construction; one instance is used by one thread at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edgeface.config import LivenessConfig, VisionConfig
from edgeface.data import BBox, ImageArray
from edgeface.errors import ModelError
from edgeface.liveness.fill import BorderFill, content_crop, crop_box
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.manifest import ModelSpec, load_manifest
from edgeface.vision.runtime import TFLiteModel

_LOGGER = logging.getLogger(__name__)

# The float32 pair. The int8 files compute in float32 too (their int8 weights are dequantized when the
# model is prepared: docs/models.md), so they run at the same ~1 ms per crop on x86, hold 3 MB more while
# loaded (the dequantized copies) and move the fused score by up to 0.011; they save only file size.
DEFAULT_MODELS = ("minifasnet_v2_2p7_float32", "minifasnet_v1se_4p0_float32")
# A face box narrower than this (pixels) is upscaled more than 2x into the 2.7x crop's 80 px: the
# print halftone and screen moire the models look for are gone, and the score is noise.
MIN_FACE_PX = 32

# ``too_close``: a still image's face so near its border fill that every crop, down to the face box
# itself, is more than a tenth padding (``fill.MAX_FACE_FILL``): the models would judge the padding.
PassiveReason = Literal["too_small", "too_close"]


@dataclass(frozen=True, slots=True)
class PassiveResult:
    """The passive verdict on one face: ``live``/``score`` are None when the face could not be judged (``reason``)."""

    live: bool | None
    score: float | None
    reason: PassiveReason | None = None


class _Model:
    """One liveness classifier from the manifest: crop, resize, run, softmax."""

    def __init__(self, models_dir: Path, spec: ModelSpec, threads: int) -> None:
        if spec.role != "liveness" or spec.crop is None or spec.classes is None or spec.output is None:
            raise ModelError(f"model {spec.id!r} in {models_dir} is a {spec.role}, not a liveness model")
        self.spec = spec
        self.scale = spec.crop.scale
        self.live_class = spec.classes.index("live")
        self._model = TFLiteModel(models_dir, spec, threads)
        path = models_dir / spec.file
        outputs = self._model.output_details
        shapes = [tuple(int(v) for v in d["shape"]) for d in outputs]
        if shapes != [(1, spec.output.size)]:
            raise ModelError(
                f"model file {path} ({spec.id}): outputs {shapes}, manifest says one (1, {spec.output.size})"
            )
        if self._model.input_dtype != np.float32:
            raise ModelError(f"model file {path} ({spec.id}): input dtype {self._model.input_dtype}, expected float32")
        self._detail = outputs[0]

    def crop(self, image: ImageArray, bbox: BBox, fill: BorderFill | None = None) -> ImageArray | None:
        """The model's input crop of ``image`` around ``bbox``, resized to its input size (BGR uint8).

        With a still image's ``fill`` the crop is kept inside the picture (``content_crop``); None when
        it cannot be.
        """
        width, height = image.shape[1], image.shape[0]
        box = (
            crop_box(width, height, bbox, self.scale)
            if fill is None
            else content_crop(fill, width, height, bbox, self.scale)
        )
        if box is None:
            return None
        x0, y0, x1, y1 = box
        size = (self.spec.input.width, self.spec.input.height)
        return np.asarray(cv2.resize(image[y0 : y1 + 1, x0 : x1 + 1], size), dtype=np.uint8)

    def live_probability(self, crop: ImageArray) -> float:
        """Probability of the live class for one input crop (the models end in a softmax)."""
        spec = self.spec.input
        x = crop[..., ::-1] if spec.color == "rgb" else crop
        tensor = (x.astype(np.float32) - np.asarray(spec.mean, np.float32)) * np.float32(spec.scale)
        probabilities = self._model.dequantize(self._model.run(np.ascontiguousarray(tensor[None]))[0], self._detail)
        return float(probabilities[0, self.live_class])


class PassiveLiveness:
    """The fused multi-scale passive check (see the module docstring)."""

    def __init__(
        self,
        models_dir: Path,
        model_ids: Sequence[str] = DEFAULT_MODELS,
        threshold: float | None = None,
        threads: int = 1,
        min_face_px: int = MIN_FACE_PX,
    ) -> None:
        if not model_ids:
            raise ModelError("passive liveness needs at least one model id")
        manifest = load_manifest(models_dir)
        self._models = [_Model(models_dir, manifest.get(model_id), threads) for model_id in model_ids]
        thresholds = {m.spec.default_threshold for m in self._models}
        if threshold is None and len(thresholds) != 1:
            raise ModelError(f"liveness models {', '.join(model_ids)} disagree on the default threshold: give one")
        self.threshold = float(threshold if threshold is not None else thresholds.pop())  # type: ignore[arg-type]
        self.min_face_px = min_face_px

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(m.spec.id for m in self._models)

    def crops(self, image_bgr: ImageArray, bbox: BBox, fill: BorderFill | None = None) -> list[ImageArray | None]:
        """Each model's input crop (for inspection and for the model build's checks)."""
        image = ensure_bgr(image_bgr)
        return [m.crop(image, bbox, fill) for m in self._models]

    def score(self, image_bgr: ImageArray, bbox: BBox) -> float | None:
        """The fused live probability of the face in a camera frame; None when the face is too small to judge.

        Camera frames get no fill detection: a webcam's crushed blacks can be exactly 0, and the 4.0x
        model needs that dark context to see a phone's bezel. Stills go through ``check``.
        """
        return self.check(image_bgr, bbox, fill=None).score

    def check(self, image_bgr: ImageArray, bbox: BBox, *, fill: BorderFill | None) -> PassiveResult:
        """Live or not, with the fused score, or no verdict with the reason (``too_small``, ``too_close``).

        ``fill`` is a still image's border fill (``edgeface.liveness.fill.detect_fill``, once per image)
        or None for a camera frame, whose crops are then exactly ``crop_box``'s.
        """
        if min(bbox.width, bbox.height) < self.min_face_px:
            return PassiveResult(live=None, score=None, reason="too_small")
        image = ensure_bgr(image_bgr)
        crops = [m.crop(image, bbox, fill) for m in self._models]
        if any(c is None for c in crops):
            return PassiveResult(live=None, score=None, reason="too_close")
        value = float(
            np.mean([m.live_probability(c) for m, c in zip(self._models, crops, strict=True) if c is not None])
        )
        return PassiveResult(live=value >= self.threshold, score=value)


def open_passive(liveness: LivenessConfig, vision: VisionConfig) -> PassiveLiveness:
    """The passive check the settings name; a ModelError naming the file if one is missing or does not match."""
    return PassiveLiveness(vision.models_dir, liveness.passive_models, liveness.passive_threshold, vision.threads)
