"""Which implementation runs the detector and the landmarker: LiteRT (default) or Mediapipe's own runtime.

The factories live here, above both implementations, so that ``detect``/``landmarks`` (LiteRT) and
``mp_backend`` (Mediapipe) never import each other. ``mp_backend`` imports Mediapipe only when one of
its classes is built, so the LiteRT-only install never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edgeface.config import VisionConfig
from edgeface.vision.detect import MODEL_IDS, Detector, LiteRTDetector, Range
from edgeface.vision.landmarks import MODEL_ID, Landmarker, LiteRTLandmarker
from edgeface.vision.mp_backend import MediapipeDetector, MediapipeLandmarker

Backend = Literal["litert", "mediapipe"]


def create_detector(
    backend: Backend,
    detector: Range,
    models_dir: Path,
    min_score: float,
    max_faces: int,
    threads: int = 1,
) -> Detector:
    """The configured detector: ``litert`` (default, no Mediapipe needed) or ``mediapipe``."""
    if backend == "mediapipe":
        return MediapipeDetector(detector, min_score, max_faces)
    return LiteRTDetector(models_dir, MODEL_IDS[detector], min_score, max_faces, threads)


def detector_for(vision: VisionConfig) -> Detector:
    """The detector ``vision`` configures: its backend, range, score floor, face cap and threads."""
    return create_detector(
        vision.backend, vision.detector, vision.models_dir, vision.min_detection_score, vision.max_faces, vision.threads
    )


def create_landmarker(backend: Backend, models_dir: Path, threads: int = 1) -> Landmarker:
    """The configured landmarker: ``litert`` (default) or ``mediapipe``."""
    if backend == "mediapipe":
        return MediapipeLandmarker()
    return LiteRTLandmarker(models_dir, MODEL_ID, threads)
