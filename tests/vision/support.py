"""Constants shared by the vision tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODELS = Path(__file__).resolve().parents[2] / "models"
INT8 = "dlib_resnet_v1_int8"
FLOAT = "dlib_resnet_v1_float32"
# Sample photos with one whole, roughly frontal face each.
PORTRAITS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
# Sample photos whose face is cut by the frame edge.
PARTIAL = ("obama_partial_face.jpg", "obama_partial_face2.jpg")

ImageLoader = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class DlibFace:
    """What dlib itself makes of a sample photo's face: 5 points, its 150px chip (BGR), its unit descriptor."""

    points: np.ndarray
    chip: np.ndarray
    descriptor: np.ndarray
