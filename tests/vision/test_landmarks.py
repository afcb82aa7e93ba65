"""FaceMesh on LiteRT: geometry on real photos, rejection of non-faces, and legacy FaceMesh as the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.data import BBox, Detection, Landmarks
from edgeface.errors import ModelError
from edgeface.vision.backends import create_landmarker
from edgeface.vision.detect import LiteRTDetector
from edgeface.vision.landmarks import (
    FIVE_POINT_INDICES,
    NUM_POINTS,
    LiteRTLandmarker,
    eye_points,
    five_points,
)

from .support import PARTIAL, PORTRAITS, ImageLoader

# Oracle tolerances as fractions of the inter-ocular distance (outer eye corners). Measured: whole
# faces agree to a median of 3e-5 and a worst point of < 0.002. Faces cut by the frame edge differ
# more because our detection box is clipped to the frame and the crop is centred on the clipped box
# (worst alignment point 3.9 %, worst mesh point 10 %).
ORACLE_WHOLE = 0.005
ORACLE_PARTIAL_FIVE = 0.06
# The Mediapipe backend re-detects the face in its own crop: measured median 0.7-2.7 %, alignment
# points <= 7 %.
BACKEND_MEDIAN = 0.04
BACKEND_FIVE = 0.08


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> LiteRTDetector:
    return LiteRTDetector(models_dir, "blazeface_short", min_score=0.5, max_faces=8)


@pytest.fixture(scope="module")
def landmarker(models_dir: Path) -> LiteRTLandmarker:
    return LiteRTLandmarker(models_dir)


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[33, :2] - points[263, :2]))


def _face(detector: LiteRTDetector, landmarker: LiteRTLandmarker, image: np.ndarray) -> tuple[Detection, Landmarks]:
    (det,) = detector.detect(image)
    marks = landmarker.landmarks(image, det)
    assert marks is not None
    return det, marks


@pytest.mark.parametrize("name", PORTRAITS)
def test_mesh_lies_on_the_face_in_frame_pixels(
    detector: LiteRTDetector, landmarker: LiteRTLandmarker, face_image: ImageLoader, name: str
) -> None:
    image = face_image(name)
    det, marks = _face(detector, landmarker, image)
    assert marks.points.shape == (NUM_POINTS, 3) and marks.points.dtype == np.float32
    assert marks.presence > 0.99
    # FaceMesh covers forehead to chin, so it spans roughly the detector box, centred on it.
    x, y = marks.points[:, 0], marks.points[:, 1]
    assert abs(float(x.mean()) - det.bbox.center[0]) < 0.2 * det.bbox.width
    assert 0.8 * det.bbox.width < float(x.max() - x.min()) < 1.6 * det.bbox.width
    assert y.max() > det.bbox.y1 - 0.2 * det.bbox.height  # the chin is at or below the box bottom
    # Mesh eye corners agree with the detector's eye keypoints (which sit at the pupils).
    right_eye = marks.points[[33, 133], :2].mean(axis=0)
    left_eye = marks.points[[263, 362], :2].mean(axis=0)
    assert np.linalg.norm(right_eye - det.keypoints[0]) < 0.25 * _iod(marks.points)
    assert np.linalg.norm(left_eye - det.keypoints[1]) < 0.25 * _iod(marks.points)


def test_five_points_follow_the_template_order(
    detector: LiteRTDetector, landmarker: LiteRTLandmarker, face_image: ImageLoader
) -> None:
    _, marks = _face(detector, landmarker, face_image("obama.jpg"))
    pts = five_points(marks)
    assert pts.shape == (5, 2) and pts.dtype == np.float32
    np.testing.assert_array_equal(pts, marks.points[list(FIVE_POINT_INDICES), :2])
    # image-right eye outer, inner; image-left eye outer, inner; nose base below the eyes
    assert pts[0, 0] > pts[1, 0] > pts[3, 0] > pts[2, 0]
    assert pts[4, 1] > pts[:4, 1].max()
    assert pts[3, 0] < pts[4, 0] < pts[1, 0]


def test_eye_points_give_an_open_eye_aspect_ratio(
    detector: LiteRTDetector, landmarker: LiteRTLandmarker, face_image: ImageLoader
) -> None:
    _, marks = _face(detector, landmarker, face_image("obama.jpg"))
    eyes = eye_points(marks)
    assert eyes.shape == (2, 6, 2)
    p = eyes.astype(np.float64)
    ear = (np.linalg.norm(p[:, 1] - p[:, 5], axis=1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=1)) / (
        2 * np.linalg.norm(p[:, 0] - p[:, 3], axis=1)
    )
    assert ((ear > 0.15) & (ear < 0.45)).all(), ear  # open eyes; a blink drops below ~0.15


@pytest.mark.parametrize("angle", [25.0, -40.0])
def test_mesh_turns_with_a_rolled_face(
    detector: LiteRTDetector, landmarker: LiteRTLandmarker, face_image: ImageLoader, angle: float
) -> None:
    image = face_image("obama.jpg")
    det, upright = _face(detector, landmarker, image)
    rotation = cv2.getRotationMatrix2D(det.bbox.center, angle, 1.0)
    rolled = cv2.warpAffine(image, rotation, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    _, marks = _face(detector, landmarker, rolled)
    expected = upright.points[:, :2] @ rotation[:, :2].T + rotation[:, 2]
    error = np.linalg.norm(marks.points[:, :2] - expected, axis=1) / _iod(upright.points)
    # FaceMesh is not exactly rotation-equivariant (measured median 1-2 %); a wrong ROI rotation
    # would put the points off by a large fraction of the face.
    assert np.median(error) < 0.05
    assert error[list(FIVE_POINT_INDICES)].max() < 0.1


def test_crop_without_a_face_is_rejected(landmarker: LiteRTLandmarker, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    # A detection placed on the plain background in the photo's top-left corner.
    box = BBox(10.0, 10.0, 210.0, 210.0)
    keypoints = np.array([[60, 80], [160, 80], [110, 120], [110, 160], [20, 90], [200, 90]], dtype=np.float32)
    assert landmarker.landmarks(image, Detection(box, 0.9, keypoints)) is None


def test_detector_false_positive_is_rejected(
    detector: LiteRTDetector, landmarker: LiteRTLandmarker, shared_data: Path
) -> None:
    # Short range "finds" a face in the White House logo behind Obama, larger than his own face.
    image = cv2.imread(str(shared_data / "dev" / "barack_obama" / "fr_knn_test_obama1.jpg"))
    dets = detector.detect(image)
    assert len(dets) == 2
    marks = [landmarker.landmarks(image, d) for d in dets]
    assert marks[0] is not None and marks[1] is None


def test_wrong_role_is_a_model_error(models_dir: Path) -> None:
    with pytest.raises(ModelError, match="detector, not a landmarker"):
        LiteRTLandmarker(models_dir, "blazeface_short")


# --- legacy FaceMesh as the oracle ---------------------------------------------------------


def _mp_meshes(mp: Any, image: np.ndarray) -> list[np.ndarray]:
    height, width = image.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=8) as graph:
        result = graph.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return [np.array([[p.x * width, p.y * height] for p in f.landmark]) for f in result.multi_face_landmarks or []]


def _closest(meshes: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    return min(meshes, key=lambda m: float(np.abs(m - points[:, :2]).mean()))


@pytest.mark.oracle
def test_litert_landmarks_reproduce_legacy_facemesh(
    models_dir: Path, detector: LiteRTDetector, face_image: ImageLoader, two_faces: np.ndarray
) -> None:
    mp = pytest.importorskip("mediapipe")
    ours = LiteRTLandmarker(models_dir, min_presence=0.5)  # Mediapipe's own threshold
    for image in [face_image(n) for n in PORTRAITS] + [two_faces]:
        expected = _mp_meshes(mp, image)
        got = [m for m in (ours.landmarks(image, d) for d in detector.detect(image)) if m is not None]
        assert len(got) == len(expected)
        for marks in got:
            error = np.linalg.norm(marks.points[:, :2] - _closest(expected, marks.points), axis=1)
            assert error.max() <= ORACLE_WHOLE * _iod(marks.points)


@pytest.mark.oracle
@pytest.mark.parametrize("name", PARTIAL)
def test_partial_face_landmarks_stay_close_to_legacy_facemesh(
    models_dir: Path, detector: LiteRTDetector, face_image: ImageLoader, name: str
) -> None:
    mp = pytest.importorskip("mediapipe")
    image = face_image(name)
    marks = LiteRTLandmarker(models_dir, min_presence=0.5).landmarks(image, detector.detect(image)[0])
    assert marks is not None
    expected = _closest(_mp_meshes(mp, image), marks.points)
    error = np.linalg.norm(five_points(marks) - expected[list(FIVE_POINT_INDICES)], axis=1)
    assert error.max() <= ORACLE_PARTIAL_FIVE * _iod(marks.points)


@pytest.mark.oracle
def test_mediapipe_backend_agrees_with_litert(
    models_dir: Path, detector: LiteRTDetector, landmarker: LiteRTLandmarker, face_image: ImageLoader
) -> None:
    pytest.importorskip("mediapipe")
    backend = create_landmarker("mediapipe", models_dir)
    try:
        for name in PORTRAITS:
            image = face_image(name)
            det, ours = _face(detector, landmarker, image)
            theirs = backend.landmarks(image, det)
            assert theirs is not None and theirs.points.shape == (NUM_POINTS, 3)
            error = np.linalg.norm(theirs.points[:, :2] - ours.points[:, :2], axis=1) / _iod(ours.points)
            assert np.median(error) <= BACKEND_MEDIAN
            assert error[list(FIVE_POINT_INDICES)].max() <= BACKEND_FIVE
    finally:
        backend.close()
