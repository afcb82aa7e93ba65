"""Alignment on BlazeFace's keypoints when FaceMesh rejects a face: chip, quality, and what uses it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgeface.config import DatabaseConfig, VisionConfig
from edgeface.data import Face, Quality
from edgeface.errors import CommandError
from edgeface.matching.enroll import EnrollmentGate
from edgeface.matching.records import SampleRecord
from edgeface.pipeline.rules import KEYPOINT_WEIGHT, sample_weight
from edgeface.vision.align import Aligner
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.keypoints import (
    ARCFACE_KEYPOINT_TEMPLATE,
    ARCFACE_REFERENCE_TEMPLATE,
    KEYPOINT_TEMPLATE,
    REFERENCE_TEMPLATE,
    keypoint_yaw,
)
from edgeface.vision.manifest import load_manifest
from edgeface.vision.quality import measure

from .support import INT8, ImageLoader

# Every point set the manifest's embedders align on: dlib's (150 px), ArcFace's (SFace, 112 px) and the
# fused default (dlib's points on a 192 px canvas).
POINT_SET_EMBEDDERS = (INT8, "sface_2021dec_int8", "fused_dlib_sface_int8")

# Symmetric keypoints of a frontal face: eyes, nose tip, mouth centre, ears.
FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [60, 90], [20, 60], [100, 60]], dtype=np.float32)


def test_the_keypoint_template_is_measured_in_dlibs_chip(analyzer: FaceAnalyzer) -> None:
    # The shipped embedders use dlib's template, so the keypoints' template is carried over unchanged.
    np.testing.assert_allclose(analyzer.aligner.template, REFERENCE_TEMPLATE, atol=1e-6)
    np.testing.assert_allclose(analyzer.aligner.keypoint_template, KEYPOINT_TEMPLATE, atol=1e-6)


def test_the_keypoint_template_follows_each_point_set(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    sface = manifest.get("sface_2021dec_int8").alignment
    assert sface is not None and sface.points == "arcface5"
    arcface = Aligner(sface.template, sface.size, sface.points)
    np.testing.assert_allclose(arcface.template, ARCFACE_REFERENCE_TEMPLATE, atol=1e-4)
    np.testing.assert_allclose(arcface.keypoint_template, ARCFACE_KEYPOINT_TEMPLATE, atol=1e-4)
    # ArcFace's mouth corners bracket BlazeFace's mouth centre; its eye points are the eyes' centres.
    mouth = ARCFACE_REFERENCE_TEMPLATE[3:].mean(axis=0)
    assert np.linalg.norm(arcface.keypoint_template[2] - mouth) < 2.0
    assert np.linalg.norm(arcface.keypoint_template[:2] - ARCFACE_REFERENCE_TEMPLATE[:2], axis=1).max() < 3.0
    fused = manifest.embedder("fused_dlib_sface_int8").alignment
    assert fused is not None and fused.points == "dlib5"
    canvas = Aligner(fused.template, fused.size, fused.points)
    shift = np.asarray(fused.template, np.float64)[0] - REFERENCE_TEMPLATE[0]  # dlib's chip moved into the canvas
    np.testing.assert_allclose(canvas.keypoint_template, KEYPOINT_TEMPLATE + shift, atol=1e-4)


@pytest.mark.parametrize("model_id", POINT_SET_EMBEDDERS)
def test_a_keypoint_chip_still_names_the_person_on_every_point_set(
    models_dir: Path, face_image: ImageLoader, model_id: str
) -> None:
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=model_id)) as analyzer:
        threshold = analyzer.embedder.default_threshold
        assert threshold is not None
        faces = {name: analyzer.locate(face_image(name))[0] for name in ("obama.jpg", "obama2.jpg", "biden.jpg")}
        rejected = Face(faces["obama.jpg"].detection, None)
        aligned = analyzer.align(face_image("obama.jpg"), [rejected])
        assert [a.quality.aligned_by for a in aligned] == ["keypoints"]
        (fallback,) = analyzer.embed(aligned)
        others = {n: analyzer.analyze(face_image(n))[0].embedding.vector for n in ("obama2.jpg", "biden.jpg")}
    assert float(fallback.vector @ others["obama2.jpg"]) > threshold > float(fallback.vector @ others["biden.jpg"])


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
