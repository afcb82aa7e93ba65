"""Metric maths against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeface.tools import metrics

# Sorted by score: G G I G I I G I (G = same person, I = different).
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
LABELS = [True, True, False, True, False, False, True, False]


def test_roc_lists_every_operating_point_from_accept_nothing() -> None:
    curve = metrics.roc(SCORES, LABELS)
    assert curve.genuine == 4 and curve.impostor == 4
    assert curve.thresholds.tolist() == [math.inf, *SCORES]
    assert curve.tar.tolist() == [0, 0.25, 0.5, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0]
    assert curve.far.tolist() == [0, 0, 0, 0.25, 0.25, 0.5, 0.75, 0.75, 1.0]
    assert curve.accuracy.tolist() == [0.5, 0.625, 0.75, 0.625, 0.75, 0.625, 0.5, 0.625, 0.5]


def test_roc_is_independent_of_input_order() -> None:
    order = [5, 0, 7, 2, 1, 6, 3, 4]
    shuffled = metrics.roc([SCORES[i] for i in order], [LABELS[i] for i in order])
    assert shuffled.tar.tolist() == metrics.roc(SCORES, LABELS).tar.tolist()


def test_tied_scores_are_accepted_together() -> None:
    curve = metrics.roc([0.5, 0.5, 0.1], [True, False, False])
    assert curve.thresholds.tolist() == [math.inf, 0.5, 0.1]
    assert curve.tar.tolist() == [0.0, 1.0, 1.0]
    assert curve.far.tolist() == [0.0, 0.5, 1.0]


def test_unscored_pairs_are_never_accepted() -> None:
    curve = metrics.roc([0.9, -math.inf, 0.2], [True, True, False])
    assert curve.thresholds.tolist() == [math.inf, 0.9, 0.2]
    assert curve.tar.max() == 0.5
    assert metrics.tar_at_far(curve, 0.0).value == 0.5


def test_accuracy_and_rates_at_a_threshold() -> None:
    # 0.65 accepts 0.9, 0.8 (genuine) and 0.7 (impostor): 2 genuine + 3 impostors decided right.
    assert metrics.accuracy_at(SCORES, LABELS, 0.65) == pytest.approx(5 / 8)
    assert metrics.rates_at(SCORES, LABELS, 0.65) == (0.25, 0.5)
    # A threshold equal to a score accepts it.
    assert metrics.rates_at(SCORES, LABELS, 0.7) == (0.25, 0.5)
    assert metrics.accuracy_at(SCORES, LABELS, 0.71) == pytest.approx(6 / 8)


def test_best_accuracy_prefers_the_higher_threshold_on_ties() -> None:
    curve = metrics.roc(SCORES, LABELS)
    best = metrics.best_accuracy(curve)
    assert (best.threshold, best.value, best.far, best.tar) == (0.8, 0.75, 0.0, 0.5)
    # Any threshold above 0.7 and up to 0.8 accepts exactly 0.9 and 0.8.
    assert metrics.best_accuracy_interval(curve) == (0.7, 0.8)
    # Perfectly separated: the margin runs from the best impostor to the worst genuine pair.
    separated = metrics.roc([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    assert metrics.best_accuracy_interval(separated) == (0.3, 0.8)


def test_tar_at_far_takes_the_smallest_threshold_within_the_target() -> None:
    curve = metrics.roc(SCORES, LABELS)
    quarter = metrics.tar_at_far(curve, 0.25)
    assert (quarter.threshold, quarter.value, quarter.far) == (0.6, 0.75, 0.25)
    # With 4 impostors, FAR 1e-2 allows no false accept at all.
    strict = metrics.tar_at_far(curve, 1e-2)
    assert (strict.threshold, strict.value, strict.far) == (0.8, 0.5, 0.0)
    just_under = metrics.tar_at_far(curve, 0.24)
    assert just_under.threshold == 0.8
    with pytest.raises(ValueError):
        metrics.tar_at_far(curve, 1.5)


def test_equal_error_rate_is_the_best_worst_case() -> None:
    eer = metrics.equal_error_rate(metrics.roc(SCORES, LABELS))
    # At 0.6: FAR 1/4 and FRR 1/4; no threshold does better on both.
    assert (eer.threshold, eer.value, eer.far, eer.tar) == (0.6, 0.25, 0.25, 0.75)
    separable = metrics.equal_error_rate(metrics.roc([0.9, 0.8, 0.1], [True, True, False]))
    assert (separable.value, separable.threshold) == (0.0, 0.8)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="labels"):
        metrics.roc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="genuine"):
        metrics.roc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc([float("nan"), 0.2], [True, False])


def test_rank1_counts_unscored_probes_as_misses() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.3], [-np.inf, -np.inf], [0.4, 0.8]])
    rate, correct = metrics.rank1_accuracy(scores, ["a", "a", "b", "b"], ["a", "b"])
    assert correct == 2
    assert rate == 0.5
    with pytest.raises(ValueError):
        metrics.rank1_accuracy(scores, ["a"], ["a", "b"])


def test_latency_summary() -> None:
    summary = metrics.latency_summary([3.0, 1.0, 100.0, 2.0, 4.0])
    # numpy's linear percentile: p95 sits 0.8 of the way from 4 to 100.
    assert summary.as_dict() == {"n": 5, "mean": 22.0, "p50": 3.0, "p95": pytest.approx(80.8), "max": 100.0}
    assert metrics.latency_summary([]).n == 0


def test_similarity_matrices() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    b = np.array([[3.0, 4.0]], dtype=np.float32)
    assert metrics.cosine_matrix(a, b)[:, 0] == pytest.approx([0.6, 0.8])
    assert metrics.neg_euclidean_matrix(a, b)[:, 0] == pytest.approx([-math.sqrt(20), -math.sqrt(13)])
