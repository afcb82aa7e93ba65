"""dlib-style face chips: a similarity from the embedder's template onto a face's points, then a warp.

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

from edgeface.data import AlignedBy, Face, FloatArray, ImageArray
from edgeface.errors import ImageError
from edgeface.vision.imageio import ensure_bgr
from edgeface.vision.keypoints import FALLBACK_MIN_SCORE, keypoint_reference, used_keypoints
from edgeface.vision.landmarks import five_points
from edgeface.vision.manifest import PointSet

F64 = npt.NDArray[np.float64]

# Pixels kept around the chip's footprint before building the pyramid: the 5-tap pyrDown filter
# reaches 2 pixels per level, so the crop must not cut into what the filter sees.
PYRAMID_MARGIN = 8


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
    """Warps a face to a ``size``² chip by its five points (``points`` names which, in the template's order).

    With ``keypoint_fallback`` a face without landmarks is aligned on its detector keypoints instead
    (``vision.keypoints``); its quality then says ``aligned_by="keypoints"``.
    """

    def __init__(
        self,
        template: FloatArray | F64,
        size: int,
        points: PointSet = "dlib5",
        *,
        keypoint_fallback: bool = True,
        fallback_min_score: float = FALLBACK_MIN_SCORE,
    ) -> None:
        template_points = np.asarray(template, dtype=np.float64)
        if template_points.shape != (5, 2) or not np.isfinite(template_points).all():
            raise ValueError(f"alignment template must be five finite (x, y) points, got shape {template_points.shape}")
        if size < 16:
            raise ValueError(f"chip size {size} is too small")
        self.template = template_points
        self.size = int(size)
        self.points: PointSet = points
        self.keypoint_fallback = keypoint_fallback
        self.fallback_min_score = fallback_min_score
        # The keypoints' template, measured in the reference chip of this point set, carried into this one.
        reference, measured = keypoint_reference(points)
        to_chip = similarity(reference, template_points)
        self.keypoint_template: F64 = measured @ to_chip[:, :2].T + to_chip[:, 2]

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
        return self._warp(ensure_bgr(image_bgr), self._chip_to_image(points5))

    def align_keypoints(self, image_bgr: ImageArray, keypoints: FloatArray) -> ImageArray:
        """The chip of a face aligned on its BlazeFace keypoints, eyes and mouth (the lower-quality fallback)."""
        points = used_keypoints(keypoints)
        if not np.isfinite(points).all():
            raise ImageError(f"keypoint alignment needs finite keypoints, got {points.tolist()}")
        return self._warp(ensure_bgr(image_bgr), similarity(self.keypoint_template, points))

    def align_face(self, image_bgr: ImageArray, face: Face) -> tuple[ImageArray, AlignedBy] | None:
        """The chip of a face and what it was aligned on.

        None for a face without landmarks when the fallback is off or the detection is too unsure
        (``fallback_min_score``): FaceMesh's rejection is then taken as "not a face".
        """
        if face.landmarks is not None:
            return self.align(image_bgr, five_points(face.landmarks, self.points)), "landmarks"
        if not self.keypoint_fallback or face.detection.score < self.fallback_min_score:
            return None
        return self.align_keypoints(image_bgr, face.detection.keypoints), "keypoints"

    def _warp(self, image: ImageArray, forward: F64) -> ImageArray:
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
