"""Calibration maths on a hand-built score matrix: 6 photos of 3 persons."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface.tools.calibrate import OperatingPoint, calibrate

LABELS = ["a", "a", "b", "b", "c", "c"]
# Upper triangle; sorted: .95 G, .90 G, .85 I, .80 G, .75 I, .70 I, .65 I, .60 I, .55 I, ...
PAIRS = {
    (0, 1): 0.95, (2, 3): 0.90, (4, 5): 0.80,
    (0, 2): 0.85, (0, 3): 0.70, (0, 4): 0.60, (0, 5): 0.50, (1, 2): 0.65, (1, 3): 0.55,
    (1, 4): 0.45, (1, 5): 0.40, (2, 4): 0.75, (2, 5): 0.35, (3, 4): 0.30, (3, 5): 0.20,
}  # fmt: skip


def _matrix() -> np.ndarray:
    m = np.eye(6)
    for (i, j), s in PAIRS.items():
        m[i, j] = m[j, i] = s
    return m


def test_thresholds_band_and_margin_by_hand() -> None:
    c = calibrate(_matrix(), LABELS, door_far=0.1, stranger_far=0.3)
    assert (c.images, c.identities, c.genuine_pairs, c.impostor_pairs) == (6, 3, 3, 12)
    # FAR <= 0.1 allows 1 of 12 impostors: lowest such threshold .80 (next lower score .75) -> middle .775.
    assert c.match == pytest.approx(0.775)
    assert (c.match_far, c.match_tar) == (pytest.approx(1 / 12), 1.0)
    # FAR <= 0.3 allows 3 of 12: lowest threshold .70, next .65 -> .675; band .1; no genuine pair inside.
    assert c.unknown == pytest.approx(0.675) and c.uncertain_band == pytest.approx(0.1)
    assert c.unknown_far == pytest.approx(3 / 12) and c.genuine_in_band == 0.0
    # Gallery = first photo of a, b, c; probes 1, 3, 5 are named right with leads .30, .20, .30.
    m = c.margin
    assert m.margin == pytest.approx(0.2)
    assert m.named_right == 3 * 20 and m.named_wrong == 0  # 20 draws of the same 3-person gallery
    assert (m.strangers, m.strangers_named, m.caught_by_margin) == (0, 0, 0)
    assert c.in_use is None


def test_the_threshold_in_use_is_scored_on_the_same_pairs() -> None:
    # At .70: impostors .85, .75, .70 accepted (3 of 12); genuine .95, .90, .80 all accepted.
    c = calibrate(_matrix(), LABELS, door_far=0.1, stranger_far=0.3, current=0.70)
    assert c.in_use == OperatingPoint(0.70, pytest.approx(3 / 12), 1.0)
    # At .90: no impostor, two of three genuine pairs.
    c = calibrate(_matrix(), LABELS, door_far=0.1, stranger_far=0.3, current=0.90)
    assert c.in_use is not None and (c.in_use.far, c.in_use.tar) == (0.0, pytest.approx(2 / 3))


def test_a_face_missing_never_matches() -> None:
    scores = _matrix()
    scores[5, :] = scores[:, 5] = -np.inf  # no face in photo 5
    c = calibrate(scores, LABELS, door_far=0.1, stranger_far=0.3)
    assert c.match_tar == pytest.approx(2 / 3)  # (4, 5) can no longer be accepted


def test_calibration_needs_persons_with_two_photos() -> None:
    with pytest.raises(ValueError, match="two or more photos"):
        calibrate(np.eye(3), ["a", "a", "b"], door_far=0.5, stranger_far=0.5)
