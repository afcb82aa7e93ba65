"""Liveness policy: how a track's recent history becomes a ``LivenessResult`` for the decision.

The decision logic only sees this protocol. The blink (eye aspect ratio over FaceMesh landmarks)
and motion (parallax between landmarks and box) checks plug in as policies; until one is
configured, ``NoLiveness`` reports "no evidence" and does not hold back a grant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edgeface.data import BBox, Landmarks, LivenessResult, Quality


@dataclass(frozen=True, slots=True)
class TrackObservation:
    """One sighting of a track: what a liveness check may look at, oldest first in a history."""

    t: float  # the frame clock (seconds), as used by the tracker
    bbox: BBox
    landmarks: Landmarks | None
    quality: Quality | None = None  # set on frames where the face was embedded


TrackHistory = Sequence[TrackObservation]


@runtime_checkable
class LivenessPolicy(Protocol):
    """Scores whether a track is a live person rather than a photo or a screen."""

    @property
    def required(self) -> bool:
        """True when a grant needs ``live is True``; False when liveness is only reported."""
        ...

    def assess(self, history: TrackHistory) -> LivenessResult:
        """Judge the track from its sightings, oldest first; ``live=None`` when there is too little evidence."""
        ...


class NoLiveness:
    """Liveness disabled: never blocks a grant, reports ``live=None``."""

    required = False

    def assess(self, history: TrackHistory) -> LivenessResult:
        """No evidence is gathered; the result says so."""
        return LivenessResult(live=None, score=0.0, checks={})
