"""Tracker: stable ids, IoU and centroid matching, ends; and on real detections across a real video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.config import DEFAULT_MODELS_DIR
from edgeface.data import BBox, Detection, Face
from edgeface.pipeline.tracker import SceneCutDetector, Tracker, iou_matrix


def det(x0: float, y0: float, size: float = 100.0, score: float = 0.9) -> Detection:
    return Detection(BBox(x0, y0, x0 + size, y0 + size), score, np.zeros((6, 2), dtype=np.float32))


def test_iou_matrix_matches_bbox_iou() -> None:
    a = [BBox(0, 0, 10, 10), BBox(5, 5, 15, 15), BBox(100, 100, 110, 120)]
    b = [BBox(0, 0, 10, 10), BBox(8, 0, 18, 10), BBox(50, 50, 60, 60)]

    def arr(boxes: list[BBox]) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([(x.x0, x.y0, x.x1, x.y1) for x in boxes], dtype=np.float64)

    got = iou_matrix(arr(a), arr(b))
    want = np.array([[x.iou(y) for y in b] for x in a])
    np.testing.assert_allclose(got, want)


def test_ids_are_stable_and_new_faces_get_new_ids() -> None:
    tracker = Tracker(iou_threshold=0.3, max_age_s=1.0)
    first, ended = tracker.update([det(100, 100), det(400, 100)], 0.0)
    assert [t.track_id for t in first] == [1, 2] and ended == []
    # Both move a little, listed in the other order; a third face appears.
    second, _ = tracker.update([det(410, 105), det(600, 300), det(105, 98)], 0.1)
    assert [t.track_id for t in second] == [2, 3, 1]
    assert [t.hits for t in second] == [2, 1, 2]
    assert second[2].first_seen == 0.0 and second[2].last_seen == 0.1
    assert tracker.live_ids == {1, 2, 3}


def test_centroid_fallback_follows_a_jump_without_overlap() -> None:
    tracker = Tracker(iou_threshold=0.3, max_age_s=1.0)
    tracker.update([det(100, 100)], 0.0)
    # A 70 px jump of a 100 px face (a low frame rate): boxes barely overlap, IoU < 0.3.
    moved, _ = tracker.update([det(170, 100)], 0.2)
    assert moved[0].track_id == 1
    # A far face of a very different size is someone else.
    other, _ = tracker.update([det(240, 100, size=30)], 0.4)
    assert other[0].track_id == 2


def test_greedy_assignment_prefers_the_best_overlap() -> None:
    tracker = Tracker(iou_threshold=0.1, max_age_s=1.0)
    tracker.update([det(100, 100), det(160, 100)], 0.0)  # two overlapping faces
    out, _ = tracker.update([det(165, 100), det(102, 100)], 0.1)
    assert [t.track_id for t in out] == [2, 1]


def test_stale_tracks_end_and_faces_or_detections_are_accepted() -> None:
    tracker = Tracker(iou_threshold=0.3, max_age_s=0.5)
    d = det(100, 100)
    out, _ = tracker.update([Face(d, None)], 0.0)
    assert out[0].face is not None and out[0].detection is d
    # Unseen but young: kept (a missed detection), not reported.
    assert tracker.update([], 0.3) == ([], [])
    assert tracker.live_ids == {1}
    again, _ = tracker.update([det(102, 101)], 0.4)
    assert again[0].track_id == 1 and again[0].face is None
    assert tracker.update([], 0.8) == ([], [])
    assert tracker.update([], 0.95) == ([], [1])
    assert tracker.live_ids == frozenset()
    # Ids are never reused.
    fresh, _ = tracker.update([det(100, 100)], 1.0)
    assert fresh[0].track_id == 2
    assert tracker.end_all() == [2]


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    from edgeface.vision.backends import create_detector

    return create_detector("litert", "short", DEFAULT_MODELS_DIR, 0.6, 8)


def test_tracks_on_real_detections_across_a_video(shared_data: Path, detector) -> None:  # type: ignore[no-untyped-def]
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    tracker = Tracker(iou_threshold=0.3, max_age_s=1.0)
    hits: dict[int, int] = {}
    frames = faces = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            detections = detector.detect(image)
            tracks, _ = tracker.update(detections, frames / fps)
            assert len({t.track_id for t in tracks}) == len(tracks)  # one track per face in a frame
            for t in tracks:
                hits[t.track_id] = hits.get(t.track_id, 0) + 1
            frames += 1
            faces += len(detections)
    finally:
        cap.release()
    assert faces > frames / 2  # someone faces the camera most of the clip
    # Faces persist: a few long tracks carry most sightings instead of a new id per frame.
    longest = sorted(hits.values(), reverse=True)
    assert longest[0] >= 100
    assert sum(longest[:3]) >= 0.8 * faces
    assert len(hits) <= faces / 10


def test_scene_cuts_in_a_real_video_and_a_photo_replay(shared_data: Path, samples_dir: Path) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    cuts = SceneCutDetector()
    cap = cv2.VideoCapture(str(clip))
    found = []
    index = 0
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                break
            if cuts(np.asarray(image, dtype=np.uint8)):
                found.append(index)
            index += 1
    finally:
        cap.release()
    assert found == [20, 82, 211]  # the clip's three camera changes, nothing else
    photos = SceneCutDetector()
    obama, biden = (np.asarray(cv2.imread(str(samples_dir / n)), dtype=np.uint8) for n in ("obama.jpg", "biden.jpg"))
    assert [photos(im) for im in (obama, obama, biden, biden, obama)] == [False, False, True, False, True]
