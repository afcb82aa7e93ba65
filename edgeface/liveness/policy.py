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

``PassivePolicy`` (mode ``passive``, or ``passive+blink`` ... ``passive+all``) adds the
anti-spoofing model (``passive.py``): the embed stage scores a track's face each time it embeds it,
and the policy takes the mean fused live probability of the scored sightings in the window
(``checks["passive"]``). With ``passive_samples`` of them it is a verdict at once -- a print or a
screen fails on the first evaluation instead of at the end of the window -- and a combination needs
the model *and* the landmark checks: the model stops a phone playing a video (which moves and
blinks), the landmark checks a print the model takes for skin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast, runtime_checkable

import numpy as np

from edgeface.config import LivenessConfig
from edgeface.data import Landmarks, LivenessResult
from edgeface.liveness.blink import BlinkCheck
from edgeface.liveness.motion import MotionCheck
from edgeface.vision.landmarks import NUM_POINTS

CheckMode = Literal["blink", "motion", "any", "all"]
PASSIVE = "passive"
# Scored sightings needed for a passive verdict: as many as the decider's default votes, so the
# first evaluation of a track has them; the mean of three crops is steadier than one frame's score.
PASSIVE_SAMPLES = 3

# Frame clocks are sums of 1/fps steps: a track watched for 2.9999999 s has been watched for 3 s.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class TrackObservation:
    """One sighting of a track: what a liveness check may look at, oldest first in a history."""

    t: float  # the frame clock (seconds), as used by the tracker
    landmarks: Landmarks | None  # None when FaceMesh rejected the crop
    passive: float | None = None  # the passive model's fused live probability, on sightings it scored


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

    @property
    def uses_landmarks(self) -> bool:
        """Whether ``assess`` reads FaceMesh landmarks: the pipeline then runs FaceMesh on every sighting."""
        ...

    def assess(self, history: TrackHistory) -> LivenessResult:
        """Judge the track from its sightings, oldest first; ``live=None`` when there is too little evidence."""
        ...


class NoLiveness:
    """Liveness disabled: never blocks a grant, reports ``live=None`` and needs no history."""

    required = False
    window_s = 0.0
    uses_landmarks = False

    def assess(self, history: TrackHistory) -> LivenessResult:
        """No evidence is gathered; the result says so."""
        return LivenessResult(live=None, score=0.0, checks={})


class LandmarkLiveness:
    """Blink and/or motion evidence from a track's FaceMesh landmarks (see the module docstring)."""

    required = True
    uses_landmarks = True

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


class PassivePolicy:
    """The passive model's scores over the window, alone or ANDed with a landmark policy (see the module docstring)."""

    required = True

    def __init__(
        self,
        threshold: float,
        window_s: float,
        samples: int = PASSIVE_SAMPLES,
        landmarks: LandmarkLiveness | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"passive threshold must be in (0, 1), got {threshold}")
        if samples < 1:
            raise ValueError(f"passive samples must be at least 1, got {samples}")
        if window_s <= 0:
            raise ValueError(f"liveness window must be positive, got {window_s}")
        self.threshold = threshold
        self.samples = samples
        self.window_s = window_s
        self.landmarks = landmarks
        self.uses_landmarks = landmarks is not None

    def assess(self, history: TrackHistory) -> LivenessResult:
        """Pass or fail once ``samples`` sightings in the window are scored (and the landmark checks, if combined)."""
        if not history:
            return LivenessResult(live=None, score=0.0, checks={})
        latest = history[-1].t
        scores = [o.passive for o in history if o.passive is not None and o.t >= latest - self.window_s - _EPS]
        checks: dict[str, float] = {}
        live: bool | None = None
        score = 0.0
        if scores:
            mean = float(np.mean(scores))
            checks[PASSIVE] = mean
            score = mean / self.threshold
            if len(scores) >= self.samples:
                live = mean >= self.threshold
        if self.landmarks is None:
            return LivenessResult(live=live, score=score, checks=checks)
        other = self.landmarks.assess(history)
        checks.update(other.checks)
        score = min(score, other.score)
        if live is False or other.live is False:
            return LivenessResult(live=False, score=score, checks=checks)
        if live is True and other.live is True:
            return LivenessResult(live=True, score=score, checks=checks)
        return LivenessResult(live=None, score=score, checks=checks)


def uses_passive(mode: str) -> bool:
    """Whether a ``liveness.mode`` needs the passive model (``passive`` or ``passive+...``)."""
    return mode == PASSIVE or mode.startswith(PASSIVE + "+")


def build_policy(config: LivenessConfig, passive_threshold: float | None = None) -> LivenessPolicy:
    """The policy the settings ask for: ``NoLiveness`` when ``mode`` is ``off``.

    A mode with ``passive`` needs ``passive_threshold``: the configured one, else the model's default.
    """
    if config.mode == "off":
        return NoLiveness()
    landmark_mode = config.mode.removeprefix(PASSIVE).removeprefix("+")
    landmarks = (
        LandmarkLiveness(
            cast(CheckMode, landmark_mode),
            config.window_s,
            BlinkCheck(config.blink_close_ratio, config.blink_max_s),
            MotionCheck(config.motion_threshold),
        )
        if landmark_mode
        else None
    )
    if not uses_passive(config.mode):
        assert landmarks is not None
        return landmarks
    threshold = config.passive_threshold if config.passive_threshold is not None else passive_threshold
    if threshold is None:
        raise ValueError(f"liveness mode {config.mode!r} needs the passive model's threshold")
    return PassivePolicy(threshold, config.window_s, config.passive_samples, landmarks)
