"""A light multi-face tracker: IoU matching with a centroid fallback, greedy assignment.

Faces at a door move little between frames, so an IoU match is right almost always; the centroid
fallback catches the frames where a low frame rate (a Pi at 5-10 fps) lets a box jump clear of its
previous position. No motion model and no appearance features: the tracker only has to keep one id
per person long enough to collect a few embeddings, and the decision logic tolerates a split track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edgeface.data import BBox, Detection, Face, ImageArray

# A box whose centre moved less than this many of its own widths still continues its track when
# IoU failed: at 5 fps a walking person's face moves about half a face width per frame.
CENTROID_GATE = 0.75
# ... and only when its size changed by less than this factor, so a near face never continues the
# track of a far one that happened to be nearby.
MAX_SCALE_CHANGE = 1.6

# Scene cuts (an edited video switching camera, a photo replay moving to the next photo) would let a
# box of the next shot continue a track of the previous one -- a different person under a decided
# id. A cut is a jump in the mean absolute difference of tiny grey thumbnails: on the Hamilton clip
# its three camera cuts score 26-29 while motion and lighting stay under 13 (of 255).
SCENE_CUT_MAD = 20.0
THUMB_SIZE = (32, 32)

_F64 = npt.NDArray[np.float64]
_F32 = npt.NDArray[np.float32]


class SceneCutDetector:
    """Says whether a frame starts a new shot: its size changed or its thumbnail jumped."""

    def __init__(self, threshold: float = SCENE_CUT_MAD) -> None:
        self.threshold = threshold
        self._prev: _F32 | None = None
        self._shape: tuple[int, ...] | None = None

    def __call__(self, image: ImageArray) -> bool:
        small = cv2.resize(image, THUMB_SIZE, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        thumb = np.asarray(grey, dtype=np.float32)
        prev, shape = self._prev, self._shape
        self._prev, self._shape = thumb, image.shape
        if prev is None:
            return False
        return shape != image.shape or float(np.abs(thumb - prev).mean()) > self.threshold


@dataclass(frozen=True, slots=True)
class Track:
    """One tracked face as of its latest sighting."""

    track_id: int
    bbox: BBox
    detection: Detection
    face: Face | None  # None when the tracker was fed bare Detections
    first_seen: float
    last_seen: float
    hits: int  # frames this track was matched in, including its first

    @property
    def age_s(self) -> float:
        return self.last_seen - self.first_seen


def _boxes(boxes: Sequence[BBox]) -> _F64:
    if not boxes:
        return np.zeros((0, 4), dtype=np.float64)
    return np.array([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=np.float64)


def iou_matrix(a: _F64, b: _F64) -> _F64:
    """Pairwise IoU of (N, 4) and (M, 4) x0,y0,x1,y1 boxes as an (N, M) matrix."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: _F64 = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def _greedy(score: _F64, valid: npt.NDArray[np.bool_], *, descending: bool) -> list[tuple[int, int]]:
    """Pairs (row, col) taken best score first, each row and column at most once."""
    rows, cols = np.nonzero(valid)
    if rows.size == 0:
        return []
    values = score[rows, cols]
    order = np.argsort(-values if descending else values, kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:  # at most (tracks x faces) candidates, a handful per frame
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


class Tracker:
    """Assigns stable ids to faces across frames; pure (time comes in as ``now``)."""

    def __init__(self, iou_threshold: float = 0.3, max_age_s: float = 1.0) -> None:
        self.iou_threshold = iou_threshold
        self.max_age_s = max_age_s
        self._tracks: dict[int, Track] = {}
        self._next_id = 1

    @property
    def live_ids(self) -> frozenset[int]:
        """Ids of every track not yet ended, including those unseen in the latest frame."""
        return frozenset(self._tracks)

    def update(self, items: Sequence[Detection | Face], now: float) -> tuple[list[Track], list[int]]:
        """Match this frame's faces to tracks: (one Track per item, in input order; ids of tracks that ended)."""
        detections = [item.detection if isinstance(item, Face) else item for item in items]
        ids = list(self._tracks)
        old = _boxes([self._tracks[i].bbox for i in ids])
        new = _boxes([d.bbox for d in detections])
        assigned: dict[int, int] = {}  # item index -> track id
        if ids and detections:
            iou = iou_matrix(old, new)
            for r, c in _greedy(iou, iou >= max(self.iou_threshold, 1e-9), descending=True):
                assigned[c] = ids[r]
            taken = set(assigned.values())
            free_r = np.array([r for r in range(len(ids)) if ids[r] not in taken], dtype=np.intp)
            free_c = np.array([c for c in range(len(detections)) if c not in assigned], dtype=np.intp)
            if free_r.size and free_c.size:
                a, b = old[free_r], new[free_c]
                ca = (a[:, :2] + a[:, 2:]) / 2
                cb = (b[:, :2] + b[:, 2:]) / 2
                dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
                wa = np.maximum(a[:, 2] - a[:, 0], 1.0)
                wb = np.maximum(b[:, 2] - b[:, 0], 1.0)
                scale = np.maximum(wa[:, None] / wb[None, :], wb[None, :] / wa[:, None])
                valid = (dist <= CENTROID_GATE * wa[:, None]) & (scale <= MAX_SCALE_CHANGE)
                for r, c in _greedy(dist, valid, descending=False):
                    assigned[int(free_c[c])] = ids[int(free_r[r])]
        out: list[Track] = []
        for index, (item, det) in enumerate(zip(items, detections, strict=True)):
            face = item if isinstance(item, Face) else None
            track_id = assigned.get(index)
            if track_id is None:
                track_id = self._next_id
                self._next_id += 1
                track = Track(track_id, det.bbox, det, face, now, now, 1)
            else:
                prev = self._tracks[track_id]
                track = Track(track_id, det.bbox, det, face, prev.first_seen, now, prev.hits + 1)
            self._tracks[track_id] = track
            out.append(track)
        ended = [i for i, t in self._tracks.items() if now - t.last_seen > self.max_age_s]
        for track_id in ended:
            del self._tracks[track_id]
        return out, ended

    def end_all(self) -> list[int]:
        """End every track (source ended or restarted); returns their ids."""
        ended = list(self._tracks)
        self._tracks.clear()
        return ended
