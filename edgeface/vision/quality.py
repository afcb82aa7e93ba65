"""Face quality measurements that gate recognition and enrollment: size, sharpness, head pose.

Head pose comes straight from FaceMesh's 3-D points (x, y in pixels, z depth in the same scale):
the direction across the face (eye and mouth corners, subject's right to left) and down the face
(between the brows to the chin) span the face plane; yaw and pitch are the angles these directions
make with the image plane. That is a handful of vector operations, needs no 3-D face model, and
was checked on the dev photos (docs/vision.md). ``solvePnP`` with a generic six-point head model
was tried and rejected: on the same photos its pitch jumped by up to +-35 degrees on frontal faces.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edgeface.data import Detection, ImageArray, Landmarks, Quality
from edgeface.vision.keypoints import keypoint_yaw

# Across the face: subject's left minus subject's right, eye outer corners and mouth corners.
_LEFT = (263, 291)
_RIGHT = (33, 61)
# Down the face: the point between the brows (168) to the chin (152). The brows-to-chin line of a
# frontal face leans back by a fixed angle (the chin sits forward of the brow ridge); PITCH_OFFSET
# removes it so that a frontal face reads about 0.
_TOP = 168
_BOTTOM = 152
# Median raw pitch over the 53 faces of the sample and dev photos (nearly all frontal portraits
# looking at the camera), degrees; a frontal face then reads about 0.
PITCH_OFFSET = -10.0


def sharpness(chip: ImageArray) -> float:
    """Variance of the Laplacian of the grey chip: low for blurred or defocused faces."""
    grey = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY) if chip.ndim == 3 else chip
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def head_pose(landmarks: Landmarks) -> tuple[float, float]:
    """(yaw, pitch) in degrees: yaw > 0 when the face turns towards the image's right, pitch > 0 looking up."""
    p = landmarks.points.astype(np.float64)
    across = p[list(_LEFT)].mean(axis=0) - p[list(_RIGHT)].mean(axis=0)
    down = p[_BOTTOM] - p[_TOP]
    # Turning towards the image's right pushes the subject's left side (image right) away (+z):
    # yaw is the angle of ``across`` out of the image plane. Sign checked on visibly turned faces.
    yaw = math.degrees(math.atan2(across[2], math.hypot(across[0], across[1])))
    # Looking up brings the chin forward (-z) relative to the brows.
    pitch = math.degrees(math.atan2(-down[2], math.hypot(down[0], down[1]))) - PITCH_OFFSET
    return yaw, pitch


def face_size(detection: Detection) -> float:
    """The detection box's shorter side in pixels (what ``min_face_px`` settings compare against)."""
    return float(min(detection.bbox.width, detection.bbox.height))


def measure(detection: Detection, landmarks: Landmarks | None, chip: ImageArray) -> Quality:
    """All quality measurements of one face.

    Without landmarks the chip was aligned on the detector's keypoints: yaw is estimated from them
    (``keypoints.keypoint_yaw``), pitch is NaN, and the quality says ``aligned_by="keypoints"``.
    """
    size, sharp = face_size(detection), sharpness(chip)
    if landmarks is None:
        yaw = keypoint_yaw(detection.keypoints)
        return Quality(face_px=size, sharpness=sharp, yaw=yaw, pitch=math.nan, aligned_by="keypoints")
    yaw, pitch = head_pose(landmarks)
    return Quality(face_px=size, sharpness=sharp, yaw=yaw, pitch=pitch)
