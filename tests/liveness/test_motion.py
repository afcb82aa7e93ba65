"""The motion check's geometry on real FaceMesh points: a plane's motion leaves no residual, however
it moves; too few sightings say nothing. (Real replays and the live clip: test_policy.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeface.data import FloatArray
from edgeface.liveness.motion import MIN_FRAMES, MotionCheck, fit_homographies, planar_residual

from .conftest import Replay


def planar_motion(points: FloatArray, frames: int, seed: int) -> FloatArray:
    """The 2-D points moved as a flat picture moves: a random homography per frame (tilts up to ~25 degrees)."""
    rng = np.random.default_rng(seed)
    centre = points[:, :2].mean(axis=0)
    out = []
    for _ in range(frames):
        angle, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.8, 1.2)
        h = np.array(
            [
                [scale * math.cos(angle), -scale * math.sin(angle), rng.uniform(-30, 30)],
                [scale * math.sin(angle), scale * math.cos(angle), rng.uniform(-30, 30)],
                [rng.uniform(-8e-4, 8e-4), rng.uniform(-8e-4, 8e-4), 1.0],
            ]
        )
        xy = np.column_stack([points[:, :2] - centre, np.ones(len(points))]) @ h.T
        moved = points.copy()
        moved[:, :2] = xy[:, :2] / xy[:, 2:] + centre
        out.append(moved)
    moved_all: FloatArray = np.stack(out).astype(np.float32)
    return moved_all


def test_the_fit_recovers_a_planes_motion(photo_spoofs: list[Replay]) -> None:
    face = photo_spoofs[0].points[0].astype(np.float64)
    moved = planar_motion(face, 6, seed=0).astype(np.float64)[:, :, :2]
    h = fit_homographies(face[:, :2], moved)
    assert h.shape == (6, 3, 3)
    # float32 rounding of the moved points is all that is left (~1e-5 px)
    assert float(planar_residual(np.concatenate([face[None, :, :2], moved]), 0).max()) < 1e-3


def test_a_picture_moved_anyhow_scores_nothing(photo_spoofs: list[Replay]) -> None:
    face = photo_spoofs[0].points[0]
    assert MotionCheck().measure(planar_motion(face, 30, seed=1)) == pytest.approx(0.0, abs=1e-6)


def test_too_few_sightings_say_nothing(hamilton: Replay) -> None:
    check = MotionCheck()
    assert check.measure(hamilton.points[:MIN_FRAMES]) == 0.0
    assert check.measure(hamilton.points[:40]) > check.threshold  # his first 1.3 s
    with pytest.raises(ValueError, match="positive"):
        MotionCheck(0.0)
