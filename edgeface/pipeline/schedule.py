"""Which tracks are embedded on this frame, and which need FaceMesh: the embed scheduler.

The track stage asks it for every face it tracks; the decide stage tells it when a track's identity
is settled (known and live, or a plain stranger), so the track stage stops paying for landmarks and
embeddings of a face that has been decided. A settled track wakes up again when the database
generation changes (an enrollment, a confirm, a reject, a deletion): a stranger enrolled while still
at the door is looked at again within one embedding interval. Thread-safe: one lock, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Frame clocks are sums of 1/fps steps; compare intervals with this slack so 0.1 + 0.1 counts as 0.2.
_EPS = 1e-6


@dataclass(slots=True)
class _Schedule:
    last_claim: float | None = None
    previous_claim: float | None = None  # restored by ``release``
    settled: bool = False
    generation: int | None = None  # database generation when it settled
    known: bool = False  # settled as a person shown live: no more liveness evidence is wanted


class EmbedScheduler:
    """Embedding claims at most every ``interval_s`` per track, none for a settled track."""

    def __init__(self, interval_s: float, generation: Callable[[], int], *, landmark_liveness: bool) -> None:
        self.interval_s = interval_s
        self._generation = generation
        self._landmark_liveness = landmark_liveness
        self._lock = threading.Lock()
        self._tracks: dict[int, _Schedule] = {}

    def claim(self, track_id: int, now: float) -> bool:
        """Whether this track wants an embedding now; a True answer starts its interval."""
        with self._lock:
            state = self._tracks.setdefault(track_id, _Schedule())
            if state.settled:
                if state.generation == self._generation():
                    return False
                state.settled = state.known = False  # the database changed since: look at this face again
            if state.last_claim is not None and now - state.last_claim < self.interval_s - _EPS:
                return False
            state.previous_claim, state.last_claim = state.last_claim, now
            return True

    def release(self, track_id: int) -> None:
        """Give back a claim that could not be used (no landmarks to align on): the next frame may try."""
        with self._lock:
            state = self._tracks.get(track_id)
            if state is not None:
                state.last_claim = state.previous_claim

    def watches_landmarks(self, track_id: int) -> bool:
        """Whether a landmark liveness check still wants this track's FaceMesh points on every frame."""
        if not self._landmark_liveness:
            return False
        with self._lock:
            state = self._tracks.get(track_id)
            return state is None or not state.known

    def settle(self, track_id: int, generation: int, *, known: bool) -> None:
        """The track's identity is decided on ``generation``: no embeddings until the database changes."""
        with self._lock:
            state = self._tracks.setdefault(track_id, _Schedule())
            state.settled, state.generation, state.known = True, generation, known

    def unsettle(self, track_id: int) -> None:
        """The track is to be looked at again (uncertain, or known but not shown live)."""
        with self._lock:
            state = self._tracks.get(track_id)
            if state is not None:
                state.settled = state.known = False

    def is_settled(self, track_id: int) -> bool:
        with self._lock:
            state = self._tracks.get(track_id)
            return state is not None and state.settled

    def forget(self, track_ids: Iterable[int]) -> None:
        """Tracks that ended (their ids never come back)."""
        with self._lock:
            for track_id in track_ids:
                self._tracks.pop(track_id, None)
