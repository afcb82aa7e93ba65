"""The detector and landmarker Protocols on Mediapipe's own runtime (legacy ``mp.solutions``).

An alternative to the LiteRT backend for platforms where Mediapipe is installed anyway, and the
reference the LiteRT implementation is tested against. Mediapipe is imported only when one of these
classes is built, so the daemon does not need it.

Differences to know about (measured with mediapipe 0.10.18):
- ``min_detection_confidence`` does not reach the face-detection graph (the same detections come
  back at 0.3 and 0.75), so ``min_score`` is applied here, after Mediapipe's NMS.
- Legacy FaceMesh takes whole images, not a detection, so the landmarker runs it on a square crop
  around the detection (``CROP_SCALE`` times the box) and keeps the face it finds there. Its points
  therefore come from Mediapipe's own re-detection in the crop, and it reports no presence score:
  a face FaceMesh returns passed its internal 0.5 threshold and gets ``presence=1.0``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import cv2
import numpy as np

from edgeface.data import BBox, Detection, ImageArray, Landmarks
from edgeface.errors import ModelError
from edgeface.vision.crop import warp_rect
from edgeface.vision.detect import Range
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.landmarks import NUM_POINTS

# Side of the landmarker's crop relative to the detection box's long side: room for the whole head
# so that FaceMesh's own detector (short range, which wants a large face) finds it again.
CROP_SCALE = 2.0
# Crops are not upsampled past this side: FaceMesh works at 192 px and BlazeFace at 128 px anyway.
MAX_CROP = 512
_INSTALL_HINT = "pip install edgeface[mediapipe] (or set vision.backend = 'litert')"


def _solutions() -> ModuleType:
    try:
        from mediapipe.python import solutions
    except ImportError as exc:
        raise ModelError(
            f"vision.backend 'mediapipe' needs the mediapipe package, which is not installed; {_INSTALL_HINT}"
        ) from exc
    return solutions  # type: ignore[no-any-return]


class MediapipeDetector:
    """BlazeFace through ``mp.solutions.face_detection``."""

    def __init__(self, detector: Range, min_score: float, max_faces: int) -> None:
        solutions = _solutions()
        self._graph: Any = solutions.face_detection.FaceDetection(
            min_detection_confidence=min_score, model_selection=1 if detector == "full" else 0
        )
        self.min_score = min_score
        self.max_faces = max_faces

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        """Faces sorted by score (best first), at most ``max_faces``, boxes clipped to the frame."""
        if self._graph is None:
            raise ModelError("MediapipeDetector is closed")
        image = ensure_bgr(image_bgr)
        height, width = image.shape[:2]
        result = self._graph.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        out: list[Detection] = []
        for det in result.detections or []:
            score = float(det.score[0])
            if score < self.min_score:
                continue
            box = det.location_data.relative_bounding_box
            x0, x1 = np.clip([box.xmin * width, (box.xmin + box.width) * width], 0, width)
            y0, y1 = np.clip([box.ymin * height, (box.ymin + box.height) * height], 0, height)
            if x1 - x0 < 1.0 or y1 - y0 < 1.0:
                continue
            keypoints = np.array(
                [[k.x * width, k.y * height] for k in det.location_data.relative_keypoints], dtype=np.float32
            )
            out.append(Detection(BBox(float(x0), float(y0), float(x1), float(y1)), score, keypoints))
        out.sort(key=lambda d: -d.score)
        return out[: self.max_faces]

    def close(self) -> None:
        """Stop Mediapipe's graph (its native threads and buffers); safe to call twice."""
        if self._graph is not None:
            self._graph.close()
            self._graph = None


class MediapipeLandmarker:
    """FaceMesh through ``mp.solutions.face_mesh``, run on a crop around each detection."""

    def __init__(self) -> None:
        solutions = _solutions()
        self._graph: Any = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
        )

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        """The 468 points in frame pixels, or None when FaceMesh finds no face in the crop."""
        if self._graph is None:
            raise ModelError("MediapipeLandmarker is closed")
        image = ensure_bgr(image_bgr)
        side = max(detection.bbox.width, detection.bbox.height) * CROP_SCALE
        if side < 1.0:
            return None
        size = int(min(MAX_CROP, max(16, round(side))))
        crop, matrix = warp_rect(image, detection.bbox.center, side, 0.0, size, border=cv2.BORDER_CONSTANT)
        result = self._graph.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        raw = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
        if raw.shape != (NUM_POINTS, 3):
            raise ModelError(f"mediapipe FaceMesh returned {raw.shape[0]} points, expected {NUM_POINTS}")
        inverse = np.linalg.inv(matrix)
        points = np.empty((NUM_POINTS, 3), dtype=np.float32)
        points[:, :2] = (raw[:, :2] * size) @ inverse[:2, :2].T + inverse[:2, 2]
        points[:, 2] = raw[:, 2] * side  # Mediapipe scales z like x: by the (crop) image width
        return Landmarks(points=points, presence=1.0)

    def close(self) -> None:
        """Stop Mediapipe's graph; safe to call twice."""
        if self._graph is not None:
            self._graph.close()
            self._graph = None
