"""The k-fold protocol and target-FAR thresholds against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from edgeface.tools import metrics

# Fold 1 sorted: G .9, G .8, I .6, I .3 -> best threshold .8, interval (.6, .8], midpoint .7.
# Fold 2 sorted: G .75, G .7, I .4, I .2 -> best threshold .7, interval (.4, .7], midpoint .55.
KF_SCORES = [0.9, 0.8, 0.3, 0.6, 0.7, 0.75, 0.4, 0.2]
KF_LABELS = [True, True, False, False, True, True, False, False]
KF_FOLDS = [1, 1, 1, 1, 2, 2, 2, 2]


def test_each_fold_is_decided_at_the_threshold_of_the_others() -> None:
    result = metrics.kfold_accuracy(KF_SCORES, KF_LABELS, KF_FOLDS)
    one, two = result.folds
    # Fold 1 at 0.55 (from fold 2): .9 .8 accepted, .6 accepted (a false accept), .3 rejected.
    assert (one.fold, one.threshold, one.accuracy, one.far, one.tar) == (1, pytest.approx(0.55), 0.75, 0.5, 1.0)
    # Fold 2 at 0.7 (from fold 1): .75 and .7 accepted (ties accept), .4 and .2 rejected.
    assert (two.fold, two.threshold, two.accuracy, two.far, two.tar) == (2, pytest.approx(0.7), 1.0, 0.0, 1.0)
    assert (one.pairs, two.pairs) == (4, 4)
    assert result.mean == pytest.approx(0.875)
    assert result.std == pytest.approx(0.125)  # population std of (0.75, 1.0)


def test_kfold_fold_numbers_need_not_be_contiguous_or_in_order() -> None:
    renamed = metrics.kfold_accuracy(KF_SCORES, KF_LABELS, [7 if f == 1 else 3 for f in KF_FOLDS])
    assert [f.fold for f in renamed.folds] == [3, 7]
    assert [f.accuracy for f in renamed.folds] == [1.0, 0.75]


def test_kfold_refuses_one_fold_and_folds_without_both_kinds() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        metrics.kfold_accuracy(KF_SCORES, KF_LABELS, [1] * 8)
    with pytest.raises(ValueError, match="8 scores but 7 fold"):
        metrics.kfold_accuracy(KF_SCORES, KF_LABELS, KF_FOLDS[:7])
    # Fold 2 holds every impostor: training on it alone has no genuine pair.
    with pytest.raises(ValueError, match="other than 1"):
        metrics.kfold_accuracy([0.9, 0.8, 0.3, 0.2], [True, True, False, False], [1, 1, 2, 2])


# Sorted: G .9, I .85, G .8, G .7, I .6, G .5, I .4, I .3, I .2 -- 4 genuine, 5 impostor pairs.
FAR_SCORES = [0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
FAR_LABELS = [True, False, True, True, False, True, False, False, False]


def test_threshold_at_far_is_the_lowest_within_target() -> None:
    curve = metrics.roc(FAR_SCORES, FAR_LABELS)
    # 1 of 5 impostors allowed: thresholds .85, .8, .7 keep FAR at 0.2; .6 would make it 0.4.
    point = metrics.threshold_at_far(curve, 0.2)
    assert (point.threshold, point.low, point.far, point.tar) == (0.7, 0.6, 0.2, 0.75)
    assert (point.false_accepts, point.impostor, point.zero_fa_only) == (1, 5, False)


def test_a_target_below_one_impostor_means_no_false_accept() -> None:
    curve = metrics.roc(FAR_SCORES, FAR_LABELS)
    point = metrics.threshold_at_far(curve, 1e-3)  # 5 impostors: 1e-3 cannot be measured, only 0/5
    assert (point.threshold, point.low, point.far, point.tar) == (0.9, 0.85, 0.0, 0.25)
    assert point.zero_fa_only and point.false_accepts == 0


def test_a_genuine_pair_tied_with_the_boundary_impostor_is_rejected_with_it() -> None:
    scores = [0.9, 0.85, 0.85, 0.5]
    curve = metrics.roc(scores, [True, True, False, False])
    point = metrics.threshold_at_far(curve, 0.0)
    assert (point.threshold, point.tar, point.far) == (0.9, 0.5, 0.0)


def test_accepting_everything_within_target_has_no_lower_neighbour() -> None:
    curve = metrics.roc([0.9, 0.1], [True, False])
    point = metrics.threshold_at_far(curve, 1.0)
    assert (point.threshold, point.low, point.tar) == (0.1, -math.inf, 1.0)


def test_gap_midpoint() -> None:
    assert metrics.gap_midpoint(0.6, 0.8) == pytest.approx(0.7)
    assert metrics.gap_midpoint(-math.inf, 0.8) == 0.8
    assert metrics.gap_midpoint(0.9, math.inf) == math.inf
