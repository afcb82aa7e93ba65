"""Decision rules on one match or one face: thresholds, classification, quality gates and vote fusion.

Pure functions of their arguments; ``decide.Decider`` applies them to a track over time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeface.config import DecisionConfig
from edgeface.data import FloatArray, Match, Quality, Reason, Status

# Width of the "uncertain" band below the match threshold, and the lead over the second-best person,
# for an embedder whose manifest entry carries no calibrated values (the shipped ones do: see
# docs/accuracy.md); about one standard deviation of same-person similarity for dlib/ArcFace-class models.
DEFAULT_UNCERTAIN_BAND = 0.05
DEFAULT_MARGIN = 0.04
# Fusion weights saturate here: a face this large and this sharp is as good as the model can use
# (the embedder's chip is 150 px); smaller or softer faces count for proportionally less.
FULL_WEIGHT_FACE_PX = 112.0
FULL_WEIGHT_SHARPNESS = 100.0
# Even the worst face that passed the gates keeps some say, so one good vote cannot be outvoted by zero.
MIN_WEIGHT = 0.05
# A chip aligned on the detector's keypoints (FaceMesh rejected the face) is a less exact chip: it
# counts for half a landmark-aligned one of the same size and sharpness when a track's votes are fused.
KEYPOINT_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Cosine-similarity cut-offs: at or above ``match`` is a person, below ``unknown`` a stranger."""

    match: float
    unknown: float
    margin: float

    @classmethod
    def resolve(
        cls, config: DecisionConfig, model_default: float, *, band: float | None = None, margin: float | None = None
    ) -> Thresholds:
        """Fill unset settings from the embedder's manifest: threshold, uncertain band, margin."""
        match = config.match_threshold if config.match_threshold is not None else model_default
        width = band if band is not None else DEFAULT_UNCERTAIN_BAND
        unknown = config.unknown_threshold if config.unknown_threshold is not None else match - width
        lead = config.margin if config.margin is not None else margin if margin is not None else DEFAULT_MARGIN
        return cls(match=match, unknown=min(unknown, match), margin=lead)


def classify(match: Match, th: Thresholds) -> tuple[Status, Reason]:
    """The status and reason for one match result (no gates, no liveness)."""
    best = match.best
    if best is None:
        return "unknown", "empty_database"
    if best.similarity >= th.match:
        if match.negative_similarity >= best.similarity:
            return "unknown", "negative_match"
        if match.margin < th.margin:
            return "uncertain", "ambiguous_margin"
        return "known", "matched"
    if best.similarity >= th.unknown:
        return "uncertain", "uncertain_band"
    return "unknown", "below_threshold"


class GateLimits(Protocol):
    """The quality gates' limits (``DecisionConfig`` or ``Gates``)."""

    @property
    def min_face_px(self) -> int: ...

    @property
    def min_sharpness(self) -> float: ...

    @property
    def max_yaw_deg(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Gates:
    """The quality gates' limits as plain values, for the embed stage."""

    min_face_px: int
    min_sharpness: float
    max_yaw_deg: float

    @classmethod
    def of(cls, limits: GateLimits) -> Gates:
        return cls(limits.min_face_px, limits.min_sharpness, limits.max_yaw_deg)


def gate(quality: Quality, config: GateLimits) -> Reason | None:
    """Why a face may not be decided (too small, turned away, blurred), or None when it may."""
    if quality.face_px < config.min_face_px:
        return "too_small"
    if abs(quality.yaw) > config.max_yaw_deg:
        return "bad_pose"
    if quality.sharpness < config.min_sharpness:
        return "too_blurry"
    return None


def sample_weight(quality: Quality) -> float:
    """Fusion weight of one embedding: larger, sharper, more frontal faces count more."""
    size = min(1.0, quality.face_px / FULL_WEIGHT_FACE_PX)
    sharp = min(1.0, quality.sharpness / FULL_WEIGHT_SHARPNESS)
    # NaN yaw (no landmarks) says nothing about pose: no penalty.
    pose = math.cos(math.radians(min(abs(quality.yaw), 80.0))) if math.isfinite(quality.yaw) else 1.0
    aligned = KEYPOINT_WEIGHT if quality.aligned_by == "keypoints" else 1.0
    return max(MIN_WEIGHT, size * sharp * pose * aligned)


def fuse(vectors: FloatArray, weights: Sequence[float]) -> FloatArray:
    """Weighted mean of L2-normalised rows, re-normalised."""
    w = np.asarray(weights, dtype=np.float32)
    mean = (vectors * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    out: FloatArray = (mean / norm if norm > 0 else mean).astype(np.float32)
    return out
