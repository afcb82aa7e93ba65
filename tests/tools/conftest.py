"""Small real inputs for the eval and bench commands, built in tmp directories from the sample photos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

# Downscaled copies keep the dlib reference (HOG upsampled once) to a fraction of a second per photo.
PHOTO_WIDTH = 480
FRAME_SIZE = (640, 480)


def _small(image: np.ndarray, width: int = PHOTO_WIDTH) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def persons_dir(tmp_path_factory: pytest.TempPathFactory, face_image: Callable[[str], np.ndarray]) -> Path:
    """obama/{obama,obama2,obama3}.jpg and biden/biden.jpg: a folder-per-person set."""
    root = tmp_path_factory.mktemp("persons")
    for person, names in {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}.items():
        (root / person).mkdir()
        for name in names:
            assert cv2.imwrite(str(root / person / name), _small(face_image(name)))
    return root


@pytest.fixture(scope="session")
def gallery_dir(tmp_path_factory: pytest.TempPathFactory, face_image: Callable[[str], np.ndarray]) -> Path:
    """Enrolment photos that are not in the test video: obama2/obama3 for obama, biden for biden."""
    root = tmp_path_factory.mktemp("gallery")
    for person, names in {"obama": ["obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}.items():
        (root / person).mkdir()
        for name in names:
            assert cv2.imwrite(str(root / person / name), _small(face_image(name)))
    return root


def _letterbox(image: np.ndarray) -> np.ndarray:
    width, height = FRAME_SIZE
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return canvas


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory, face_image: Callable[[str], np.ndarray]) -> Path:
    """A 2 s, 10 fps clip: obama.jpg for 10 frames, then biden.jpg for 10 frames (640x480)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, FRAME_SIZE)
    assert writer.isOpened()
    for name in ("obama.jpg", "biden.jpg"):
        frame = _letterbox(face_image(name))
        for _ in range(10):
            writer.write(frame)
    writer.release()
    return path
