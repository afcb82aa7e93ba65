"""``edgeface eval --calibrate``: an embedder's decision defaults for a door, from a labelled set.

A door lives at a low false accept rate, and a set's own pairs list is too short to measure one: LFW
View 1 has ~1,550 impostor pairs, so its finest FAR step is 6e-4. Calibration therefore scores *every*
pair of the set's images (identity = the photo's folder, LFW's layout): every different-person pair
is an impostor comparison a door would make, ~12 million for View 1's 4,900 photos.

* ``match`` (the manifest's ``default_threshold``): the middle of the gap at the lowest threshold
  whose all-pairs FAR is <= ``door_far`` (1e-3: one stranger photo in a thousand accepted as a given
  person), rounded *up* to 3 decimals so that rounding never adds false accepts.
* ``uncertain_band``: ``match`` minus the threshold at FAR ``stranger_far`` (1e-2). Below the band a
  face is "unknown"; 99 % of stranger photos fall there, and the band holds the faces worth a
  second look (an enrolled person on a poor frame, or one stranger in a hundred).
* ``margin``: on door-sized galleries (100 persons, first photo each, 20 seeded draws) with every
  other photo as a probe, the 1st percentile of the right person's lead over the next one among
  probes accepted with the right name: the margin rule then turns at most 1 % of right recognitions
  into "uncertain". How many wrong names and named strangers it catches is reported next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeface.tools import metrics

DOOR_FAR = 1e-3
STRANGER_FAR = 1e-2
# Share of right recognitions the margin rule may turn into "uncertain".
MARGIN_COST = 0.01
DECIMALS = 3
# Door-sized galleries for the margin: a household or a small office enrols tens of persons, not LFW's
# thousands (against 3,000 persons even a 1e-3 single-photo FAR names a wrong person every third probe).
DOOR_GALLERY = 100
MARGIN_GALLERIES = 20
MARGIN_SEED = 0


@dataclass(frozen=True, slots=True)
class MarginStats:
    """What the margin was derived from: probe outcomes summed over the door-sized galleries."""

    margin: float
    named_right: int  # enrolled persons' photos accepted with their own name
    named_wrong: int  # enrolled persons' photos accepted with another person's name
    strangers: int  # photos of persons not enrolled in that gallery
    strangers_named: int  # ... accepted as an enrolled person (identification false accepts)
    caught_by_margin: int  # wrong or stranger acceptances whose lead is below the margin


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """A threshold and its false and true accept rates on the calibration pairs."""

    threshold: float
    far: float
    tar: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Recommended decision defaults of one embedder and what they were measured on."""

    images: int
    identities: int
    genuine_pairs: int
    impostor_pairs: int
    match: float
    match_far: float
    match_tar: float
    unknown: float
    uncertain_band: float
    unknown_far: float
    genuine_in_band: float  # genuine pairs between unknown and match: "uncertain", not "unknown"
    margin: MarginStats
    method: str
    # The embedder's threshold in use, scored on the same pairs: is it still a door's operating point here?
    in_use: OperatingPoint | None = None


def _round_up(value: float) -> float:
    if not math.isfinite(value):  # +inf: no threshold reaches the target, nothing may be accepted
        return value
    scale = 10.0**DECIMALS
    return math.ceil(value * scale - 1e-9) / scale


def _all_pairs(scores: metrics.F64, labels: Sequence[str]) -> tuple[metrics.F64, metrics.BoolArray]:
    a, b = np.triu_indices(len(labels), k=1)
    names = np.asarray(labels, dtype=object)
    return scores[a, b], np.asarray(names[a] == names[b], dtype=bool)


def _margin(scores: metrics.F64, labels: Sequence[str], match: float) -> MarginStats:
    """The margin and what it does, on door-sized galleries drawn from the set (seeded, reproducible)."""
    names = np.asarray(labels, dtype=object)
    photos: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        photos.setdefault(name, []).append(i)
    multi = sorted(n for n, p in photos.items() if len(p) >= 2)
    if len(multi) < 2:
        raise ValueError("calibration needs at least two persons with two or more photos")
    rng = np.random.default_rng(MARGIN_SEED)
    leads: list[metrics.F64] = []
    right = wrong = strangers = strangers_named = 0
    wrong_leads: list[metrics.F64] = []
    for _ in range(MARGIN_GALLERIES):
        enrolled = set(rng.choice(multi, size=min(DOOR_GALLERY, len(multi)), replace=False).tolist())
        gallery = np.array([photos[n][0] for n in sorted(enrolled)])
        probes = np.array([i for i in range(len(labels)) if photos[labels[i]][0] != i or labels[i] not in enrolled])
        matrix = scores[np.ix_(probes, gallery)]
        order = np.argsort(-matrix, axis=1)[:, :2]
        rows = np.arange(probes.size)
        top, second = matrix[rows, order[:, 0]], matrix[rows, order[:, 1]]
        with np.errstate(invalid="ignore"):  # a probe without a face: -inf - -inf; it is never accepted
            lead = top - second
        accepted = top >= match
        known = np.array([labels[i] in enrolled for i in probes])
        right_name = names[gallery[order[:, 0]]] == names[probes]
        ok = accepted & known & right_name
        bad = accepted & ~(known & right_name)
        leads.append(lead[ok])
        wrong_leads.append(lead[bad])
        right += int(ok.sum())
        wrong += int((bad & known).sum())
        strangers += int((~known).sum())
        strangers_named += int((bad & ~known).sum())
    all_leads = np.concatenate(leads)
    margin = float(np.percentile(all_leads, 100.0 * MARGIN_COST, method="lower")) if all_leads.size else 0.0
    margin = math.floor(margin * 10.0**DECIMALS) / 10.0**DECIMALS  # rounding down keeps the cost <= 1 %
    caught = int(np.sum(np.concatenate(wrong_leads) < margin))
    return MarginStats(margin, right, wrong, strangers, strangers_named, caught)


def calibrate(
    scores: metrics.F64,
    labels: Sequence[str],
    *,
    door_far: float = DOOR_FAR,
    stranger_far: float = STRANGER_FAR,
    current: float | None = None,
) -> Calibration:
    """Decision defaults from the (N, N) score matrix of N photos and each photo's identity.

    ``current`` (the embedder's threshold in use) is scored on the same pairs too.

    Photos without a face have ``-inf`` rows: their pairs are never accepted (a stranger without a face
    is correctly not named; a genuine pair is a miss).
    """
    pair_scores, same = _all_pairs(scores, labels)
    curve = metrics.roc(pair_scores, same)
    door = metrics.threshold_at_far(curve, door_far)
    match = _round_up(metrics.gap_midpoint(door.low, door.threshold))
    match_far, match_tar = metrics.rates_at(pair_scores, same, match)
    stranger = metrics.threshold_at_far(curve, stranger_far)
    unknown = _round_up(metrics.gap_midpoint(stranger.low, stranger.threshold))
    unknown_far, _ = metrics.rates_at(pair_scores, same, unknown)
    genuine = pair_scores[same]
    in_band = float(np.mean((genuine >= unknown) & (genuine < match)))
    margin = _margin(scores, labels, match)
    in_use = OperatingPoint(current, *metrics.rates_at(pair_scores, same, current)) if current is not None else None
    return Calibration(
        images=len(labels),
        identities=len(set(labels)),
        genuine_pairs=curve.genuine,
        impostor_pairs=curve.impostor,
        match=match,
        match_far=match_far,
        match_tar=match_tar,
        unknown=unknown,
        uncertain_band=round(match - unknown, DECIMALS),
        unknown_far=unknown_far,
        genuine_in_band=in_band,
        margin=margin,
        method=(
            f"all {curve.impostor} different-person pairs of {len(labels)} photos: match = middle of the gap at "
            f"FAR <= {door_far:g} rounded up; band down to FAR {stranger_far:g}; margin = "
            f"{100 * MARGIN_COST:g}th percentile of the right person's lead over the next on {MARGIN_GALLERIES} "
            f"galleries of {DOOR_GALLERY} persons (first photo each)"
        ),
        in_use=in_use,
    )


def format_calibration(model_id: str, c: Calibration) -> list[str]:
    """Report lines for one model."""
    m = c.margin
    p = c.in_use
    current = [f"  threshold in use {p.threshold:.3f}: FAR {p.far:.2e}, TAR {p.tar:.4f}"] if p is not None else []
    return [
        f"{model_id}: calibration on {c.images} photos of {c.identities} persons "
        f"({c.genuine_pairs} same-person, {c.impostor_pairs} different-person pairs)",
        *current,
        f"  match threshold {c.match:.3f}: FAR {c.match_far:.2e}, TAR {c.match_tar:.4f}",
        f"  unknown threshold {c.unknown:.3f} (band {c.uncertain_band:.3f}): FAR {c.unknown_far:.2e}; "
        f"{100 * c.genuine_in_band:.2f} % of same-person pairs fall in the band",
        f"  margin {m.margin:.3f} ({MARGIN_GALLERIES} galleries of {DOOR_GALLERY} persons): {m.named_right} enrolled "
        f"photos named right, {m.named_wrong} named wrong; {m.strangers_named} of {m.strangers} stranger photos "
        f"named ({m.strangers_named / max(1, m.strangers):.2e}); the margin catches {m.caught_by_margin} of these",
    ]
