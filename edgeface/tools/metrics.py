"""Verification, identification and latency metrics: pure numpy, no I/O.

Convention: a higher score means "more likely the same person", and a pair is accepted when
``score >= threshold``. Distances (dlib's Euclidean) are passed negated. A pair that could not be
scored (no face found) is given ``-inf``: no finite threshold accepts it, so a detection failure
counts as a false reject of a genuine pair and a correct reject of an impostor pair.

Thresholds are always score values that occur in the data (plus ``+inf``, "accept nothing"); no
metric here interpolates between two operating points, so each number can be checked by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Roc:
    """Operating points, one per candidate threshold, thresholds strictly decreasing.

    ``thresholds[0]`` is ``+inf`` (nothing accepted); each further entry is a distinct finite score.
    """

    thresholds: F64
    far: F64  # false accept rate: impostor pairs with score >= threshold / impostor pairs
    tar: F64  # true accept rate: genuine pairs with score >= threshold / genuine pairs
    accuracy: F64  # (genuine accepted + impostors rejected) / all pairs
    genuine: int
    impostor: int


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """One threshold and what it yields."""

    threshold: float
    value: float  # the metric asked for: accuracy, TAR or EER
    far: float
    tar: float


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds; ``n`` samples (all zero when there were none)."""

    n: int
    mean: float
    p50: float
    p95: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "p50": self.p50, "p95": self.p95, "max": self.max}


def _as_arrays(scores: Sequence[float] | F64, labels: Sequence[bool] | BoolArray) -> tuple[F64, BoolArray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any() or np.isposinf(s).any():
        raise ValueError("scores contain NaN or +inf")
    if not y.any() or y.all():
        raise ValueError("need at least one genuine (same) and one impostor (different) pair")
    return s, y


def roc(scores: Sequence[float] | F64, labels: Sequence[bool] | BoolArray) -> Roc:
    """Every operating point of ``score >= t`` for t in (+inf, distinct finite scores descending)."""
    s, y = _as_arrays(scores, labels)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cumulative accepts after taking every pair down to position i; a threshold equal to a score
    # accepts all ties, so only the last position of each run of equal scores is an operating point.
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last_of_run = np.append(s_sorted[1:] != s_sorted[:-1], True)
    keep = last_of_run & np.isfinite(s_sorted)
    genuine, impostor = int(y.sum()), int((~y).sum())
    thresholds = np.concatenate(([np.inf], s_sorted[keep]))
    tp_at = np.concatenate(([0], tp[keep])).astype(np.float64)
    fp_at = np.concatenate(([0], fp[keep])).astype(np.float64)
    accuracy = (tp_at + (impostor - fp_at)) / (genuine + impostor)
    return Roc(thresholds, fp_at / impostor, tp_at / genuine, accuracy, genuine, impostor)


def accuracy_at(scores: Sequence[float] | F64, labels: Sequence[bool] | BoolArray, threshold: float) -> float:
    """Fraction of pairs decided right when accepting ``score >= threshold``."""
    s, y = _as_arrays(scores, labels)
    return float(np.mean((s >= threshold) == y))


def rates_at(
    scores: Sequence[float] | F64, labels: Sequence[bool] | BoolArray, threshold: float
) -> tuple[float, float]:
    """(FAR, TAR) when accepting ``score >= threshold``."""
    s, y = _as_arrays(scores, labels)
    accept = s >= threshold
    return float(np.mean(accept[~y])), float(np.mean(accept[y]))


def best_accuracy(curve: Roc) -> OperatingPoint:
    """The threshold with the highest accuracy; among ties the highest threshold (fewest false accepts)."""
    i = int(np.argmax(curve.accuracy))  # argmax returns the first maximum = the highest threshold
    return OperatingPoint(
        float(curve.thresholds[i]), float(curve.accuracy[i]), float(curve.far[i]), float(curve.tar[i])
    )


def best_accuracy_interval(curve: Roc) -> tuple[float, float]:
    """(low, high): every threshold t with low < t <= high decides exactly as ``best_accuracy`` does.

    ``high`` is the best threshold, ``low`` the next lower score in the data (``-inf`` if none):
    the width of this gap is the calibration margin around the best threshold.
    """
    i = int(np.argmax(curve.accuracy))
    low = float(curve.thresholds[i + 1]) if i + 1 < curve.thresholds.size else -np.inf
    return low, float(curve.thresholds[i])


def tar_at_far(curve: Roc, target_far: float) -> OperatingPoint:
    """TAR at the smallest threshold whose FAR is <= ``target_far`` (no interpolation).

    FAR never increases with the threshold, so the smallest admissible threshold has the highest
    TAR among all thresholds that respect the target. With fewer than 1/target impostor pairs only
    zero false accepts qualify; the report shows the impostor count so that this is visible.
    """
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target FAR {target_far} is not in [0, 1]")
    admissible = np.flatnonzero(curve.far <= target_far)  # thresholds[0] = +inf always qualifies (FAR 0)
    i = int(admissible[-1])
    return OperatingPoint(float(curve.thresholds[i]), float(curve.tar[i]), float(curve.far[i]), float(curve.tar[i]))


def equal_error_rate(curve: Roc) -> OperatingPoint:
    """EER = min over thresholds of max(FAR, FRR), and the threshold reaching it.

    On a smooth ROC this is exactly the rate where FAR = FRR; on the step curve of a finite set it
    is the closest achievable operating point, never an optimistic interpolation. Ties go to the
    highest threshold.
    """
    worst = np.maximum(curve.far, 1.0 - curve.tar)
    i = int(np.argmin(worst))
    return OperatingPoint(float(curve.thresholds[i]), float(worst[i]), float(curve.far[i]), float(curve.tar[i]))


def rank1_accuracy(scores: F64, probe_labels: Sequence[str], gallery_labels: Sequence[str]) -> tuple[float, int]:
    """Closed-set rank-1: share of probes (rows of a (P, G) score matrix) whose best gallery entry has their label.

    A probe row that is all ``-inf`` (no face in the probe, or an empty gallery) counts as a miss.
    Returns (rate, correct).
    """
    s = np.asarray(scores, dtype=np.float64)
    probes, gallery = np.asarray(probe_labels, dtype=object), np.asarray(gallery_labels, dtype=object)
    if s.shape != (probes.size, gallery.size):
        raise ValueError(f"score matrix {s.shape} does not match {probes.size} probes x {gallery.size} gallery")
    if probes.size == 0:
        raise ValueError("no probes")
    if gallery.size == 0:
        return 0.0, 0
    best = np.argmax(s, axis=1)
    hit = (gallery[best] == probes) & np.isfinite(s[np.arange(probes.size), best])
    correct = int(hit.sum())
    return correct / probes.size, correct


def latency_summary(samples_ms: Sequence[float] | F64) -> LatencySummary:
    """Mean, median, 95th percentile (linear, numpy's default) and max of latency samples."""
    a = np.asarray(samples_ms, dtype=np.float64).ravel()
    if a.size == 0:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0)
    p50, p95 = np.percentile(a, [50.0, 95.0])
    return LatencySummary(int(a.size), float(a.mean()), float(p50), float(p95), float(a.max()))


def cosine_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> F64:
    """Cosine similarity of every row of ``a`` (N, D) with every row of ``b`` (M, D)."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    out: F64 = an.astype(np.float64) @ bn.astype(np.float64).T
    return out


def neg_euclidean_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> F64:
    """Minus the Euclidean distance of every row of ``a`` with every row of ``b`` (higher = closer)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    sq = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    out: F64 = -np.sqrt(np.maximum(sq, 0.0))
    return out


@dataclass(frozen=True, slots=True)
class FarThreshold:
    """The threshold for a target FAR and what it yields.

    ``threshold`` is the lowest score in the data whose FAR is within the target; every threshold in
    ``(low, threshold]`` decides the same pairs the same way (``low`` is the next lower score, the
    first one that would break the target; ``-inf`` when even accepting everything keeps it).
    ``zero_fa_only`` says the target is below 1/impostors, so it could only be met with no false
    accept at all: the figure is "no impostor accepted", not a measured rate of ``target``.
    """

    target: float
    threshold: float
    low: float
    far: float
    tar: float
    false_accepts: int
    impostor: int
    zero_fa_only: bool


@dataclass(frozen=True, slots=True)
class FoldResult:
    """One held-out fold: the threshold chosen on the other folds and how it did on this one."""

    fold: int
    threshold: float
    accuracy: float
    far: float
    tar: float
    pairs: int


@dataclass(frozen=True, slots=True)
class KFold:
    """The standard k-fold verification protocol (LFW View 2 has 10 folds); std is the population std."""

    folds: tuple[FoldResult, ...]
    mean: float
    std: float


def threshold_at_far(curve: Roc, target_far: float) -> FarThreshold:
    """The lowest threshold whose FAR is <= ``target_far``, its TAR, and the interval deciding alike.

    Ties: a threshold accepts every pair scoring at or above it, so equal scores are accepted or
    rejected together; when the impostor at the boundary ties a genuine pair, both are rejected.
    With N impostor pairs the achievable FARs are k/N: a target below 1/N can only mean zero false
    accepts (the threshold is then just above the highest impostor score).
    """
    point = tar_at_far(curve, target_far)
    i = int(np.flatnonzero(curve.thresholds == point.threshold)[0])
    low = float(curve.thresholds[i + 1]) if i + 1 < curve.thresholds.size else -np.inf
    return FarThreshold(
        target=target_far,
        threshold=point.threshold,
        low=low,
        far=point.far,
        tar=point.tar,
        false_accepts=round(point.far * curve.impostor),
        impostor=curve.impostor,
        zero_fa_only=target_far * curve.impostor < 1.0,
    )


def gap_midpoint(low: float, high: float) -> float:
    """A threshold in the middle of ``(low, high]``: as far as the data allows from both neighbours.

    A threshold equal to a score in the data sits on that pair; the midpoint of the gap to the next
    score is the choice that generalises (held-out folds, a deployment). An infinite end (nothing
    lower, or nothing accepted) cannot be halved: then ``high``.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return high
    return (low + high) / 2.0


def kfold_accuracy(
    scores: Sequence[float] | F64, labels: Sequence[bool] | BoolArray, folds: Sequence[int] | npt.NDArray[np.int_]
) -> KFold:
    """k-fold verification accuracy: each fold is decided at the best threshold of the other folds.

    On the other folds the threshold is the middle of the best-accuracy interval (``gap_midpoint`` of
    ``best_accuracy_interval``); the held-out fold is scored at it. Returns each fold and the mean and
    population standard deviation of the fold accuracies.
    """
    s, y = _as_arrays(scores, labels)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise ValueError(f"{s.size} scores but {f.size} fold numbers")
    names = sorted({int(v) for v in f})
    if len(names) < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {names}")
    results = []
    for fold in names:
        held = f == fold
        train_s, train_y = s[~held], y[~held]
        if not train_y.any() or train_y.all():
            raise ValueError(f"the folds other than {fold} need genuine and impostor pairs")
        threshold = gap_midpoint(*best_accuracy_interval(roc(train_s, train_y)))
        accept, truth = s[held] >= threshold, y[held]
        far = float(accept[~truth].mean()) if (~truth).any() else 0.0
        tar = float(accept[truth].mean()) if truth.any() else 0.0
        results.append(FoldResult(fold, threshold, float(np.mean(accept == truth)), far, tar, int(held.sum())))
    accuracies = np.array([r.accuracy for r in results])
    return KFold(tuple(results), float(accuracies.mean()), float(accuracies.std()))
