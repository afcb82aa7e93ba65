"""The blink check on real FaceMesh points.

The live clip holds no blink FaceMesh can see (test_policy.py) and no photo in the data set has
closed eyes, so the blink rules are tested on a real face's landmarks whose eyelids are closed by
moving FaceMesh's lid points towards the eye's mid-line: the one place these tests shape the data.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edgeface.data import FloatArray, ImageArray
from edgeface.liveness.blink import CLOSE_RATIO, MIN_SIGHTINGS, BlinkCheck, eye_aspect_ratio
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.landmarks import EYE_INDICES

from .conftest import Replay, camera_view


def test_the_eye_aspect_ratio_ignores_how_the_photo_is_held(
    analyzer: FaceAnalyzer, face_image: Callable[[str], ImageArray]
) -> None:
    photo = camera_view(face_image("obama.jpg"))
    h, w = photo.shape[:2]
    turned = np.asarray(cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), 12, 0.7), (w, h)), dtype=np.uint8)
    ears = []
    for image in (photo, turned):
        faces = [f for f in analyzer.locate(image) if f.landmarks is not None]
        ears.append(float(eye_aspect_ratio(faces[0].landmarks.points[None])[0]))  # type: ignore[union-attr]
    assert 0.15 < ears[0] < 0.4  # open eyes (he is smiling: FaceMesh reads 0.20)
    # The ratio itself does not change; FaceMesh's lid points on the smaller, resampled face move it by
    # 9 % (0.201 -> 0.182): well short of the 30 % a blink needs.
    assert ears[1] == pytest.approx(ears[0], rel=0.12)


def close_lids(points: FloatArray, closed: float) -> FloatArray:
    """The landmarks with both eyes' lid points moved ``closed`` of the way to the eye's mid-line."""
    out: FloatArray = points.copy()
    for eye in EYE_INDICES:
        p = list(eye)
        for upper, lower in ((p[1], p[5]), (p[2], p[4])):
            mid = (out[upper, :2] + out[lower, :2]) / 2
            out[upper, :2] += closed * (mid - out[upper, :2])
            out[lower, :2] += closed * (mid - out[lower, :2])
    return out


def series(
    open_face: FloatArray, fps: float, closed_frames: dict[int, float], frames: int = 30
) -> tuple[npt.NDArray[np.float64], FloatArray]:
    points = np.stack([close_lids(open_face, closed_frames.get(i, 0.0)) for i in range(frames)])
    return np.arange(frames, dtype=np.float64) / fps, points


@pytest.fixture(scope="module")
def open_face(photo_spoofs: list[Replay]) -> FloatArray:
    face: FloatArray = photo_spoofs[0].points[0]
    return face


def test_a_blink_is_a_deep_dip_that_recovers(open_face: FloatArray) -> None:
    check = BlinkCheck()
    assert check.pass_depth == pytest.approx(1 - CLOSE_RATIO)
    # 10 fps: closing for two frames (200 ms), open before and after; depth is the deepest frame.
    assert check.measure(*series(open_face, 10, {10: 0.6, 11: 0.8})) == pytest.approx(0.8, abs=0.01)
    # Only a little narrower (a squint, a tilted print): a dip, but not a blink.
    assert 0.1 < check.measure(*series(open_face, 10, {10: 0.2, 11: 0.2})) < check.pass_depth
    # Shut for 0.8 s: longer than a blink (max_blink_s 0.5), e.g. a print tilted away and back.
    assert check.measure(*series(open_face, 10, {i: 0.8 for i in range(10, 18)})) == 0.0
    # Closed when the track starts: no open eyes before it, so nothing to call a blink.
    assert check.measure(*series(open_face, 10, {0: 0.8, 1: 0.8})) == 0.0
    # Too few sightings for an open-eye level.
    assert check.measure(*series(open_face, 10, {2: 0.8}, frames=MIN_SIGHTINGS - 1)) == 0.0


def test_one_frame_is_a_blink_at_10_fps_but_a_glitch_at_30(open_face: FloatArray) -> None:
    check = BlinkCheck()
    assert check.measure(*series(open_face, 10, {10: 0.7})) >= check.pass_depth
    assert check.measure(*series(open_face, 30, {10: 0.7})) == 0.0
    # At 30 fps a dip must hold for two frames (MIN_CLOSED_S): its depth is the shallower of them.
    assert check.measure(*series(open_face, 30, {10: 0.6, 11: 0.8})) == pytest.approx(0.6, abs=0.01)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="close_ratio"):
        BlinkCheck(close_ratio=0.95)
