"""The photo's subject: the prominent face nearest the centre, on hand-made boxes and on real LFW photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.data import BBox
from edgeface.tools.encoders import EncodedFace, order_encoded, subject
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.subject import subject_order


def _box(cx: float, cy: float, side: float) -> BBox:
    return BBox(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


SIZE = (250, 250)  # (height, width), an LFW photo


def test_a_larger_bystander_at_the_edge_does_not_displace_the_centred_face() -> None:
    boxes = [_box(200, 60, 110), _box(125, 125, 100)]
    assert subject_order(boxes, SIZE, [True, True]) == [1, 0]


def test_a_small_face_in_the_middle_is_not_the_subject() -> None:
    # 40 px against 110 px: 13 % of the largest face's area, below the prominence share.
    boxes = [_box(60, 120, 110), _box(125, 125, 40)]
    assert subject_order(boxes, SIZE, [True, True]) == [0, 1]


def test_the_subject_is_landmark_aligned_when_any_face_is() -> None:
    boxes = [_box(125, 125, 100), _box(40, 40, 90), _box(200, 200, 120)]
    order = subject_order(boxes, SIZE, [False, True, True])
    # The centred face has only a keypoint chip: the subject is the prominent landmarked face nearest
    # the centre, then the rest landmarked first and larger first.
    assert order[0] in (1, 2)
    assert order[1:] == [i for i in (2, 1, 0) if i != order[0]]
    only_keypoints = subject_order(boxes, SIZE, [False, False, False])
    assert only_keypoints[0] == 0


def test_no_faces_and_mismatched_flags() -> None:
    assert subject_order([], SIZE, []) == []
    with pytest.raises(ValueError, match="2 boxes but 1 landmark flags"):
        subject_order([_box(1, 1, 1), _box(2, 2, 2)], SIZE, [True])


def test_undescribed_faces_come_last_and_are_never_the_subject() -> None:
    image = np.zeros((250, 250, 3), dtype=np.uint8)
    vector = np.ones(4, dtype=np.float32)
    centred = EncodedFace(_box(125, 125, 100), None)
    aside = EncodedFace(_box(50, 50, 90), vector, "landmarks")
    ordered = order_encoded([centred, aside], image)
    assert ordered == [aside, centred]
    assert subject(ordered) is aside
    assert subject([centred]) is None


@pytest.mark.parametrize(
    ("photo", "other"),
    [
        # Each photo also shows a second, larger face cut off by the frame; the labelled person is centred.
        ("Kosuke_Kitajima/Kosuke_Kitajima_0002.jpg", "Kosuke_Kitajima/Kosuke_Kitajima_0001.jpg"),
        (
            "Christine_Todd_Whitman/Christine_Todd_Whitman_0005.jpg",
            "Christine_Todd_Whitman/Christine_Todd_Whitman_0006.jpg",
        ),
    ],
)
def test_analyze_takes_the_person_the_photo_is_labelled_with(
    analyzer: FaceAnalyzer, shared_data: Path, photo: str, other: str
) -> None:
    images = shared_data / "lfw" / "images"
    faces = analyzer.analyze(cv2.imread(str(images / photo)))
    reference = analyzer.analyze(cv2.imread(str(images / other)))[0].embedding.vector
    assert len(faces) >= 2
    first = faces[0].face.detection.bbox
    largest = max(faces, key=lambda f: f.face.detection.bbox.width * f.face.detection.bbox.height)
    assert largest is not faces[0]
    assert np.hypot(first.center[0] - 125, first.center[1] - 125) < 40
    threshold = analyzer.embedder.default_threshold
    # The centred face is the person of the other photo; the larger one is somebody else.
    assert float(faces[0].embedding.vector @ reference) >= threshold
    assert float(largest.embedding.vector @ reference) < threshold
