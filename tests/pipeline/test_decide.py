"""Decision rules with hand-built Match values: thresholds, band, margin, negatives, gates, votes,
cooldown, presence, grant, liveness, re-decisions on a database change, unknown spool and the track
sample registry.

These inputs are data, not faces: a ``TableLookup`` answers each query with a prepared Match, keyed
by the index of the query's largest component, so a test chooses what "the database" says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pytest

from edgeface.config import DecisionConfig
from edgeface.data import (
    BBox,
    Candidate,
    Detection,
    Embedding,
    Face,
    FloatArray,
    Frame,
    ImageArray,
    LivenessResult,
    Match,
    Quality,
    Reason,
)
from edgeface.liveness.policy import LivenessPolicy, NoLiveness, TrackHistory
from edgeface.pipeline.decide import Decider, Outcome
from edgeface.pipeline.lookup import LookupResult
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.rules import DEFAULT_MARGIN, Thresholds, classify, fuse, gate, sample_weight
from edgeface.pipeline.samples import Sample
from edgeface.pipeline.tracker import Track
from edgeface.pipeline.unknowns import UnknownRouter

DIM = 8
TH = Thresholds(match=0.80, unknown=0.70, margin=0.05)
GOOD = Quality(face_px=120.0, sharpness=150.0, yaw=2.0, pitch=0.0)
CHIP = np.zeros((4, 4, 3), dtype=np.uint8)


def m(*cands: tuple[str, float], negative: float = -1.0) -> Match:
    return Match(tuple(Candidate(pid, pid.title(), sim) for pid, sim in cands), negative)


def unit(i: int) -> FloatArray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


class TableLookup:
    """query -> Match by the query's argmax; metadata per person id. ``change`` is a database write."""

    def __init__(self, table: dict[int, Match], metadata: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.table = table
        self.metadata = dict(metadata or {})
        self.queries: list[FloatArray] = []
        self.gen = 1

    def __call__(self, vector: FloatArray, /) -> LookupResult:
        self.queries.append(vector)
        match = self.table[int(np.argmax(vector))]
        best = match.best
        return LookupResult(match, self.metadata.get(best.person_id, {}) if best else {}, self.gen)

    def generation(self) -> int:
        return self.gen

    def change(self, table: dict[int, Match], metadata: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.table = table
        if metadata is not None:
            self.metadata = dict(metadata)
        self.gen += 1


@dataclass
class Sighting:
    unknown_id: str
    is_new: bool
    ignored: bool = False


@dataclass
class Spool:
    """A minimal unknown spool: one cluster per query direction."""

    ignored: set[str] = field(default_factory=set)
    seen: list[tuple[int, float, bytes | None]] = field(default_factory=list)

    def observe(self, vector: FloatArray, now: float, snapshot_jpeg: bytes | None = None) -> Sighting:
        uid = f"u{int(np.argmax(vector))}"
        new = all(int(np.argmax(vector)) != k for k, _, _ in self.seen)
        self.seen.append((int(np.argmax(vector)), now, snapshot_jpeg))
        return Sighting(uid, new, uid in self.ignored)


class FixedLiveness:
    """A policy whose verdict the test sets (``live``), looking at the last 3 s."""

    window_s = 3.0
    uses_landmarks = False

    def __init__(self, live: bool | None, required: bool = True) -> None:
        self.live = live
        self.required = required
        self.histories: list[int] = []

    def assess(self, history: TrackHistory) -> LivenessResult:
        self.histories.append(len(history))
        return LivenessResult(self.live, 1.0 if self.live else 0.0, {"blink": 1.0})


def track(track_id: int = 1, t: float = 0.0, x: float = 100.0) -> Track:
    bbox = BBox(x, 100.0, x + 120.0, 240.0)
    det = Detection(bbox, 0.9, np.zeros((6, 2), dtype=np.float32))
    return Track(track_id, bbox, det, Face(det, None), 0.0, t, 1)


def frame(index: int = 0) -> Frame:
    return Frame(index, CHIP, captured_at=100.0 + index, wall_time=1_700_000_000.0 + index, source="test")


class Door:
    """The decide stage's and the spool stage's logic in one object, applied to each outcome as the threads do."""

    def __init__(self, decider: Decider, spool: Spool | None = None) -> None:
        self.decider = decider
        self.router = UnknownRouter(spool, decider.config.cooldown_s)

    def claim_embedding(self, track_id: int, now: float) -> bool:
        return self.decider.scheduler.claim(track_id, now)

    def track_samples(self, track_id: int) -> list[Sample]:
        return self.decider.samples.get(track_id)

    def add(
        self,
        tr: Track,
        fr: Frame,
        embedding: Embedding,
        chip: ImageArray,
        now: float,
        *,
        stage_ms: Mapping[str, float] | None = None,
    ) -> Outcome:
        return self._route(self.decider.add(tr, fr, embedding, chip, now, stage_ms=stage_ms))

    def reject(self, tr: Track, fr: Frame, reason: Reason, now: float) -> Outcome:
        return self._route(self.decider.reject(tr, fr, reason, now))

    def observe(self, tracks: list[Track], live_ids: frozenset[int], now: float) -> list[PresenceChange]:
        return self.decider.observe(tracks, live_ids, now)

    def tick(self, now: float) -> list[PresenceChange]:
        return self.decider.tick(now)

    def flush(self) -> list[PresenceChange]:
        return self.decider.flush()

    def present(self) -> dict[str, str]:
        return self.decider.present()

    @property
    def active_tracks(self) -> int:
        return self.decider.active_tracks

    def _route(self, outcome: Outcome) -> Outcome:
        if outcome.decision is None or outcome.unknown is None:
            return outcome
        routed = self.router.route(outcome.decision, outcome.unknown)
        return Outcome(routed, outcome.presence)


def feed(decider: Door, tid: int, vector: FloatArray, times: list[float], quality: Quality = GOOD) -> list[Outcome]:
    """Add one embedding per time, as the embed stage would after claiming it."""
    out = []
    for i, t in enumerate(times):
        tr = track(tid, t)
        decider.observe([tr], frozenset({tid}), t)
        if decider.claim_embedding(tid, t):
            out.append(decider.add(tr, frame(i), Embedding(vector, "test", quality), CHIP, t))
    return out


def decisions(outcomes: list[Outcome]) -> list:  # type: ignore[type-arg]
    return [o.decision for o in outcomes if o.decision is not None]


def make(
    table: dict[int, Match],
    *,
    metadata: Mapping[str, Mapping[str, object]] | None = None,
    liveness: LivenessPolicy | None = None,
    spool: Spool | None = None,
    **config: object,
) -> Door:
    cfg = DecisionConfig.model_validate({"votes": 3, "embed_interval_s": 0.1, "cooldown_s": 10.0, **config})
    return Door(Decider(cfg, TH, TableLookup(table, metadata), liveness=liveness), spool)


# --- classify: thresholds, band, margin, negative ---------------------------------------------


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (m(("ann", 0.90), ("bob", 0.60)), ("known", "matched")),
        (m(("ann", 0.80)), ("known", "matched")),  # at the threshold is a match
        (m(("ann", 0.79), ("bob", 0.50)), ("uncertain", "uncertain_band")),
        (m(("ann", 0.70)), ("uncertain", "uncertain_band")),
        (m(("ann", 0.69)), ("unknown", "below_threshold")),
        (m(("ann", 0.90), ("bob", 0.87)), ("uncertain", "ambiguous_margin")),
        (m(("ann", 0.90), ("bob", 0.85)), ("known", "matched")),  # exactly the margin is enough
        (m(("ann", 0.90), negative=0.91), ("unknown", "negative_match")),
        (m(("ann", 0.90), negative=0.90), ("unknown", "negative_match")),
        (m(("ann", 0.90), negative=0.89), ("known", "matched")),
        (m(), ("unknown", "empty_database")),
    ],
)
def test_classify(match: Match, expected: tuple[str, str]) -> None:
    assert classify(match, TH) == expected


def test_thresholds_resolve_from_model_default() -> None:
    th = Thresholds.resolve(DecisionConfig(), 0.9)
    assert th.match == 0.9 and th.unknown == pytest.approx(0.85) and th.margin == DEFAULT_MARGIN
    th = Thresholds.resolve(DecisionConfig(), 0.9, band=0.02, margin=0.01)  # the manifest's calibrated values
    assert (th.match, th.unknown, th.margin) == (0.9, pytest.approx(0.88), 0.01)
    assert Thresholds.resolve(DecisionConfig(margin=0.1), 0.9, margin=0.01).margin == 0.1
    th = Thresholds.resolve(DecisionConfig(match_threshold=0.8, unknown_threshold=0.6), 0.9)
    assert (th.match, th.unknown) == (0.8, 0.6)
    assert Thresholds.resolve(DecisionConfig(unknown_threshold=0.95), 0.9).unknown == 0.9


# --- gates -------------------------------------------------------------------------------------


def test_gates() -> None:
    cfg = DecisionConfig(min_face_px=48, min_sharpness=20.0, max_yaw_deg=40.0)
    assert gate(GOOD, cfg) is None
    assert gate(Quality(30.0, 150.0, 0.0, 0.0), cfg) == "too_small"
    assert gate(Quality(120.0, 5.0, 0.0, 0.0), cfg) == "too_blurry"
    assert gate(Quality(120.0, 150.0, -55.0, 0.0), cfg) == "bad_pose"
    # The cheapest, most telling reason wins when several apply.
    assert gate(Quality(30.0, 5.0, 60.0, 0.0), cfg) == "too_small"


def test_gated_track_reports_once_then_decides_when_the_face_improves() -> None:
    decider = make({0: m(("ann", 0.92))})
    tr = track(1)
    outcomes = [decider.reject(tr, frame(i), "too_blurry", float(i)) for i in range(5)]
    found = decisions(outcomes)
    assert len(found) == 1
    assert (found[0].status, found[0].reason, found[0].person_id) == ("uncertain", "too_blurry", None)
    # The person steps closer: the first real evaluation is published even though 'uncertain' came first.
    known = decisions(feed(decider, 1, unit(0), [10.0, 10.1, 10.2]))
    assert [(d.status, d.person_id) for d in known] == [("known", "ann")]


# --- votes, fusion -------------------------------------------------------------------------------


def test_votes_are_collected_at_the_embed_interval() -> None:
    decider = make({0: m(("ann", 0.92))}, embed_interval_s=0.15)
    assert decider.claim_embedding(1, 0.0)
    assert not decider.claim_embedding(1, 0.1)
    assert decider.claim_embedding(1, 0.15)
    assert decider.claim_embedding(2, 0.1)  # intervals are per track


def test_decides_after_votes_with_one_lookup() -> None:
    lookup = TableLookup({0: m(("ann", 0.92), ("bob", 0.4))}, {"ann": {"access": True}})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.1), TH, lookup))
    outcomes = feed(decider, 1, unit(0), [0.0, 0.1, 0.2, 0.3, 0.4])
    found = decisions(outcomes)
    assert len(found) == 1 and len(lookup.queries) == 1
    d = found[0]
    assert (d.status, d.reason, d.person_id, d.name, d.grant) == ("known", "matched", "ann", "Ann", True)
    assert d.samples == 3 and d.similarity == pytest.approx(0.92) and d.threshold == TH.match
    assert d.margin == pytest.approx(0.52) and d.track_id == 1 and d.frame_index == 2
    assert d.liveness == LivenessResult(None, 0.0, {})
    # Decided: the track wants no more embeddings.
    assert not decider.claim_embedding(1, 5.0)


def test_fusion_weights_quality() -> None:
    sharp = Quality(120.0, 200.0, 0.0, 0.0)
    soft = Quality(50.0, 25.0, 30.0, 0.0)
    assert sample_weight(sharp) == 1.0
    assert 0.0 < sample_weight(soft) < 0.2
    fused = fuse(np.stack([unit(0), unit(1)]), [sample_weight(sharp), sample_weight(soft)])
    assert np.linalg.norm(fused) == pytest.approx(1.0)
    assert fused[0] > 5 * fused[1]


def test_fused_vector_is_what_gets_matched() -> None:
    # Two good votes for direction 0 and a poor one for direction 1: the fused query points at 0.
    lookup = TableLookup({0: m(("ann", 0.9)), 1: m(("bob", 0.9))})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.0), TH, lookup))
    poor = Quality(50.0, 25.0, 20.0, 0.0)
    tr = track(1)
    decider.add(tr, frame(0), Embedding(unit(1), "t", poor), CHIP, 0.0)
    decider.add(tr, frame(1), Embedding(unit(0), "t", GOOD), CHIP, 0.1)
    out = decider.add(tr, frame(2), Embedding(unit(0), "t", GOOD), CHIP, 0.2)
    assert out.decision is not None and out.decision.person_id == "ann"


# --- uncertain band, re-decision -----------------------------------------------------------------


def test_uncertain_is_published_once_and_redecided_only_to_known() -> None:
    table = {0: m(("ann", 0.75)), 1: m(("ann", 0.93)), 2: m(("ann", 0.30))}
    decider = make(table, votes=1, embed_interval_s=0.0)
    first = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    assert [(d.status, d.reason, d.person_id) for d in first] == [("uncertain", "uncertain_band", None)]
    # Uncertain -> unknown is not a change worth publishing for the same track.
    assert decisions(feed(decider, 1, unit(2), [0.3, 0.4])) == []
    later = decisions(feed(decider, 1, unit(1), [0.5, 0.6]))
    assert [(d.status, d.person_id) for d in later] == [("known", "ann")]


def test_ambiguous_margin_and_negative_are_not_a_person() -> None:
    decider = make({0: m(("ann", 0.90), ("bob", 0.88)), 1: m(("ann", 0.90), negative=0.95)}, spool=Spool())
    a = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    b = decisions(feed(decider, 2, unit(1), [0.0, 0.1, 0.2]))
    assert [(d.status, d.reason, d.person_id, d.grant) for d in a] == [("uncertain", "ambiguous_margin", None, False)]
    assert [(d.status, d.reason, d.person_id) for d in b] == [("unknown", "negative_match", None)]
    assert b[0].unknown_id == "u1"


def test_empty_database() -> None:
    decider = make({0: m()})
    d = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    assert [(x.status, x.reason, x.similarity) for x in d] == [("unknown", "empty_database", 0.0)]


# --- grant, liveness ------------------------------------------------------------------------------


def test_grant_needs_the_access_metadata() -> None:
    table = {0: m(("ann", 0.92)), 1: m(("bob", 0.92))}
    decider = make(table, metadata={"ann": {"access": True}, "bob": {"access": False}})
    ann = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    bob = decisions(feed(decider, 2, unit(1), [0.0, 0.1, 0.2]))
    assert ann[0].grant is True and bob[0].grant is False
    custom = make(table, metadata={"ann": {"door": "yes"}}, access_metadata_key="door")
    assert decisions(feed(custom, 1, unit(0), [0.0, 0.1, 0.2]))[0].grant is True


def test_liveness_policy() -> None:
    meta = {"ann": {"access": True}}
    table = {0: m(("ann", 0.92))}
    assert isinstance(NoLiveness(), LivenessPolicy)
    live = FixedLiveness(True)
    found = decisions(feed(make(table, metadata=meta, liveness=live), 1, unit(0), [0, 0.1, 0.2]))
    assert [(d.status, d.reason, d.grant) for d in found] == [("known", "matched", True)]
    assert found[0].liveness == LivenessResult(True, 1.0, {"blink": 1.0})
    assert live.histories == [3]  # it saw the track's sightings
    optional = FixedLiveness(None, required=False)
    assert decisions(feed(make(table, metadata=meta, liveness=optional), 1, unit(0), [0, 0.1, 0.2]))[0].grant


def test_a_match_waits_for_liveness_evidence_then_is_published() -> None:
    policy = FixedLiveness(None)
    decider = make({0: m(("ann", 0.92))}, metadata={"ann": {"access": True}}, liveness=policy)
    assert decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2, 0.3])) == []  # matched, no evidence yet
    assert decider.present() == {}
    policy.live = True  # he blinked
    found = decisions(feed(decider, 1, unit(0), [0.4]))
    assert [(d.status, d.reason, d.person_id, d.grant, d.samples) for d in found] == [
        ("known", "matched", "ann", True, 3)
    ]
    assert decider.present() == {"ann": "Ann"}
    assert not decider.claim_embedding(1, 5.0)  # settled


def test_failing_liveness_names_the_person_without_grant_and_the_track_may_still_prove_live() -> None:
    policy = FixedLiveness(False)
    decider = make({0: m(("ann", 0.92))}, metadata={"ann": {"access": True}}, liveness=policy)
    spoof = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2, 0.3, 0.4]))
    # Published once for the track, named, not granted.
    assert [(d.status, d.reason, d.person_id, d.name, d.grant) for d in spoof] == [
        ("known", "liveness_failed", "ann", "Ann", False)
    ]
    assert spoof[0].liveness is not None and spoof[0].liveness.live is False
    assert decider.present() == {}  # a photo does not make her present
    # Still watched: a real Ann who stood still, then blinked, is let in -- the failure did not
    # start her cooldown.
    policy.live = True
    granted = decisions(feed(decider, 1, unit(0), [0.5]))
    assert [(d.reason, d.grant, d.track_id) for d in granted] == [("matched", True, 1)]
    # Another attempt on a new track within the cooldown is not repeated.
    policy.live = False
    assert decisions(feed(decider, 2, unit(0), [1.0, 1.1, 1.2])) == []


def test_liveness_shown_by_another_face_on_the_track_does_not_count() -> None:
    # A live stranger (direction 1, 'uncertain' against Ann) raises Ann's photo (direction 0) in
    # front of his face without the tracker losing it; the policy saw life all along.
    table = {0: m(("ann", 0.92)), 1: m(("ann", 0.75))}
    decider = make(table, metadata={"ann": {"access": True}}, liveness=FixedLiveness(True))
    stranger = decisions(feed(decider, 1, unit(1), [0.0, 0.1, 0.2]))
    assert [(d.status, d.reason) for d in stranger] == [("uncertain", "uncertain_band")]
    # Life was seen, but on a window that also holds the stranger's face: not yet Ann's.
    assert decisions(feed(decider, 1, unit(0), [0.1 * i for i in range(3, 32)])) == []
    # Once the 3 s window holds only Ann's face (the stranger's last embedding was at 0.2 s).
    found = decisions(feed(decider, 1, unit(0), [3.3]))
    assert [(d.status, d.person_id, d.grant) for d in found] == [("known", "ann", True)]


# --- re-decisions when the database changes --------------------------------------------------------


def test_a_stranger_enrolled_at_the_door_is_recognised_on_the_same_track() -> None:
    lookup = TableLookup({0: m(("bob", 0.3))})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.1), TH, lookup), Spool())
    first = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    assert [(d.status, d.unknown_id) for d in first] == [("unknown", "u0")]
    # Settled: no more embeddings, no more matches.
    assert decisions(feed(decider, 1, unit(0), [0.3, 0.4])) == [] and len(lookup.queries) == 1
    lookup.change({0: m(("eve", 0.97), ("bob", 0.3))}, {"eve": {"access": True}})  # enroll 1 Eve
    again = decisions(feed(decider, 1, unit(0), [0.5]))  # the very next embedding
    assert [(d.status, d.person_id, d.grant, d.track_id, d.samples) for d in again] == [("known", "eve", True, 1, 3)]
    assert decider.present() == {"eve": "Eve"}
    assert len(lookup.queries) == 2


def test_an_unknown_stays_settled_when_the_change_does_not_concern_it() -> None:
    lookup = TableLookup({0: m(("bob", 0.3))})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.1), TH, lookup), Spool())
    feed(decider, 1, unit(0), [0.0, 0.1, 0.2])
    lookup.change({0: m(("bob", 0.3), ("eve", 0.2))})  # someone else enrolled
    assert decisions(feed(decider, 1, unit(0), [0.3, 0.4, 0.5])) == []
    assert len(lookup.queries) == 2  # one look on the new generation, then settled again


def test_a_deleted_person_stops_counting_and_is_not_granted_again() -> None:
    lookup = TableLookup({0: m(("ann", 0.92))}, {"ann": {"access": True}})
    config = DecisionConfig(votes=3, embed_interval_s=0.1, cooldown_s=0.0, presence_timeout_s=1.0)
    decider = Door(Decider(config, TH, lookup))
    assert [d.grant for d in decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))] == [True]
    lookup.change({0: m()}, {})  # delete ann
    assert decisions(feed(decider, 1, unit(0), [0.3])) == []  # not news for this track...
    assert not decider.claim_embedding(1, 0.5)  # ...and settled as a stranger
    # Still in view, but no longer keeping Ann present: she times out.
    assert [(p.person_id, p.on) for p in decider.observe([track(1, 1.5)], frozenset({1}), 1.5)] == [("ann", False)]
    # Anyone looking like her on a new track is a stranger.
    assert [(d.status, d.grant) for d in decisions(feed(decider, 2, unit(0), [2.0, 2.1, 2.2]))] == [("unknown", False)]


def test_a_known_track_is_rechecked_quietly_and_published_when_its_grant_changes() -> None:
    lookup = TableLookup({0: m(("ann", 0.92))}, {"ann": {"access": False}})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.1), TH, lookup))
    assert [(d.person_id, d.grant) for d in decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))] == [("ann", False)]
    lookup.change({0: m(("ann", 0.92), ("bob", 0.5))})  # someone else enrolled
    assert decisions(feed(decider, 1, unit(0), [0.3])) == []  # still Ann: nothing new
    assert not decider.claim_embedding(1, 0.4)  # settled on the new generation
    lookup.change(lookup.table, {"ann": {"access": True}})  # she is given access while at the door
    assert [(d.person_id, d.grant) for d in decisions(feed(decider, 1, unit(0), [0.5]))] == [("ann", True)]


def test_liveness_shown_holds_when_the_track_is_matched_again() -> None:
    policy = FixedLiveness(True)
    lookup = TableLookup({0: m(("ann", 0.92))}, {"ann": {"access": True}})
    decider = Door(Decider(DecisionConfig(votes=3, embed_interval_s=0.1), TH, lookup, liveness=policy))
    assert [d.grant for d in decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))] == [True]
    policy.live = False  # she has stood still since
    lookup.change({0: m(("ann", 0.93), ("bob", 0.4))})
    assert decisions(feed(decider, 1, unit(0), [9.0])) == []  # no 'liveness_failed' for her
    assert decider.present() == {"ann": "Ann"}


# --- cooldown, presence ---------------------------------------------------------------------------


def test_cooldown_per_person() -> None:
    decider = make({0: m(("ann", 0.92)), 1: m(("bob", 0.92))}, cooldown_s=10.0)
    first = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    again = decisions(feed(decider, 2, unit(0), [5.0, 5.1, 5.2]))  # new track, same person, 5 s later
    other = decisions(feed(decider, 3, unit(1), [5.0, 5.1, 5.2]))
    later = decisions(feed(decider, 4, unit(0), [10.3, 10.4, 10.5]))
    assert [d.person_id for d in first] == ["ann"]
    assert again == []
    assert [d.person_id for d in other] == ["bob"]
    assert [d.person_id for d in later] == ["ann"]


def test_presence_on_when_recognised_off_after_timeout() -> None:
    decider = make({0: m(("ann", 0.92))}, presence_timeout_s=2.0, cooldown_s=0.0)
    outcomes = feed(decider, 1, unit(0), [0.0, 0.1, 0.2])
    ons = [p for o in outcomes for p in o.presence]
    assert [(p.person_id, p.name, p.on) for p in ons] == [("ann", "Ann", True)]
    assert decider.present() == {"ann": "Ann"}
    # Still in view: each sighting of the decided track refreshes presence.
    for t in (1.0, 2.0, 3.0):
        assert decider.observe([track(1, t)], frozenset({1}), t) == []
    # Track gone; presence holds until the timeout after the last sighting (3.0).
    assert decider.observe([], frozenset(), 4.0) == []
    assert decider.tick(4.9) == []
    offs = decider.tick(5.1)
    assert [(p.person_id, p.on) for p in offs] == [("ann", False)]
    assert decider.present() == {}
    # A second recognition while present does not turn presence on twice.
    feed(decider, 2, unit(0), [6.0, 6.1, 6.2])
    assert [p.on for o in feed(decider, 3, unit(0), [6.3, 6.4, 6.5]) for p in o.presence] == []
    assert [p.on for p in decider.flush()] == [False]


def test_presence_within_cooldown_still_turns_on() -> None:
    decider = make({0: m(("ann", 0.92))}, presence_timeout_s=1.0, cooldown_s=60.0)
    feed(decider, 1, unit(0), [0.0, 0.1, 0.2])
    decider.observe([], frozenset(), 0.3)
    assert [p.on for p in decider.tick(2.0)] == [False]
    outcomes = feed(decider, 2, unit(0), [3.0, 3.1, 3.2])
    assert decisions(outcomes) == []  # cooled down, not re-published
    assert [p.on for o in outcomes for p in o.presence] == [True]


# --- unknowns -------------------------------------------------------------------------------------


def test_unknown_goes_to_the_spool_with_cooldown_and_ignore() -> None:
    spool = Spool(ignored={"u3"})
    table = {2: m(("ann", 0.3)), 3: m(("ann", 0.2))}
    decider = Door(
        Decider(
            DecisionConfig(votes=2, embed_interval_s=0.0, cooldown_s=10.0),
            TH,
            TableLookup(table),
            unknown_snapshots=True,
        ),
        spool,
    )
    first = decisions(feed(decider, 1, unit(2), [0.0, 0.1]))
    assert [(d.status, d.reason, d.unknown_id, d.person_id) for d in first] == [
        ("unknown", "below_threshold", "u2", None)
    ]
    assert spool.seen[0][2] is not None and spool.seen[0][2].startswith(b"\xff\xd8")  # a JPEG snapshot
    assert decisions(feed(decider, 2, unit(2), [1.0, 1.1])) == []  # same stranger within cooldown
    assert decisions(feed(decider, 3, unit(3), [1.0, 1.1])) == []  # an ignored stranger
    assert len(spool.seen) == 3


# --- track registry -------------------------------------------------------------------------------


def test_track_samples_survive_the_track_for_a_while() -> None:
    decider = make({0: m(("ann", 0.5))}, votes=30, embed_interval_s=0.0)
    feed(decider, 7, unit(0), [0.1 * i for i in range(12)])
    samples = decider.track_samples(7)
    assert 1 <= len(samples) <= 30
    vector, chip = samples[-1]
    assert np.array_equal(vector, unit(0)) and chip.shape == CHIP.shape
    decider.observe([], frozenset(), 2.0)  # track 7 ended
    assert decider.active_tracks == 0
    assert len(decider.track_samples(7)) == len(samples)
    assert decider.track_samples(999) == []


def test_decision_carries_stage_timings_and_frame_times() -> None:
    decider = make({0: m(("ann", 0.92))}, votes=1)
    tr = track(1)
    out = decider.add(tr, frame(4), Embedding(unit(0), "t", GOOD), CHIP, 0.0, stage_ms={"detect": 3.0})
    d = out.decision
    assert d is not None
    assert d.stage_ms == {"detect": 3.0}
    assert (d.frame_index, d.captured_at, d.wall_time) == (4, 104.0, 1_700_000_004.0)
    assert d.bbox == tr.bbox


def test_unknown_and_uncertain_name_the_closest_person_and_get_an_unknown_id() -> None:
    spool = Spool()
    decider = make({0: m(("ann", 0.75), ("bob", 0.2)), 1: m(("bob", 0.30))}, spool=spool)
    uncertain = decisions(feed(decider, 1, unit(0), [0.0, 0.1, 0.2]))
    stranger = decisions(feed(decider, 2, unit(1), [0.0, 0.1, 0.2]))
    assert [(d.status, d.person_id, d.unknown_id) for d in uncertain] == [("uncertain", None, "u0")]
    assert uncertain[0].closest == Candidate("ann", "Ann", 0.75)
    assert [(d.status, d.person_id, d.unknown_id) for d in stranger] == [("unknown", None, "u1")]
    assert stranger[0].closest == Candidate("bob", "Bob", 0.30)
    empty = decisions(feed(make({0: m()}, spool=Spool()), 1, unit(0), [0.0, 0.1, 0.2]))
    assert empty[0].closest is None
