"""FaceMesh landmarks on LiteRT, and the point subsets later stages use (alignment, blink liveness).

The crop follows Mediapipe's face_detection_front_detection_to_roi graph: a square around the
detection box (its long side times 1.5), rotated so that the line between the detector's eye
keypoints is horizontal, resampled to 192x192. The model's 468 points are projected back through
the same transform, so they are in frame pixels whatever the face's size or roll.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from edgeface.data import Detection, FloatArray, ImageArray, Landmarks
from edgeface.errors import ModelError
from edgeface.vision.crop import warp_rect
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.manifest import PointSet, load_manifest
from edgeface.vision.runtime import TFLiteModel

MODEL_ID = "facemesh"
NUM_POINTS = 468
# face_detection_front_detection_to_roi: the square ROI is 1.5x the box's long side, leaving room
# for the forehead and chin that BlazeFace's tight box cuts off.
ROI_SCALE = 1.5
# Face-presence probability below which the crop is rejected. Mediapipe uses 0.5, tuned for losing
# a tracked face; as a filter for detector false positives it is too lenient: on the dev photos
# every real face scored >= 0.9996, while a short-range false positive on a printed logo (larger
# than the real face, so it became the "largest face") scored 0.76.
MIN_PRESENCE = 0.9

# FaceMesh indices of the five alignment points, in the manifest template's order: image-right eye
# (the subject's left) outer and inner corner, image-left eye outer and inner corner, nose base.
# Chosen against dlib's 5-point predictor on 54 faces of the dev photos (docs/vision.md): 2 (below
# the nose tip) is nearest to dlib's "nose base" (mean 2.2 % of the inter-ocular distance, vs 3.9 %
# for 94 and 9 % for 1), and with the four eye corners it gives chips closest to dlib's (1.8 px RMS
# grid displacement, vs 2.0 with 94 and 1.9 with the lid points 249/382/7/155).
FIVE_POINT_INDICES = (263, 362, 33, 133, 2)
# The ArcFace template's points (eye centres, nose tip, mouth corners), each the mean of these
# FaceMesh points, in the template's order: image-left eye (its corners 33/133 and mid lids
# 159/145), image-right eye (263/362, 386/374), nose tip (1), image-left and image-right mouth
# corner (61, 291). The 468-point mesh has no pupil; the mean of corners and lids sits on it for an
# open eye.
ARCFACE_POINT_INDICES: tuple[tuple[int, ...], ...] = ((33, 133, 159, 145), (263, 362, 386, 374), (1,), (61,), (291,))
# Six points per eye for the eye aspect ratio (Soukupova & Cech): outer corner, two upper-lid
# points, inner corner, two lower-lid points, so that EAR = (|p2-p6| + |p3-p5|) / (2 |p1-p4|).
# Rows: the subject's right eye (image left), then the subject's left eye.
EYE_INDICES = ((33, 160, 158, 133, 153, 144), (263, 387, 385, 362, 380, 373))


class Landmarker(Protocol):
    """Finds the 468 FaceMesh points of a detected face."""

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        """Points in frame pixels, or None when the crop holds no face (low presence score)."""
        ...

    def close(self) -> None:
        """Release native resources (a no-op for LiteRT)."""
        ...


def roi_for(detection: Detection) -> tuple[tuple[float, float], float, float]:
    """(centre, side, rotation in radians) of the FaceMesh crop for a detection."""
    box = detection.bbox
    (x0, y0), (x1, y1) = detection.keypoints[0], detection.keypoints[1]
    # DetectionsToRectsCalculator: rotate so the right-eye -> left-eye vector points along +x.
    rotation = -math.atan2(-(float(y1) - float(y0)), float(x1) - float(x0))
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    side = max(box.width, box.height) * ROI_SCALE
    return box.center, side, rotation


class LiteRTLandmarker:
    """FaceMesh (``face_landmark.tflite``) on LiteRT, cropped and projected as Mediapipe does."""

    def __init__(
        self, models_dir: Path, model_id: str = MODEL_ID, threads: int = 1, min_presence: float = MIN_PRESENCE
    ) -> None:
        spec = load_manifest(models_dir).get(model_id)
        if spec.role != "landmarker":
            raise ModelError(f"model {model_id!r} in {models_dir} is a {spec.role}, not a landmarker")
        if spec.input.width != spec.input.height:
            raise ModelError(f"landmarker {model_id!r}: input {spec.input.width}x{spec.input.height} is not square")
        self._model = TFLiteModel(models_dir, spec, threads)
        sizes = [int(np.prod(d["shape"])) for d in self._model.output_details]
        if sorted(sizes) != [1, NUM_POINTS * 3]:
            raise ModelError(
                f"landmarker file {models_dir / spec.file} ({model_id}): output sizes {sizes}, "
                f"expected a presence score and {NUM_POINTS} x 3 points"
            )
        self._points_output = sizes.index(NUM_POINTS * 3)
        self._size = spec.input.width
        self._mean = np.asarray(spec.input.mean, dtype=np.float32)
        self._scale = np.float32(spec.input.scale)
        self._bgr = spec.input.color == "bgr"
        self.model_id = model_id
        self.min_presence = min_presence

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        """The 468 points in frame pixels (z: depth in pixels, smaller = nearer), or None."""
        image = ensure_bgr(image_bgr)
        centre, side, rotation = roi_for(detection)
        if side < 1.0:
            return None
        crop, matrix = warp_rect(image, centre, side, rotation, self._size)
        if not self._bgr:
            crop = crop[..., ::-1]
        x = ((crop.astype(np.float32) - self._mean) * self._scale)[None]
        outputs = self._model.run(x)
        logit = float(np.clip(outputs[1 - self._points_output].ravel()[0], -100.0, 100.0))
        presence = 1.0 / (1.0 + math.exp(-logit))
        if presence < self.min_presence:
            return None
        raw = outputs[self._points_output].reshape(NUM_POINTS, 3).astype(np.float64)
        inverse = np.linalg.inv(matrix)
        points = np.empty((NUM_POINTS, 3), dtype=np.float32)
        points[:, :2] = raw[:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
        # TensorsToLandmarks divides z by the input width; LandmarkProjection scales it by the ROI width.
        points[:, 2] = raw[:, 2] / self._size * side
        return Landmarks(points=points, presence=presence)

    def close(self) -> None:
        """Nothing to release: the interpreter is freed with the object."""


def five_points(landmarks: Landmarks, points: PointSet = "dlib5") -> FloatArray:
    """(5, 2) alignment points of the named set, in its template order (see FIVE_POINT_INDICES)."""
    if points == "arcface5":
        xy = landmarks.points[:, :2]
        return np.ascontiguousarray([xy[list(group)].mean(axis=0) for group in ARCFACE_POINT_INDICES], np.float32)
    return np.ascontiguousarray(landmarks.points[list(FIVE_POINT_INDICES), :2], dtype=np.float32)


def eye_points(landmarks: Landmarks) -> FloatArray:
    """(2, 6, 2): per eye (subject's right, then left) the six eye-aspect-ratio points p1..p6."""
    return np.ascontiguousarray(landmarks.points[np.asarray(EYE_INDICES), :2], dtype=np.float32)
