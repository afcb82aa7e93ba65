"""Recent embeddings and chips per track, for ``enroll {track_id}`` and ``reject {track_id}``.

The decide stage adds each embedding of a track; the command handler reads them directly. An
operator issues the command seconds after the event, when the person may have left, so the samples
of the last ``RECENT_TRACKS`` ended tracks are kept too. Thread-safe: one lock, no I/O.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from edgeface.data import FloatArray, ImageArray

KEEP_SAMPLES = 5
RECENT_TRACKS = 16

Sample = tuple[FloatArray, ImageArray]


class SampleRing:
    """The last ``keep`` (vector, chip) pairs of each live track, and of the most recently ended ones."""

    def __init__(self, keep: int = KEEP_SAMPLES, recent_tracks: int = RECENT_TRACKS) -> None:
        self.keep = keep
        self.recent_tracks = recent_tracks
        self._lock = threading.Lock()
        self._live: dict[int, deque[Sample]] = {}
        self._recent: OrderedDict[int, list[Sample]] = OrderedDict()

    def add(self, track_id: int, vector: FloatArray, chip: ImageArray) -> None:
        with self._lock:
            self._live.setdefault(track_id, deque(maxlen=self.keep)).append((vector, chip))

    def end(self, track_id: int) -> None:
        """The track ended: its samples move to the recent ones (the oldest ended track drops out)."""
        with self._lock:
            kept = self._live.pop(track_id, None)
            if kept:
                self._recent[track_id] = list(kept)
                while len(self._recent) > self.recent_tracks:
                    self._recent.popitem(last=False)

    def get(self, track_id: int) -> list[Sample]:
        """Recent (vector, chip) pairs of a live or recently ended track, oldest first; [] when unknown."""
        with self._lock:
            live = self._live.get(track_id)
            if live is not None:
                return list(live)
            return list(self._recent.get(track_id, []))
