"""Alignment on BlazeFace's keypoints when FaceMesh rejects a face: chip, quality, and what uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeface.config import DatabaseConfig
from edgeface.data import Face, Quality
from edgeface.errors import CommandError
from edgeface.matching.enroll import EnrollmentGate
from edgeface.matching.records import SampleRecord
from edgeface.pipeline.rules import KEYPOINT_WEIGHT, sample_weight
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.keypoints import KEYPOINT_TEMPLATE, REFERENCE_TEMPLATE, keypoint_yaw
from edgeface.vision.quality import measure

from .support import ImageLoader

# Symmetric keypoints of a frontal face: eyes, nose tip, mouth centre, ears.
FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]], dtype=np.float32)


def test_the_keypoint_template_is_measured_in_dlibs_chip(analyzer: FaceAnalyzer) -> None:
    # The shipped embedders use dlib's template, so the keypoints' template is carried over unchanged.
    np.testing.assert_allclose(analyzer.aligner.template, REFERENCE_TEMPLATE, atol=1e-6)
    np.testing.assert_allclose(analyzer.aligner.keypoint_template, KEYPOINT_TEMPLATE, atol=1e-6)


def test_keypoint_yaw_is_zero_when_symmetric_and_flips_with_a_mirror() -> None:
    assert keypoint_yaw(FRONTAL) == pytest.approx(0.0)
    turned = FRONTAL.copy()
    turned[2, 0] = 70.0  # nose tip moved towards the image's right
    mirrored = turned.copy()
    mirrored[:, 0] = 120.0 - mirrored[:, 0]
    mirrored[[0, 1, 4, 5]] = mirrored[[1, 0, 5, 4]]  # the subject's right stays first
    assert keypoint_yaw(turned) == pytest.approx(-keypoint_yaw(mirrored))
    assert abs(keypoint_yaw(turned)) > 5.0
    assert math.isnan(keypoint_yaw(np.zeros((6, 2), np.float32)))


def test_a_rejected_face_gets_a_keypoint_chip_and_quality(analyzer: FaceAnalyzer, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    (face,) = analyzer.locate(image)
    assert face.landmarks is not None
    rejected = Face(face.detection, None)
    result = analyzer.aligner.align_face(image, rejected)
    assert result is not None
    chip, aligned_by = result
    assert aligned_by == "keypoints" and chip.shape == (analyzer.aligner.size, analyzer.aligner.size, 3)
    quality = measure(rejected.detection, None, chip)
    assert quality.aligned_by == "keypoints" and math.isnan(quality.pitch)
    assert abs(quality.yaw) < 15.0  # a frontal portrait
    whole = analyzer.aligner.align_face(image, face)
    assert whole is not None and whole[1] == "landmarks"
    assert measure(face.detection, face.landmarks, whole[0]).aligned_by == "landmarks"


def test_keypoint_samples_count_less_and_are_not_enrolled() -> None:
    good = Quality(face_px=150.0, sharpness=200.0, yaw=0.0, pitch=0.0)
    fallback = Quality(face_px=150.0, sharpness=200.0, yaw=0.0, pitch=math.nan, aligned_by="keypoints")
    assert sample_weight(fallback) == pytest.approx(KEYPOINT_WEIGHT * sample_weight(good))
    gate = EnrollmentGate.from_config(DatabaseConfig())
    gate.check(good, "image 1")
    with pytest.raises(CommandError, match="landmarks could not be found") as caught:
        gate.check(fallback, "image 2")
    assert caught.value.code == "low_quality"


def test_a_keypoint_sample_keeps_its_flag_in_the_database_file() -> None:
    fallback = Quality(face_px=150.0, sharpness=200.0, yaw=3.0, pitch=math.nan, aligned_by="keypoints")
    record = SampleRecord(
        id="s1", kind="positive", created="2026-01-01T00:00:00Z", source="track", quality=fallback, has_chip=False
    )
    raw = record.to_json()
    assert raw["quality"]["aligned_by"] == "keypoints"
    back = SampleRecord.from_json(raw)
    assert back.quality is not None and back.quality.aligned_by == "keypoints"
    raw["quality"].pop("aligned_by")  # a file written before the flag existed
    old = SampleRecord.from_json(raw)
    assert old.quality is not None and old.quality.aligned_by == "landmarks"
    raw["quality"]["aligned_by"] = "guess"
    with pytest.raises(ValueError, match="aligned_by"):
        SampleRecord.from_json(raw)
