"""Real face crops for the liveness build: calibration and held-out check sets from dev/ and LFW View 1.

Faces are found by edgeface's runtime detector (the default ``vision`` settings) in every photo of
``dev/`` and in the photos of ``lfw/view1_*.csv``; each face is cut at each model's crop scale exactly as
``edgeface.liveness.passive`` cuts it at run time (``crop_box``, ``cv2.resize`` to 80 x 80). The split is by
photo and fixed by the sorted order: dev/ photos alternate between calibration and check, and of LFW View 1
every tenth photo calibrates and another tenth checks (``LFW_STRIDE``), so no photo is in both sets. View 2
never enters the build.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from minifasnet import INPUT_SIZE

from edgeface.config import VisionConfig
from edgeface.data import BBox
from edgeface.liveness.passive import MIN_FACE_PX, crop_box
from edgeface.vision.backends import create_detector

Array = npt.NDArray[Any]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
LFW_STRIDE = 10  # photo i of View 1 (sorted): i % 10 == 0 calibrates, i % 10 == 5 checks, the rest is unused


class CropSetError(RuntimeError):
    """The shared data folder lacks the photos the liveness build calibrates and checks on."""


@dataclass(frozen=True)
class RealFaces:
    """Faces of one set: ``names[i]`` is the photo (and face index) of ``images[i]``/``boxes[i]``."""

    names: list[str]
    images: list[Array]  # BGR uint8, shared between faces of one photo
    boxes: list[BBox]

    def crops(self, scale: float) -> Array:
        """``(N, 80, 80, 3)`` BGR uint8 crops at ``scale``, cut as the runtime cuts them."""
        out = []
        for image, box in zip(self.images, self.boxes, strict=True):
            x0, y0, x1, y1 = crop_box(image.shape[1], image.shape[0], box, scale)
            out.append(cv2.resize(image[y0 : y1 + 1, x0 : x1 + 1], (INPUT_SIZE, INPUT_SIZE)))
        return np.stack(out).astype(np.uint8)


def _lfw_view1(data: Path) -> list[Path]:
    files: set[str] = set()
    for name in ("view1_train.csv", "view1_test.csv"):
        path = data / "lfw" / name
        if not path.is_file():
            raise CropSetError(f"{path} is missing (set EDGEFACE_DATA to the shared data folder)")
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                files.update((row["file_a"], row["file_b"]))
    return [data / "lfw" / f for f in sorted(files)]


def split_photos(data: Path) -> tuple[list[Path], list[Path]]:
    """(calibration, check) photo paths from ``data``/dev and LFW View 1 (see the module docstring)."""
    dev_dir = data / "dev"
    if not dev_dir.is_dir():
        raise CropSetError(f"{dev_dir} is missing (set EDGEFACE_DATA to the shared data folder)")
    dev = sorted(p for p in dev_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    lfw = _lfw_view1(data)
    calibration = dev[0::2] + lfw[0::LFW_STRIDE]
    check = dev[1::2] + lfw[LFW_STRIDE // 2 :: LFW_STRIDE]
    return calibration, check


def detect_faces(paths: Sequence[Path], models_dir: Path) -> RealFaces:
    """Every face the runtime detector finds in ``paths`` that the passive check would judge."""
    vision = VisionConfig()
    detector = create_detector(
        vision.backend, vision.detector, models_dir, vision.min_detection_score, vision.max_faces
    )
    names, images, boxes = [], [], []
    try:
        for path in paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                continue
            for i, detection in enumerate(detector.detect(image)):
                if min(detection.bbox.width, detection.bbox.height) >= MIN_FACE_PX:
                    names.append(f"{path.parent.name}/{path.name}#{i}")
                    images.append(image)
                    boxes.append(detection.bbox)
    finally:
        detector.close()
    return RealFaces(names, images, boxes)
