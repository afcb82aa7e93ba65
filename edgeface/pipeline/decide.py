"""Per-track decisions: quality gates, vote collection, fusion, thresholds, liveness, cooldown and presence.

Pure logic -- time comes in as ``now`` (the frame clock) and the database is reached through a
``Lookup`` -- so every rule here is tested with hand-built ``Match`` values. A lock makes the public
methods safe to call from the embed stage (``claim_embedding``), the decide stage and the command
handler (``track_samples``); nothing here sleeps or does I/O beyond what ``spool`` does.

Life of a track: the embed stage claims an embedding at most every ``embed_interval_s``; a face
failing a gate is not embedded. Once ``votes`` embeddings are in, they are fused (quality-weighted
mean) and matched, and again on every later embedding while the track is not *settled*:

- ``known`` and live (or liveness off) settles the track: published once, presence on.
- ``known`` while the liveness policy has too little evidence is not published yet: the track keeps
  being evaluated until the policy says live or not (within its window).
- ``known`` but not live is published once with reason ``liveness_failed`` -- the person named,
  ``grant`` false -- and the track keeps being evaluated, so a live person who stood still and then
  blinks is still let in.
- ``unknown`` settles the track; ``uncertain`` keeps the window sliding, for good (a later
  ``unknown`` does not settle it: the person may still turn to the camera). Only a track's first
  evaluation is published as unknown/uncertain (or its first real one after a gate-only
  ``uncertain``); later ones are published only when they name a person (or change the grant).

A settled track is evaluated again when the database generation changes (an enrollment, a confirm,
a reject or a deletion), on its next embedding: a stranger enrolled by ``enroll {track_id}`` while
still at the door is recognised on the same track within one embedding interval, and a person deleted
or rejected stops counting as present. Comparing the generation costs one integer read per claim.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from edgeface.config import DecisionConfig
from edgeface.data import (
    BBox,
    Candidate,
    Decision,
    Embedding,
    FloatArray,
    Frame,
    ImageArray,
    LivenessResult,
    Match,
    Quality,
    Reason,
    Status,
)
from edgeface.liveness.policy import LivenessPolicy, NoLiveness
from edgeface.liveness.track import TrackLiveness
from edgeface.pipeline.rules import Thresholds, classify, fuse, gate, sample_weight
from edgeface.pipeline.tracker import Track

_LOGGER = logging.getLogger(__name__)

# Embeddings (with chips) kept per track for 'enroll/reject {track_id}', and how many ended tracks
# keep theirs: an operator issues the command seconds after the event, when the person may have left.
KEEP_SAMPLES = 5
RECENT_TRACKS = 16
SNAPSHOT_JPEG_QUALITY = 85
# Frame clocks are sums of 1/fps steps; compare intervals with this slack so 0.1 + 0.1 counts as 0.2.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class LookupResult:
    """A match, the metadata of its best candidate (empty when none) and the database generation they came from."""

    match: Match
    metadata: Mapping[str, object]
    generation: int


class Lookup(Protocol):
    """The current database: match one fused query, and say which generation is current."""

    def __call__(self, vector: FloatArray, /) -> LookupResult:
        """Match against one snapshot, so a reload between match and metadata cannot mix databases."""
        ...

    def generation(self) -> int:
        """The current database generation; cheap, asked on every claim of a settled track."""
        ...


class Sighting(Protocol):
    @property
    def unknown_id(self) -> str: ...

    @property
    def is_new(self) -> bool: ...

    @property
    def ignored(self) -> bool: ...


class UnknownObserver(Protocol):
    """The unknown-face spool (``matching.unknowns.UnknownSpool``)."""

    def observe(self, vector: FloatArray, now: float, snapshot_jpeg: bytes | None = None) -> Sighting: ...


@dataclass(frozen=True, slots=True)
class PresenceChange:
    person_id: str
    name: str
    on: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one embedding (or rejected face) led to: a Decision to publish, presence turned on."""

    decision: Decision | None = None
    presence: tuple[PresenceChange, ...] = ()


@dataclass(slots=True)
class _TrackState:
    window: deque[Embedding]
    kept: deque[tuple[FloatArray, ImageArray]]
    liveness: TrackLiveness
    last_claim: float | None = None
    settled: bool = False  # known and live, or unknown: no embeddings wanted until the database changes
    generation: int | None = None  # database generation of the last evaluation
    evaluated: bool = False  # an identity was evaluated and its outcome published (or held back)
    doubtful: bool = False  # evaluated 'uncertain' since it was last known: keeps sliding until known
    gate_reported: bool = False  # a gate-only 'uncertain' was published
    announced: tuple[str, Reason, bool] | None = None  # (person, reason, grant) last published as known
    gates: Counter[Reason] = field(default_factory=Counter)
    person: tuple[str, str] | None = None  # the identity that refreshes presence: known and live
    best_chip: tuple[float, ImageArray] | None = None  # (weight, chip) for the unknown snapshot


class Decider:
    """Turns a track's embeddings into the Decisions worth publishing (see the module docstring).

    Why a face that matches but fails liveness is still published *named*, with ``grant`` false,
    rather than hidden as a stranger: the door acts only on ``grant``, so naming the person opens
    nothing; the operator, on the other hand, learns whose photo was held up (an attack on that
    person's access, worth an alert), and a real person wrongly judged not live sees a refusal that
    says why -- "look at the camera and blink" -- instead of being treated as unknown. Such a face
    does not turn presence on, and it does not start the person's cooldown: a photo of someone
    held up at the door must not silence that person's own recognition seconds later.
    """

    def __init__(
        self,
        config: DecisionConfig,
        thresholds: Thresholds,
        lookup: Lookup,
        *,
        liveness: LivenessPolicy | None = None,
        spool: UnknownObserver | None = None,
        unknown_snapshots: bool = False,
    ) -> None:
        self.config = config
        self.thresholds = thresholds
        self._lookup = lookup
        self._liveness: LivenessPolicy = liveness or NoLiveness()
        self._spool = spool
        self._unknown_snapshots = unknown_snapshots
        self._lock = threading.Lock()
        self._tracks: dict[int, _TrackState] = {}
        self._recent: OrderedDict[int, list[tuple[FloatArray, ImageArray]]] = OrderedDict()
        # (kind, person or unknown id[, grant]) -> when last published; kinds cool down separately.
        self._published: dict[tuple[object, ...], float] = {}
        self._present: dict[str, tuple[str, float]] = {}  # person id -> (name, last seen)

    # --- called by the embed stage ------------------------------------------------------------

    def claim_embedding(self, track_id: int, now: float) -> bool:
        """Whether this track wants an embedding now; a True answer starts its interval."""
        with self._lock:
            state = self._state(track_id)
            if state.settled:
                if state.generation == self._lookup.generation():
                    return False
                state.settled = False  # the database changed since: look at this face again
            if state.last_claim is not None and now - state.last_claim < self.config.embed_interval_s - _EPS:
                return False
            state.last_claim = now
            return True

    def gate(self, quality: Quality) -> Reason | None:
        """Quality gate with this decider's limits."""
        return gate(quality, self.config)

    def too_small(self, bbox: BBox) -> bool:
        """Cheap pre-check on the detector box, before aligning and measuring the chip."""
        return min(bbox.width, bbox.height) < self.config.min_face_px

    # --- called by the decide stage -----------------------------------------------------------

    def observe(self, tracks: Iterable[Track], live_ids: frozenset[int], now: float) -> list[PresenceChange]:
        """Record this frame's sightings, forget ended tracks, and time out presence."""
        with self._lock:
            for track in tracks:
                state = self._state(track.track_id)
                state.liveness.sighting(now, track.face.landmarks if track.face is not None else None)
                if state.person is not None:
                    self._present[state.person[0]] = (state.person[1], now)
            for track_id in [t for t in self._tracks if t not in live_ids]:
                self._end(track_id)
            return self._expire(now)

    def tick(self, now: float) -> list[PresenceChange]:
        """Presence timeouts when no frame arrives (a live source that stalled)."""
        with self._lock:
            return self._expire(now)

    def flush(self) -> list[PresenceChange]:
        """End every track and turn every presence off (the source ended)."""
        with self._lock:
            for track_id in list(self._tracks):
                self._end(track_id)
            changes = [PresenceChange(pid, name, False) for pid, (name, _) in self._present.items()]
            self._present.clear()
            return changes

    def reject(
        self, track: Track, frame: Frame, reason: Reason, now: float, *, stage_ms: Mapping[str, float] | None = None
    ) -> Outcome:
        """A claimed face failed a gate; after ``votes`` such faces and none accepted, say why once."""
        with self._lock:
            state = self._state(track.track_id)
            state.gates[reason] += 1
            if state.evaluated or state.gate_reported or state.window or sum(state.gates.values()) < self.config.votes:
                return Outcome()
            state.gate_reported = True
            worst = state.gates.most_common(1)[0][0]
            return Outcome(self._decision(track, frame, "uncertain", worst, stage_ms=stage_ms))

    def add(
        self,
        track: Track,
        frame: Frame,
        embedding: Embedding,
        chip: ImageArray,
        now: float,
        *,
        stage_ms: Mapping[str, float] | None = None,
        passive: float | None = None,
    ) -> Outcome:
        """Add one embedding of the track (and the passive liveness score of its frame, if scored).

        The Outcome holds the Decision to publish if this completes one.
        """
        with self._lock:
            state = self._state(track.track_id)
            if state.settled:
                return Outcome()  # claimed before the track settled
            weight = sample_weight(embedding.quality)
            state.window.append(embedding)
            state.liveness.embedded(now, embedding.vector, passive)
            state.kept.append((embedding.vector, chip))
            if state.best_chip is None or weight >= state.best_chip[0]:
                state.best_chip = (weight, chip)
            if len(state.window) < self.config.votes:
                return Outcome()
            return self._evaluate(track, frame, state, now, stage_ms)

    def track_samples(self, track_id: int) -> list[tuple[FloatArray, ImageArray]]:
        """Recent (vector, chip) pairs of a live or recently ended track, oldest first; [] when unknown."""
        with self._lock:
            state = self._tracks.get(track_id)
            if state is not None:
                return list(state.kept)
            return list(self._recent.get(track_id, []))

    def present(self) -> dict[str, str]:
        """Persons currently present: id -> name."""
        with self._lock:
            return {pid: name for pid, (name, _) in self._present.items()}

    @property
    def active_tracks(self) -> int:
        with self._lock:
            return len(self._tracks)

    # --- internals (lock held) ----------------------------------------------------------------

    def _state(self, track_id: int) -> _TrackState:
        state = self._tracks.get(track_id)
        if state is None:
            state = _TrackState(
                window=deque(maxlen=self.config.votes),
                kept=deque(maxlen=max(KEEP_SAMPLES, self.config.votes)),
                liveness=TrackLiveness(self._liveness),
            )
            self._tracks[track_id] = state
        return state

    def _end(self, track_id: int) -> None:
        state = self._tracks.pop(track_id)
        if state.kept:
            self._recent[track_id] = list(state.kept)
            while len(self._recent) > RECENT_TRACKS:
                self._recent.popitem(last=False)

    def _expire(self, now: float) -> list[PresenceChange]:
        gone = [pid for pid, (_, seen) in self._present.items() if now - seen > self.config.presence_timeout_s]
        changes = [PresenceChange(pid, self._present[pid][0], False) for pid in gone]
        for pid in gone:
            del self._present[pid]
        return changes

    def _cooling(self, key: tuple[object, ...], now: float) -> bool:
        last = self._published.get(key)
        if last is not None and now - last < self.config.cooldown_s:
            return True
        self._published[key] = now
        return False

    def _evaluate(
        self, track: Track, frame: Frame, state: _TrackState, now: float, stage_ms: Mapping[str, float] | None
    ) -> Outcome:
        votes = list(state.window)
        vectors = np.stack([e.vector for e in votes]).astype(np.float32)
        fused = fuse(vectors, [sample_weight(e.quality) for e in votes])
        found = self._lookup(fused)
        state.generation = found.generation
        match = found.match
        status, reason = classify(match, self.thresholds)
        best = match.best
        similarity = best.similarity if best is not None else 0.0
        margin = match.margin if best is not None else 0.0

        if status == "known" and best is not None:
            liveness = state.liveness.judge(best.person_id, fused, self.thresholds.unknown)
            if liveness.live is None and self._liveness.required:
                _LOGGER.debug("track %d: %s matched, liveness pending", track.track_id, best.person_id)
                return Outcome()  # evaluated again on the next embedding, until the policy decides
            state.evaluated = True
            live = liveness.live is not False
            grant = live and bool(found.metadata.get(self.config.access_metadata_key, False))
            decision = self._decision(
                track,
                frame,
                status,
                "matched" if live else "liveness_failed",
                best=best,
                similarity=similarity,
                margin=margin,
                samples=len(votes),
                stage_ms=stage_ms,
                grant=grant,
                liveness=liveness,
            )
            if not live:
                state.person = None
                return self._announce(state, decision, ("liveness_failed", best.person_id), now)
            state.settled, state.doubtful = True, False
            state.person = (best.person_id, best.name)
            presence = () if best.person_id in self._present else (PresenceChange(best.person_id, best.name, True),)
            self._present[best.person_id] = (best.name, now)
            return self._announce(state, decision, ("known", best.person_id, grant), now, presence)

        state.person = None
        state.doubtful = state.doubtful or status == "uncertain"
        state.settled = status == "unknown" and not state.doubtful
        if state.evaluated:
            return Outcome()  # after the first evaluation only a named person is news
        state.evaluated = True
        unknown_id: str | None = None
        # Uncertain faces are spooled too: "last unknown" then names them, and confirming one
        # (as a new person or as the closest one) teaches the device exactly the faces it doubted.
        if self._spool is not None:
            jpeg = self._snapshot(state) if self._unknown_snapshots else None
            sighting = self._spool.observe(fused, frame.wall_time, jpeg)
            unknown_id = sighting.unknown_id
            if sighting.ignored:
                _LOGGER.debug("track %d: unknown %s is ignored, not published", track.track_id, unknown_id)
                return Outcome()
            if self._cooling(("unknown", unknown_id), now):
                return Outcome()
        decision = self._decision(
            track,
            frame,
            status,
            reason,
            similarity=similarity,
            margin=margin,
            samples=len(votes),
            stage_ms=stage_ms,
            unknown_id=unknown_id,
            closest=best,
        )
        return Outcome(decision)

    def _announce(
        self,
        state: _TrackState,
        decision: Decision,
        cooldown_key: tuple[object, ...],
        now: float,
        presence: tuple[PresenceChange, ...] = (),
    ) -> Outcome:
        """Publish a known match unless this track already said the same, or the cooldown holds it back."""
        said = (str(decision.person_id), decision.reason, decision.grant)
        if state.announced == said:
            return Outcome(None, presence)  # confirmed again after a database change: nothing new
        state.announced = said
        if self._cooling(cooldown_key, now):
            _LOGGER.debug("track %d: %s within cooldown, not published", decision.track_id, cooldown_key)
            return Outcome(None, presence)
        return Outcome(decision, presence)

    @staticmethod
    def _snapshot(state: _TrackState) -> bytes | None:
        if state.best_chip is None:
            return None
        ok, buf = cv2.imencode(".jpg", state.best_chip[1], [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
        return bytes(buf) if ok else None

    def _decision(
        self,
        track: Track,
        frame: Frame,
        status: Status,
        reason: Reason,
        *,
        best: Candidate | None = None,
        similarity: float = 0.0,
        margin: float = 0.0,
        samples: int = 0,
        stage_ms: Mapping[str, float] | None = None,
        grant: bool = False,
        liveness: LivenessResult | None = None,
        unknown_id: str | None = None,
        closest: Candidate | None = None,
    ) -> Decision:
        return Decision(
            track_id=track.track_id,
            status=status,
            reason=reason,
            person_id=best.person_id if best is not None else None,
            name=best.name if best is not None else None,
            similarity=float(similarity),
            threshold=self.thresholds.match,
            margin=float(margin),
            grant=grant,
            bbox=track.bbox,
            frame_index=frame.index,
            captured_at=frame.captured_at,
            wall_time=frame.wall_time,
            samples=samples,
            liveness=liveness,
            unknown_id=unknown_id,
            stage_ms=dict(stage_ms or {}),
            closest=closest,
        )
