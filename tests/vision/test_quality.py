"""Quality measurements on real faces: blur, head pose (mirrored and rolled photos), face size."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.data import Face
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.keypoints import keypoint_yaw
from edgeface.vision.quality import face_size, head_pose, measure, sharpness

from .support import PORTRAITS, ImageLoader


def _face(analyzer: FaceAnalyzer, image: np.ndarray) -> Face:
    faces = analyzer.locate(image)
    assert faces and faces[0].landmarks is not None
    return faces[0]


def _pose(analyzer: FaceAnalyzer, image: np.ndarray) -> tuple[float, float]:
    landmarks = _face(analyzer, image).landmarks
    assert landmarks is not None
    return head_pose(landmarks)


def test_blur_lowers_sharpness(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    (face,) = analyzer.analyze(face_image("obama.jpg"))
    blurred = cv2.GaussianBlur(face.chip, (0, 0), 2.0)
    assert sharpness(face.chip) > 5 * sharpness(blurred)
    assert sharpness(cv2.cvtColor(face.chip, cv2.COLOR_BGR2GRAY)) == pytest.approx(sharpness(face.chip))


def test_frontal_portrait_has_small_yaw_and_pitch(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    yaw, pitch = _pose(analyzer, face_image("obama.jpg"))
    assert abs(yaw) < 8 and abs(pitch) < 10


@pytest.mark.parametrize("name", PORTRAITS)
def test_mirroring_the_photo_mirrors_the_yaw(analyzer: FaceAnalyzer, face_image: ImageLoader, name: str) -> None:
    image = face_image(name)
    yaw, pitch = _pose(analyzer, image)
    yaw_m, pitch_m = _pose(analyzer, cv2.flip(image, 1))
    assert yaw_m == pytest.approx(-yaw, abs=5.0)
    assert pitch_m == pytest.approx(pitch, abs=3.0)


def test_face_turned_towards_the_image_left_has_negative_yaw(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    yaw, _ = _pose(analyzer, face_image("obama2.jpg"))  # he looks towards the left edge
    assert yaw < -8
    yaw_m, _ = _pose(analyzer, cv2.flip(face_image("obama2.jpg"), 1))
    assert yaw_m > 8


def test_clearly_turned_face_reads_beyond_fifteen_degrees(analyzer: FaceAnalyzer, shared_data: Path) -> None:
    image = cv2.imread(str(shared_data / "dev" / "kit_harington" / "fr_knn_train_kit_harington_john2.jpeg"))
    yaw, _ = _pose(analyzer, image)
    assert yaw < -15


def test_rolling_the_head_in_plane_leaves_yaw_and_pitch(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    face = _face(analyzer, image)
    rotation = cv2.getRotationMatrix2D(face.detection.bbox.center, 30.0, 1.0)
    rolled = cv2.warpAffine(image, rotation, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    assert face.landmarks is not None
    yaw, pitch = head_pose(face.landmarks)
    yaw_r, pitch_r = _pose(analyzer, rolled)
    assert yaw_r == pytest.approx(yaw, abs=5.0)
    assert pitch_r == pytest.approx(pitch, abs=5.0)


def test_measure_collects_size_sharpness_and_pose(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    image = face_image("biden.jpg")
    face = _face(analyzer, image)
    (aligned,) = analyzer.align(image, [face])
    quality = measure(face.detection, face.landmarks, aligned.chip)
    assert quality == aligned.quality
    assert quality.face_px == face_size(face.detection) == min(face.detection.bbox.width, face.detection.bbox.height)
    assert quality.sharpness == sharpness(aligned.chip)
    assert face.landmarks is not None and (quality.yaw, quality.pitch) == head_pose(face.landmarks)
    without = measure(face.detection, None, aligned.chip)
    # Without landmarks (the keypoint fallback) yaw is estimated from the detector's keypoints, pitch is unknown.
    assert without.yaw == keypoint_yaw(face.detection.keypoints) and abs(without.yaw - quality.yaw) < 15.0
    assert math.isnan(without.pitch) and without.face_px == quality.face_px
    assert (without.aligned_by, quality.aligned_by) == ("keypoints", "landmarks")
