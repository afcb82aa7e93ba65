"""Motion check: does the face move like a 3-D head or like a flat picture?

However a flat picture (a print, a phone screen) moves in front of the camera -- shifted, scaled,
rolled, tilted -- the images of all points on it are related by one homography. A head is not flat:
when it turns, the nose tip slides across the cheeks and the outline of the face slides over the
ears (parallax), and when it speaks or smiles the face changes shape. Neither fits a homography.

So for every sighting the check fits the homography that best maps a reference sighting's FaceMesh
points (x, y) onto it and measures what is left: the RMS distance between the points and
the fit, in inter-ocular distances. The score is a high percentile of that residual over the
sightings, so a few glitchy frames do not make a photo live; it is computed against two references
(the first and the middle sighting) and the smaller kept, so one glitchy reference does not either.
FaceMesh's z is not used: on a photo it is the network's guess of a face's depth, not a measurement.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgeface.vision.landmarks import NUM_POINTS

F64 = npt.NDArray[np.float64]

# Default residual (RMS, in inter-ocular distances) from which a track moves like a 3-D head.
# Measured with FaceMesh over 3 s windows at every sighting: three real photos (tests/liveness)
# replayed still score 0, shifted/scaled/rolled at most 0.011, tilted by up to +-20 degrees at most
# 0.023 (FaceMesh reads a tilted face as slightly 3-D); live faces reach 0.111 (the Hamilton clip's
# speaker, past 0.035 after 0.5 s) and 0.044-0.090 (two people walking in the street clip, full-range
# detector). The threshold sits between, nearer the photos' ceiling.
MOTION_THRESHOLD = 0.035
# Sightings used, evenly spaced over the window: enough for a stable percentile, and the cost stays
# two batched least-squares fits of this many systems however high the frame rate.
MAX_FRAMES = 32
# Every third FaceMesh point: the mesh covers the face evenly, so a third keeps its shape at a third
# of the cost (scores within 5 % of those over all 468 points on the test clips and photos).
FIT_POINTS = np.arange(0, NUM_POINTS, 3)
# Fewer sightings (besides the reference) than this are not enough to say anything.
MIN_FRAMES = 5
# The residual must be reached by the top fifth of the sightings: sustained, not one frame.
FRAME_PERCENTILE = 80.0
# The eye outer corners (FaceMesh indices) whose distance normalises the residual.
_EYE_CORNERS = (33, 263)


def _normaliser(points: F64) -> F64:
    """(..., 3, 3) similarity moving (..., N, 2) points to zero mean and mean distance sqrt(2) (Hartley)."""
    centre = points.mean(axis=-2)
    spread = np.linalg.norm(points - centre[..., None, :], axis=-1).mean(axis=-1)
    scale = math.sqrt(2.0) / np.maximum(spread, 1e-9)
    out = np.zeros((*points.shape[:-2], 3, 3))
    out[..., 0, 0] = scale
    out[..., 1, 1] = scale
    out[..., 0, 2] = -scale * centre[..., 0]
    out[..., 1, 2] = -scale * centre[..., 1]
    out[..., 2, 2] = 1.0
    return out


def _apply(h: F64, points: F64) -> F64:
    """Map (N, 2) or (F, N, 2) points through (F, 3, 3) homographies: (F, N, 2)."""
    homogeneous = np.concatenate((points, np.ones((*points.shape[:-1], 1))), axis=-1)
    mapped = homogeneous @ np.swapaxes(h, -1, -2)
    out: F64 = mapped[..., :2] / mapped[..., 2:3]
    return out


def fit_homographies(src: F64, dst: F64) -> F64:
    """Least-squares homographies (F, 3, 3) mapping (N, 2) ``src`` onto each of (F, N, 2) ``dst``.

    The direct linear transform with h33 = 1, on Hartley-normalised points, solved for every frame
    at once through its normal equations.
    """
    ts, td = _normaliser(src), _normaliser(dst)
    a = _apply(ts[None], src)[0]
    b = _apply(td, dst)
    frames, n = b.shape[0], a.shape[0]
    x = np.broadcast_to(a[:, 0], (frames, n))
    y = np.broadcast_to(a[:, 1], (frames, n))
    u, v = b[..., 0], b[..., 1]
    one, zero = np.ones((frames, n)), np.zeros((frames, n))
    rows_u = np.stack((x, y, one, zero, zero, zero, -x * u, -y * u), axis=-1)
    rows_v = np.stack((zero, zero, zero, x, y, one, -x * v, -y * v), axis=-1)
    design = np.concatenate((rows_u, rows_v), axis=1)  # (F, 2N, 8)
    target = np.concatenate((u, v), axis=1)  # (F, 2N)
    normal = np.swapaxes(design, 1, 2) @ design
    h = np.linalg.solve(normal, (np.swapaxes(design, 1, 2) @ target[..., None])[..., 0])
    hn = np.concatenate((h, np.ones((frames, 1))), axis=1).reshape(frames, 3, 3)
    out: F64 = np.linalg.inv(td) @ hn @ ts
    return out


def planar_residual(points: F64, reference: int) -> F64:
    """Per sighting of (F, N, 2) points: RMS distance to the homography fit from ``reference`` (pixels)."""
    src = points[reference]
    fitted = _apply(fit_homographies(src, points), src)
    out: F64 = np.sqrt(((fitted - points) ** 2).sum(axis=-1).mean(axis=-1))
    return out


class MotionCheck:
    """Scores how far a track's landmarks depart from a flat picture's motion; pure, one serves every track."""

    def __init__(self, threshold: float = MOTION_THRESHOLD) -> None:
        if threshold <= 0:
            raise ValueError(f"motion threshold must be positive, got {threshold}")
        self.threshold = threshold

    def measure(self, points: npt.NDArray[np.float32]) -> float:
        """The track's non-planar residual from (F, 468, 2+) landmarks, oldest first; 0 with too few sightings."""
        count = points.shape[0]
        if count < MIN_FRAMES + 1:
            return 0.0
        pick = np.unique(np.linspace(0, count - 1, min(count, MAX_FRAMES)).round().astype(np.intp))
        chosen = points[pick].astype(np.float64)
        eyes = np.linalg.norm(chosen[:, _EYE_CORNERS[0], :2] - chosen[:, _EYE_CORNERS[1], :2], axis=-1)
        xy = chosen[:, FIT_POINTS, :2]
        scores = []
        for reference in (0, xy.shape[0] // 2):
            residual = planar_residual(xy, reference) / np.maximum(eyes, 1e-9)
            scores.append(float(np.percentile(np.delete(residual, reference), FRAME_PERCENTILE)))
        return min(scores)
