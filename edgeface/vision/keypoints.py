"""Alignment on BlazeFace's keypoints, for faces FaceMesh rejects (a lower-quality fallback).

FaceMesh refuses a crop whose face-presence score is below ``landmarks.MIN_PRESENCE``: turned, small,
blurred or partly hidden faces, 44 % of the faces of a stage clip. Without landmarks such a face
could never be named. BlazeFace already gives six keypoints per face (eyes, nose tip, mouth centre,
ears); a least-squares similarity from a keypoint template onto the three that lie on the face's
plane (the eyes and the mouth) gives a usable chip. Measured on LFW View 1 (docs/accuracy.md), the
ears' spread in dlib's chip is ~18 px and the nose tip's ~8 px (both move with yaw: the nose tip
stands out of the face plane) against ~2.5-4 px for eyes and mouth; adding the nose tip lowered
TAR at FAR 1e-3 on View 1 from 0.948 to 0.906, adding the ears too to 0.924.

The keypoint template is measured per point set on LFW View 1, so the fallback chip approximates the
chip the embedder was trained on: for ``dlib5`` the median position of each keypoint in dlib's own chip
(dlib's five points on the manifest template; ``scripts/measure_alignment.py``), for ``arcface5`` its
median position in the ArcFace 112 px chip aligned on FaceMesh's ArcFace points (eye centres, nose tip,
mouth corners). The ArcFace set names the nose tip too; it is left out for the same reason, and
BlazeFace's mouth centre stands for the midpoint of the two mouth corners. An embedder whose template
is another size or placement of the same point set (the fused chip is dlib's, enlarged and shifted)
gets the positions carried over by the similarity between the reference template and its own.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgeface.data import FloatArray
from edgeface.vision.manifest import PointSet

F64 = npt.NDArray[np.float64]

# dlib's 5-point target for get_face_chip(size=150, padding=0.25), in the manifest's order: the frame
# KEYPOINT_TEMPLATE is expressed in.
REFERENCE_TEMPLATE = np.array(
    [[110.22, 46.04], [89.01, 47.58], [36.81, 46.06], [58.02, 47.59], [73.52, 87.19]], dtype=np.float64
)
# BlazeFace keypoints used (subject's right eye, left eye, mouth centre) ...
KEYPOINTS_USED = (0, 1, 3)
# ... and their median position in dlib's chip over the LFW View 1 training photos (4,831 faces both
# pipelines found; scripts/measure_alignment.py).
KEYPOINT_TEMPLATE = np.array([[46.89, 47.24], [102.72, 47.85], [73.97, 108.34]], dtype=np.float64)
# The ArcFace 112 px template (eye centres, nose tip, mouth corners; image-left first) ...
ARCFACE_REFERENCE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# ... and the used keypoints' median position in its chip, aligned on FaceMesh's ArcFace points, over
# the LFW View 1 training photos FaceMesh accepted (3,377 faces, scripts/measure_alignment.py; robust
# spread ~1.5-2.5 px per axis, the nose tip's 4.4-5.8 px).
ARCFACE_KEYPOINT_TEMPLATE = np.array([[37.70, 52.63], [75.19, 52.92], [56.00, 93.42]], dtype=np.float64)
_REFERENCES: dict[PointSet, tuple[F64, F64]] = {
    "dlib5": (REFERENCE_TEMPLATE, KEYPOINT_TEMPLATE),
    "arcface5": (ARCFACE_REFERENCE_TEMPLATE, ARCFACE_KEYPOINT_TEMPLATE),
}
# yaw (degrees) ~ YAW_PER_EAR_ASYMMETRY * (|nose - right ear| - |nose - left ear|) / (sum of both),
# a least-squares fit on FaceMesh's yaw over the same photos.
YAW_PER_EAR_ASYMMETRY = 35.4
NOSE_TIP, RIGHT_EAR, LEFT_EAR = 2, 4, 5
# FaceMesh's rejection also filters detector false positives; a face it rejects is aligned on its
# keypoints only when the detector is this sure. The two faces FaceMesh rejects on the dev photos (a
# printed logo and a 94 px blurred face) scored 0.688 and 0.654; on the hamilton clip 85 of the 101
# faces it rejects score >= 0.7 and every face it accepts scores >= 0.7 (5th percentile 0.80).
FALLBACK_MIN_SCORE = 0.7


def keypoint_reference(points: PointSet) -> tuple[F64, F64]:
    """For a point set: its reference template (five points) and the used keypoints' place in that chip."""
    return _REFERENCES[points]


def used_keypoints(keypoints: FloatArray) -> F64:
    """The keypoints the template has, as float64 (n, 2)."""
    return np.asarray(keypoints, dtype=np.float64)[list(KEYPOINTS_USED)]


def keypoint_yaw(keypoints: FloatArray) -> float:
    """Head yaw in degrees estimated from the ears' distances to the nose tip (NaN when degenerate)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    right = float(np.linalg.norm(kp[NOSE_TIP] - kp[RIGHT_EAR]))
    left = float(np.linalg.norm(kp[NOSE_TIP] - kp[LEFT_EAR]))
    if right + left <= 0.0 or not math.isfinite(right + left):
        return math.nan
    return YAW_PER_EAR_ASYMMETRY * (right - left) / (right + left)
