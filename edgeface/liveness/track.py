"""One track's liveness evidence: its recent sightings and embeddings, bounded by the policy's window.

The policy judges a *track*, the matcher an *identity*; this class keeps the two tied together:

- Evidence of life counts for a person only when every embedding of the track inside the liveness
  window is that same face. Otherwise a live stranger could stand at the door (moving, blinking) and
  then raise a photo of someone else without the tracker losing the face: the window would still
  hold the stranger's motion -- and the swap itself looks like a head changing shape. Until the
  window holds only the matched face, the answer is "not enough evidence yet".
- Once a person has been shown live on a track, that holds for the rest of the track: when the
  database changes and the track is matched again, a person who has since stood still is not
  suddenly "not live". A different person matched on the same track is judged afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np

from edgeface.data import FloatArray, Landmarks, LivenessResult
from edgeface.liveness.policy import LivenessPolicy, TrackObservation

# Sightings are kept for the policy's window plus this slack, so the policy can tell a track watched
# for its whole window from one that just started.
HISTORY_SLACK_S = 0.5
# ... and never more than this many: a 10 s window (the configured maximum) plus the slack at 30 fps,
# about 1.8 MB of landmarks per track.
MAX_HISTORY = 320
# Frame clocks are sums of 1/fps steps: compare times with this slack.
_EPS = 1e-6


class TrackLiveness:
    """Sightings and embeddings of one track, and the person it was shown live for; not thread-safe."""

    def __init__(self, policy: LivenessPolicy) -> None:
        self._policy = policy
        self._keep_s = policy.window_s + HISTORY_SLACK_S if policy.window_s > 0 else 0.0
        self.history: deque[TrackObservation] = deque(maxlen=MAX_HISTORY)
        self._faces: deque[tuple[float, FloatArray]] = deque(maxlen=MAX_HISTORY)
        self._proven: tuple[str, LivenessResult] | None = None

    def sighting(self, t: float, landmarks: Landmarks | None) -> None:
        """Record one frame's sighting (nothing is kept when the policy looks at no history)."""
        if self._keep_s <= 0:
            return
        self.history.append(TrackObservation(t, landmarks))
        while self.history[0].t < t - self._keep_s:
            self.history.popleft()

    def embedded(self, t: float, vector: FloatArray, passive: float | None = None) -> None:
        """Record an embedding of the track, for the same-face check, and the passive score of its sighting."""
        if self._keep_s <= 0:
            return
        if passive is not None and self.history and abs(self.history[-1].t - t) <= _EPS:
            # The embedding's frame was recorded by ``sighting`` just before: the score belongs to it.
            self.history[-1] = replace(self.history[-1], passive=passive)
        self._faces.append((t, vector))
        while self._faces[0][0] < t - self._keep_s:
            self._faces.popleft()

    def judge(self, person_id: str, fused: FloatArray, same_face: float) -> LivenessResult:
        """Liveness of the track as ``person_id``, whose fused embedding is ``fused``.

        ``same_face`` is the cosine similarity every embedding in the window must have with
        ``fused`` for the policy's "live" to count (see the module docstring).
        """
        if self._proven is not None and self._proven[0] == person_id:
            return self._proven[1]
        result = self._policy.assess(list(self.history))
        if result.live is not True:
            return result
        if self.history:
            since = self.history[-1].t - self._policy.window_s - _EPS
            recent = [vector for t, vector in self._faces if t >= since]
            if recent and float(np.min(np.stack(recent) @ fused)) < same_face:
                return LivenessResult(live=None, score=result.score, checks=result.checks)
        self._proven = (person_id, result)
        return result
