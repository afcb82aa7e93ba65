"""Liveness policy: how a track's recent sightings become a ``LivenessResult`` for the decision.

The decision logic only sees the ``LivenessPolicy`` protocol. ``NoLiveness`` (mode ``off``) gathers
nothing and never holds back a grant. ``LandmarkLiveness`` combines the blink check (eye aspect
ratio dips, ``blink.py``) and the motion check (landmarks that do not move like a flat picture,
``motion.py``) over the last ``window_s`` seconds of the track:

- ``live=True`` as soon as the configured checks pass (``any``: one of them, ``all``: both);
- ``live=None`` while they have not, and the track has been watched for less than ``window_s``;
- ``live=False`` once it has been watched that long without passing -- and again on each later
  assessment until the checks pass over the then-latest window.

``score`` is the evidence relative to what passes (1.0 = exactly at the pass level; ``any`` takes
the stronger check, ``all`` the weaker); ``checks`` holds each check's raw measure: the deepest
recovered eye-aspect-ratio dip (``blink``) and the non-planar landmark residual in eye distances
(``motion``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from edgeface.config import LivenessConfig
from edgeface.data import Landmarks, LivenessResult
from edgeface.liveness.blink import BlinkCheck
from edgeface.liveness.motion import MotionCheck
from edgeface.vision.landmarks import NUM_POINTS

CheckMode = Literal["blink", "motion", "any", "all"]

# Frame clocks are sums of 1/fps steps: a track watched for 2.9999999 s has been watched for 3 s.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class TrackObservation:
    """One sighting of a track: what a liveness check may look at, oldest first in a history."""

    t: float  # the frame clock (seconds), as used by the tracker
    landmarks: Landmarks | None  # None when FaceMesh rejected the crop


TrackHistory = Sequence[TrackObservation]


@runtime_checkable
class LivenessPolicy(Protocol):
    """Scores whether a track is a live person rather than a photo or a screen."""

    @property
    def required(self) -> bool:
        """True when a grant needs ``live is True``; False when liveness is not checked."""
        ...

    @property
    def window_s(self) -> float:
        """Seconds of a track's history the policy looks at; the caller need keep no more (0: none)."""
        ...

    def assess(self, history: TrackHistory) -> LivenessResult:
        """Judge the track from its sightings, oldest first; ``live=None`` when there is too little evidence."""
        ...


class NoLiveness:
    """Liveness disabled: never blocks a grant, reports ``live=None`` and needs no history."""

    required = False
    window_s = 0.0

    def assess(self, history: TrackHistory) -> LivenessResult:
        """No evidence is gathered; the result says so."""
        return LivenessResult(live=None, score=0.0, checks={})


class LandmarkLiveness:
    """Blink and/or motion evidence from a track's FaceMesh landmarks (see the module docstring)."""

    required = True

    def __init__(
        self,
        mode: CheckMode,
        window_s: float,
        blink: BlinkCheck | None = None,
        motion: MotionCheck | None = None,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"liveness window must be positive, got {window_s}")
        self.mode = mode
        self.window_s = window_s
        self.blink = blink or BlinkCheck()
        self.motion = motion or MotionCheck()

    def assess(self, history: TrackHistory) -> LivenessResult:
        """Pass, fail or wait, from the sightings of the last ``window_s`` seconds (see the module docstring)."""
        if not history:
            return LivenessResult(live=None, score=0.0, checks={})
        latest = history[-1].t
        watched = latest - history[0].t >= self.window_s - _EPS
        recent = [o for o in history if o.t >= latest - self.window_s - _EPS and o.landmarks is not None]
        t = np.array([o.t for o in recent], dtype=np.float64)
        points = (
            np.stack([o.landmarks.points for o in recent if o.landmarks is not None])
            if recent
            else np.zeros((0, NUM_POINTS, 3), dtype=np.float32)
        )
        checks: dict[str, float] = {}
        ratios: dict[str, float] = {}
        if self.mode in ("blink", "any", "all"):
            depth = self.blink.measure(t, points)
            checks["blink"] = depth
            ratios["blink"] = depth / self.blink.pass_depth
        if self.mode in ("motion", "any", "all"):
            residual = self.motion.measure(points)
            checks["motion"] = residual
            ratios["motion"] = residual / self.motion.threshold
        score = min(ratios.values()) if self.mode == "all" else max(ratios.values())
        if score >= 1.0:
            return LivenessResult(live=True, score=score, checks=checks)
        return LivenessResult(live=False if watched else None, score=score, checks=checks)


def build_policy(config: LivenessConfig) -> LivenessPolicy:
    """The policy the settings ask for: ``NoLiveness`` when ``mode`` is ``off``."""
    if config.mode == "off":
        return NoLiveness()
    return LandmarkLiveness(
        config.mode,
        config.window_s,
        BlinkCheck(config.blink_close_ratio, config.blink_max_s),
        MotionCheck(config.motion_threshold),
    )
