"""Blink check: the eye aspect ratio (EAR) of each sighting of a track, and whether it blinked.

EAR (Soukupova & Cech, 2016) is ``(|p2-p6| + |p3-p5|) / (2 |p1-p4|)`` over FaceMesh's six points
per eye, averaged over both eyes. It is a ratio of distances, so moving, scaling or rolling a face in
the image leaves it unchanged: a photo shifted around in front of the camera keeps a flat EAR,
while a blink drops it sharply for 100-400 ms.

A blink is a dip: a run of sightings below ``OPEN_RATIO`` of the track's open-eye level, with
open-eye sightings on both sides at most ``max_blink_s`` apart, that stays below ``close_ratio`` of
the open-eye level for at least ``MIN_CLOSED_S``. The open-eye level is a high percentile of the
track's EAR, because eyes are open most of the time.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgeface.vision.landmarks import EYE_INDICES

F64 = npt.NDArray[np.float64]

# Default EAR, as a fraction of the open-eye EAR, below which the eyes count as closed. Measured
# with FaceMesh on three real photos replayed still, shifted, scaled and tilted by up to 20 degrees
# (tests/liveness): their deepest recovered dip was 17 %, the Hamilton clip's talking speaker's 21 %;
# a closing lid halves the EAR or more.
CLOSE_RATIO = 0.7
# A sighting at or above this fraction of the open-eye EAR has its eyes open again: the dip ended.
# Below 1 so that the noise of the open level itself (about +-5 % on FaceMesh) does not split a dip.
OPEN_RATIO = 0.9
# Default longest open -> closed -> open sequence taken for a blink: blinks last 100-400 ms, while a
# print tilted back and forth (which FaceMesh reads as narrowing eyes) takes longer.
MAX_BLINK_S = 0.5
# A lid stays shut for more than this; one frame of a 30 fps camera is shorter. It rejects one-frame
# landmark glitches: on the Hamilton clip a single jolted frame read as a 36 % dip with open eyes.
# At 10 fps one closed frame (0.1 s) is enough.
MIN_CLOSED_S = 0.06
# The open-eye level: eyes are open far more than a quarter of the time.
OPEN_PERCENTILE = 75.0
# Fewer sightings than this give no open-eye level worth comparing against.
MIN_SIGHTINGS = 5


def eye_aspect_ratio(points: npt.NDArray[np.float32]) -> F64:
    """EAR of each sighting, mean of both eyes, from (F, 468, 2+) FaceMesh points."""
    eyes = points[:, np.asarray(EYE_INDICES), :2].astype(np.float64)  # (F, 2, 6, 2)
    lids = np.linalg.norm(eyes[:, :, 1] - eyes[:, :, 5], axis=-1)
    lids += np.linalg.norm(eyes[:, :, 2] - eyes[:, :, 4], axis=-1)
    width = np.linalg.norm(eyes[:, :, 0] - eyes[:, :, 3], axis=-1)
    ear: F64 = (lids / np.maximum(2.0 * width, 1e-9)).mean(axis=1)
    return ear


class BlinkCheck:
    """Finds blinks in a track's EAR series; pure, one instance serves every track."""

    def __init__(self, close_ratio: float = CLOSE_RATIO, max_blink_s: float = MAX_BLINK_S) -> None:
        if not 0.0 < close_ratio < OPEN_RATIO:
            raise ValueError(f"close_ratio must be in (0, {OPEN_RATIO}), got {close_ratio}")
        self.close_ratio = close_ratio
        self.max_blink_s = max_blink_s

    @property
    def pass_depth(self) -> float:
        """The dip depth that counts as a blink."""
        return 1.0 - self.close_ratio

    def measure(self, t: F64, points: npt.NDArray[np.float32]) -> float:
        """Depth (1 - EAR / open level) of the deepest dip that recovered in time and lasted; 0 when none.

        ``t`` are the sightings' times (seconds, increasing), ``points`` their (F, 468, 2+) landmarks.
        A depth of at least ``pass_depth`` is a blink.
        """
        if t.size < MIN_SIGHTINGS:
            return 0.0
        ear = eye_aspect_ratio(points)
        ratio = ear / max(float(np.percentile(ear, OPEN_PERCENTILE)), 1e-9)
        n = ratio.size
        index = np.arange(n)
        is_open = ratio >= OPEN_RATIO
        # For every sighting: the last open sighting before it and the first one after it.
        before = np.concatenate(([-1], np.maximum.accumulate(np.where(is_open, index, -1))[:-1]))
        after = np.concatenate((np.minimum.accumulate(np.where(is_open, index, n)[::-1])[::-1][1:], [n]))
        bounded = ~is_open & (before >= 0) & (after < n)
        span = np.full(n, math.inf)
        span[bounded] = t[after[bounded]] - t[before[bounded]]
        in_dip = bounded & (span <= self.max_blink_s + 1e-9)
        if not in_dip.any():
            return 0.0
        # A dip's depth is the level it stayed below for MIN_CLOSED_S: its m-th lowest sighting,
        # m being the sightings that span MIN_CLOSED_S at this track's frame interval.
        step = float(np.median(np.diff(t)))
        m = max(1, math.ceil(MIN_CLOSED_S / step - 1e-9)) if step > 0 else 1
        dip_id, values = before[in_dip], ratio[in_dip]
        order = np.lexsort((values, dip_id))
        dip_id, values = dip_id[order], values[order]
        starts = np.flatnonzero(np.concatenate(([True], dip_id[1:] != dip_id[:-1])))
        sizes = np.diff(np.concatenate((starts, [dip_id.size])))
        long_enough = sizes >= m
        if not long_enough.any():
            return 0.0
        return max(0.0, 1.0 - float(values[starts[long_enough] + m - 1].min()))
