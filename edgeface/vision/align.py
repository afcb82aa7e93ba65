"""Geometry shared by the vision stages: Mediapipe-style rotated crops and dlib-style face chips.

``warp_rect`` reproduces Mediapipe's ImageToTensorCalculator (OpenCV path): the corners of a rotated
rectangle are mapped onto the tensor's edges with ``getPerspectiveTransform`` and resampled
bilinearly by ``warpPerspective``. Building the matrix the same way matters: ``warpAffine`` with the
mathematically equal matrix rounds differently and moves BlazeFace scores by up to 0.01.

``Aligner`` reproduces dlib's ``get_face_chip`` (the chips the dlib ResNet was trained on): a
least-squares similarity from the template to the five image points, a 2x image pyramid when
shrinking by more than 2x (as dlib does, so a large face is low-pass filtered instead of aliased),
then bilinear sampling. Measured on the sample photos against ``dlib.get_face_chip`` with dlib's own
five points: mean absolute pixel difference 0.5-1 grey level without a pyramid level, ~2 with one
(dlib's pyramid filter differs slightly from ``cv2.pyrDown``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import FloatArray, ImageArray
from edgeface.errors import ImageError
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.manifest import PointSet

F64 = npt.NDArray[np.float64]

# Pixels kept around the chip's footprint before building the pyramid: the 5-tap pyrDown filter
# reaches 2 pixels per level, so the crop must not cut into what the filter sees.
PYRAMID_MARGIN = 8


def warp_rect(
    image: ImageArray,
    centre: tuple[float, float],
    side: float,
    angle: float,
    size: int,
    *,
    border: int = cv2.BORDER_REPLICATE,
) -> tuple[ImageArray, F64]:
    """Resample the square of ``side`` pixels around ``centre``, rotated by ``angle`` radians, to ``size``².

    Returns the crop and the 3x3 matrix mapping frame pixels to crop pixels. A positive angle
    turns the crop's x axis clockwise on screen (y down), Mediapipe's convention for ROIs.
    """
    corners = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(side), float(side)), math.degrees(angle)))
    target = np.array([[0, size], [0, 0], [size, 0], [size, size]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return np.asarray(crop, dtype=np.uint8), np.asarray(matrix, dtype=np.float64)


def similarity(source: F64 | FloatArray, target: F64 | FloatArray) -> F64:
    """Least-squares similarity (Umeyama) mapping ``source`` points onto ``target`` points, as 2x3.

    Used instead of ``cv2.estimateAffinePartial2D``, whose default RANSAC may drop one of only five
    points (leaving the chip tilted or scaled by the other four); dlib's find_similarity_transform
    is this same closed form.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a similarity
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sv) @ sign) / var) if var > 0 else 1.0
    trans = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, trans[:, None]])


class Aligner:
    """Warps a face to a ``size``² chip by its five points (``points`` names which, in the template's order)."""

    def __init__(self, template: FloatArray | F64, size: int, points: PointSet = "dlib5") -> None:
        template_points = np.asarray(template, dtype=np.float64)
        if template_points.shape != (5, 2) or not np.isfinite(template_points).all():
            raise ValueError(f"alignment template must be five finite (x, y) points, got shape {template_points.shape}")
        if size < 16:
            raise ValueError(f"chip size {size} is too small")
        self.template = template_points
        self.size = int(size)
        self.points: PointSet = points

    def _chip_to_image(self, points5: FloatArray | F64) -> F64:
        pts = np.asarray(points5, dtype=np.float64)
        if pts.shape != (5, 2) or not np.isfinite(pts).all():
            raise ImageError(f"alignment needs five finite (x, y) points, got shape {pts.shape}")
        # The template is in OpenCV pixel-centre coordinates (the manifest's values were fitted so
        # that this plain similarity reproduces dlib's chips; dlib's own edge-based grid differs by
        # about half a pixel), so no grid correction is applied here.
        return similarity(self.template, pts)

    def transform(self, points5: FloatArray | F64) -> F64:
        """2x3 matrix mapping image pixels to chip pixels for a face with these five points."""
        return np.asarray(cv2.invertAffineTransform(self._chip_to_image(points5)), dtype=np.float64)

    def align(self, image_bgr: ImageArray, points5: FloatArray | F64) -> ImageArray:
        """The ``size``² BGR chip; parts of the chip outside the image are black (as in dlib)."""
        image = ensure_bgr(image_bgr)
        forward = self._chip_to_image(points5)
        n = self.size
        scale = float(np.hypot(forward[0, 0], forward[1, 0]))  # image pixels per chip pixel
        levels = 0
        while scale / 2.0**levels / 2.0 > 1.0:  # dlib: go down while the half-size region exceeds the chip
            levels += 1
        if levels:
            # Only the chip's footprint (plus the filter's reach) is worth filtering.
            grid = np.array([[0, 0, 1], [n - 1, 0, 1], [0, n - 1, 1], [n - 1, n - 1, 1]], dtype=np.float64)
            corners = grid @ forward.T
            margin = PYRAMID_MARGIN * 2**levels
            h, w = image.shape[:2]
            x0 = int(max(0, math.floor(corners[:, 0].min()) - margin))
            y0 = int(max(0, math.floor(corners[:, 1].min()) - margin))
            x1 = int(min(w, math.ceil(corners[:, 0].max()) + margin))
            y1 = int(min(h, math.ceil(corners[:, 1].max()) + margin))
            if x1 - x0 < 2 or y1 - y0 < 2:  # the face lies outside the image
                return np.zeros((n, n, 3), dtype=np.uint8)
            source = image[y0:y1, x0:x1]
            for _ in range(levels):
                source = np.asarray(cv2.pyrDown(source), dtype=np.uint8)
            # pyrDown's output pixel i is centred on input pixel 2i.
            forward = forward.copy()
            forward[:, 2] -= (x0, y0)
            forward /= 2.0**levels
        else:
            source = image
        chip = cv2.warpAffine(
            source, forward, (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
        )
        return np.asarray(chip, dtype=np.uint8)
