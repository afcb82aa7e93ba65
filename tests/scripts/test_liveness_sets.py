"""The bona fide photo split of the liveness sets: LFW's alignment fill told apart on real LFW photos."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from tests.scripts.conftest import load_script

sets = load_script("liveness_sets")


def test_the_black_corners_of_lfw_alignment_are_told_from_a_camera_frame(shared_data: Path) -> None:
    lfw = shared_data / "lfw"
    with (lfw / "view1_test.csv").open(newline="") as handle:
        files = sorted({row["file_a"] for row in csv.DictReader(handle)})[:40]
    fills = [sets.alignment_fill(cv2.imread(str(lfw / name), cv2.IMREAD_COLOR)) for name in files]
    # About half of View 1 was rotated far enough by the alignment to leave black corners.
    assert any(f > sets.FILL_FRACTION for f in fills) and any(f < 0.05 for f in fills)
    frame = cv2.imread(str(shared_data / "spoof" / "real" / "silentface_image_T1.jpg"), cv2.IMREAD_COLOR)
    assert sets.alignment_fill(frame) < sets.FILL_FRACTION
    black_framed = np.full((250, 250, 3), 200, np.uint8)
    black_framed[:10] = black_framed[-10:] = black_framed[:, :10] = black_framed[:, -10:] = 0
    assert sets.alignment_fill(black_framed) == 1.0


def test_photos_split_dev_and_lfw_view1_into_three_sets(shared_data: Path, tmp_path: Path) -> None:
    sets.photos(shared_data, tmp_path)
    dev = list((tmp_path / "dev" / "real").rglob("*.jpg"))
    clean = list((tmp_path / "lfw-clean" / "real").rglob("*.jpg"))
    filled = list((tmp_path / "lfw-filled" / "real").rglob("*.jpg"))
    assert len(dev) >= 48 and clean and filled
    assert len(clean) + len(filled) == len(sets.lfw_view1(shared_data))
    assert all(sets.alignment_fill(cv2.imread(str(p), cv2.IMREAD_COLOR)) > sets.FILL_FRACTION for p in filled[:20])
