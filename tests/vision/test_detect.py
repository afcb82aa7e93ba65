"""BlazeFace on LiteRT: real photos, bad model files, and Mediapipe itself as the oracle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.data import BBox, Detection
from edgeface.errors import ImageError, ModelError
from edgeface.vision.backends import create_detector
from edgeface.vision.detect import MODEL_IDS, SSD_OPTIONS, LiteRTDetector, ssd_anchors

from .support import PARTIAL, PORTRAITS, ImageLoader

# Mediapipe's own decode thresholds (see SsdOptions.decode_min_score): with these our output must
# be Mediapipe's, detection for detection.
MP_MIN_SCORE = {"short": 0.5, "full": 0.6}
# Agreement demanded of the oracle comparison. Measured: IoU >= 0.99999, keypoints within 1e-5 of
# the inter-ocular distance, scores within 1e-6 -- the bounds leave room for other CPUs' float rounding.
ORACLE_IOU = 0.999
ORACLE_KEYPOINT_IOD = 0.002
ORACLE_SCORE = 1e-4


@pytest.fixture(scope="module")
def short(models_dir: Path) -> LiteRTDetector:
    return LiteRTDetector(models_dir, "blazeface_short", min_score=0.6, max_faces=8)


@pytest.fixture(scope="module")
def full(models_dir: Path) -> LiteRTDetector:
    return LiteRTDetector(models_dir, "blazeface_full", min_score=0.6, max_faces=8)


def _assert_valid(dets: list[Detection], image: np.ndarray) -> None:
    height, width = image.shape[:2]
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for d in dets:
        assert 0 <= d.bbox.x0 < d.bbox.x1 <= width and 0 <= d.bbox.y0 < d.bbox.y1 <= height
        assert d.keypoints.shape == (6, 2) and d.keypoints.dtype == np.float32
        # BlazeFace's order: the subject's right eye is on the image's left.
        assert d.keypoints[0, 0] < d.keypoints[1, 0]


def test_anchor_grids_have_mediapipes_sizes() -> None:
    for model_id, options in SSD_OPTIONS.items():
        anchors = ssd_anchors(options)
        assert anchors.shape == (options.num_anchors, 2), model_id
        assert anchors.min() > 0 and anchors.max() < 1


@pytest.mark.parametrize("name", PORTRAITS)
def test_one_face_per_portrait_with_eyes_inside_the_box(
    short: LiteRTDetector, full: LiteRTDetector, face_image: ImageLoader, name: str
) -> None:
    image = face_image(name)
    for detector in (short, full):
        dets = detector.detect(image)
        _assert_valid(dets, image)
        assert len(dets) == 1, (detector.model_id, name)
        box, eyes = dets[0].bbox, dets[0].keypoints[:2]
        assert dets[0].score > 0.75
        assert (eyes[:, 0] > box.x0).all() and (eyes[:, 0] < box.x1).all()
        assert (eyes[:, 1] > box.y0).all() and (eyes[:, 1] < box.y1).all()


@pytest.mark.parametrize("name", PARTIAL)
def test_partial_face_box_is_clipped_to_the_frame(short: LiteRTDetector, face_image: ImageLoader, name: str) -> None:
    image = face_image(name)
    dets = short.detect(image)
    _assert_valid(dets, image)
    assert len(dets) == 1
    box = dets[0].bbox
    # The face is cut by the left or right edge: the box ends exactly there.
    assert box.x0 == 0.0 or box.x1 == float(image.shape[1])


def test_two_faces_sorted_by_score_and_capped(models_dir: Path, two_faces: np.ndarray) -> None:
    both = LiteRTDetector(models_dir, "blazeface_short", min_score=0.6, max_faces=8).detect(two_faces)
    _assert_valid(both, two_faces)
    assert len(both) == 2
    one = LiteRTDetector(models_dir, "blazeface_short", min_score=0.6, max_faces=1).detect(two_faces)
    assert len(one) == 1 and one[0].score == both[0].score


def test_min_score_filters_merged_faces(models_dir: Path, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    score = LiteRTDetector(models_dir, "blazeface_short", min_score=0.5, max_faces=8).detect(image)[0].score
    assert (
        LiteRTDetector(models_dir, "blazeface_short", min_score=min(score + 0.01, 1.0), max_faces=8).detect(image) == []
    )


def test_no_face_in_a_flat_frame(short: LiteRTDetector, full: LiteRTDetector, flat_image: np.ndarray) -> None:
    assert short.detect(flat_image) == []
    assert full.detect(flat_image) == []


def test_no_face_among_dogs(short: LiteRTDetector, full: LiteRTDetector, shared_data: Path) -> None:
    image = cv2.imread(str(shared_data / "dev" / "_negatives" / "dlib_dogs.jpg"))
    assert short.detect(image) == []
    assert full.detect(image) == []


def test_image_that_is_not_bgr_is_an_image_error(short: LiteRTDetector, face_image: ImageLoader) -> None:
    grey = cv2.cvtColor(face_image("obama.jpg"), cv2.COLOR_BGR2GRAY)
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        short.detect(grey)


def test_wrong_role_is_a_model_error(models_dir: Path) -> None:
    with pytest.raises(ModelError, match="landmarker, not a detector"):
        LiteRTDetector(models_dir, "facemesh", min_score=0.6, max_faces=8)


def test_corrupt_detector_file_is_a_model_error_naming_it(models_copy: Callable[..., Path]) -> None:
    models = models_copy("blazeface_short")
    path = models / "face_detection_short_range.tflite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"face_detection_short_range\.tflite.*truncated"):
        LiteRTDetector(models, "blazeface_short", min_score=0.6, max_faces=8)
    flipped = bytearray(data)
    flipped[1000] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(ModelError, match=r"face_detection_short_range\.tflite: sha256"):
        LiteRTDetector(models, "blazeface_short", min_score=0.6, max_faces=8)


def test_missing_detector_file_is_a_model_error_naming_it(models_copy: Callable[..., Path]) -> None:
    models = models_copy()
    with pytest.raises(ModelError, match=r"face_detection_full_range_sparse\.tflite.*missing"):
        create_detector("litert", "full", models, 0.6, 8)


# --- Mediapipe as the oracle ---------------------------------------------------------------


def _mp_detections(mp: Any, image: np.ndarray, rng: str) -> list[tuple[float, BBox, np.ndarray]]:
    height, width = image.shape[:2]
    selection = 1 if rng == "full" else 0
    with mp.solutions.face_detection.FaceDetection(min_detection_confidence=0.5, model_selection=selection) as graph:
        result = graph.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    out = []
    for det in result.detections or []:
        box = det.location_data.relative_bounding_box
        x0, x1 = np.clip([box.xmin * width, (box.xmin + box.width) * width], 0, width)
        y0, y1 = np.clip([box.ymin * height, (box.ymin + box.height) * height], 0, height)
        kps = np.array([[k.x * width, k.y * height] for k in det.location_data.relative_keypoints])
        out.append((float(det.score[0]), BBox(float(x0), float(y0), float(x1), float(y1)), kps))
    return out


@pytest.mark.oracle
@pytest.mark.parametrize("rng", ["short", "full"])
def test_litert_detector_reproduces_mediapipe(
    models_dir: Path, face_image: ImageLoader, two_faces: np.ndarray, rng: str
) -> None:
    mp = pytest.importorskip("mediapipe")
    ours = LiteRTDetector(models_dir, MODEL_IDS[rng], min_score=MP_MIN_SCORE[rng], max_faces=64)  # type: ignore[index]
    images = [face_image(n) for n in (*PORTRAITS, *PARTIAL)] + [two_faces]
    compared = 0
    for image in images:
        expected = _mp_detections(mp, image, rng)
        got = ours.detect(image)
        assert len(got) == len(expected)
        for det, (score, box, kps) in zip(got, expected, strict=True):
            iod = float(np.linalg.norm(kps[0] - kps[1]))
            assert det.bbox.iou(box) >= ORACLE_IOU
            assert np.abs(det.keypoints - kps).max() <= ORACLE_KEYPOINT_IOD * iod
            assert det.score == pytest.approx(score, abs=ORACLE_SCORE)
            compared += 1
    assert compared >= len(images)


@pytest.mark.oracle
def test_mediapipe_backend_matches_litert(models_dir: Path, face_image: ImageLoader, two_faces: np.ndarray) -> None:
    pytest.importorskip("mediapipe")
    detector = create_detector("mediapipe", "short", models_dir, 0.6, 8)
    try:
        ours = create_detector("litert", "short", models_dir, 0.6, 8)
        for image in (face_image("obama.jpg"), two_faces):
            got, expected = detector.detect(image), ours.detect(image)
            _assert_valid(got, image)
            assert len(got) == len(expected)
            assert all(g.bbox.iou(e.bbox) >= ORACLE_IOU for g, e in zip(got, expected, strict=True))
    finally:
        detector.close()
    detector.close()  # closing twice is harmless
    with pytest.raises(ModelError, match="closed"):
        detector.detect(face_image("obama.jpg"))
