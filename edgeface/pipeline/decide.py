"""Per-track decisions: quality gates, vote collection, fusion, thresholds, liveness, cooldown and presence.

Pure logic -- time comes in as ``now`` (the frame clock) and the database is reached through a
``Lookup`` -- so every rule here is tested with hand-built ``Match`` values. Only the decide stage
calls it; what other threads share lives in its parts: the ``EmbedScheduler`` (the track stage
claims embeddings there), the ``SampleRing`` (the command handler reads it), while ``Presence`` and
``Cooldown`` are its own. Nothing here sleeps or does I/O: an unknown face leaves as an
``UnknownFace`` for the spool stage.

Life of a track: the track stage claims an embedding at most every ``embed_interval_s``; a face
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
a reject or a deletion), on its next embedding (the scheduler compares generations on each claim):
a stranger enrolled by ``enroll {track_id}`` while still at the door is recognised on the same
track within one embedding interval, and a person deleted or rejected stops counting as present.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from edgeface.config import DecisionConfig
from edgeface.data import (
    Candidate,
    Decision,
    Embedding,
    FloatArray,
    Frame,
    ImageArray,
    LivenessResult,
    Reason,
    Status,
)
from edgeface.liveness.policy import LivenessPolicy, NoLiveness
from edgeface.liveness.track import TrackLiveness
from edgeface.pipeline.lookup import Lookup, LookupResult
from edgeface.pipeline.presence import Cooldown, Presence, PresenceChange
from edgeface.pipeline.rules import Thresholds, classify, fuse, sample_weight
from edgeface.pipeline.samples import KEEP_SAMPLES, SampleRing
from edgeface.pipeline.schedule import EmbedScheduler
from edgeface.pipeline.tracker import Track

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnknownFace:
    """What the spool needs of a first unknown/uncertain evaluation: the fused query, the best chip, the clock."""

    vector: FloatArray
    chip: ImageArray | None
    now: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one embedding (or rejected face) led to: a Decision to publish, presence turned on.

    ``unknown`` is set with an unknown/uncertain decision: the spool gives it its unknown id (and may
    hold it back as ignored or cooling down) before it is published.
    """

    decision: Decision | None = None
    presence: tuple[PresenceChange, ...] = ()
    unknown: UnknownFace | None = None


@dataclass(slots=True)
class _TrackState:
    window: deque[Embedding]
    liveness: TrackLiveness
    evaluated: bool = False  # an identity was evaluated and its outcome published (or held back)
    doubtful: bool = False  # evaluated 'uncertain' since it was last known: keeps sliding until known
    gate_reported: bool = False  # a gate-only 'uncertain' was published
    announced: tuple[str, Reason, bool] | None = None  # (person, reason, grant) last published as known
    gates: Counter[Reason] = field(default_factory=Counter)
    person: tuple[str, str] | None = None  # the identity that refreshes presence: known and live
    best_chip: tuple[float, ImageArray] | None = None  # (weight, chip) for the unknown snapshot


@dataclass(frozen=True, slots=True)
class _Evaluation:
    """One match of a track's fused votes, and what its decision is stamped with."""

    track: Track
    frame: Frame
    fused: FloatArray
    found: LookupResult
    samples: int
    now: float
    stage_ms: Mapping[str, float] | None


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
        scheduler: EmbedScheduler | None = None,
        samples: SampleRing | None = None,
        unknown_snapshots: bool = False,
    ) -> None:
        self.config = config
        self.thresholds = thresholds
        self._lookup = lookup
        self._liveness: LivenessPolicy = liveness or NoLiveness()
        self.scheduler = scheduler or EmbedScheduler(
            config.embed_interval_s, lookup.generation, landmark_liveness=self._liveness.uses_landmarks
        )
        self.samples = samples or SampleRing(max(KEEP_SAMPLES, config.votes))
        self._unknown_snapshots = unknown_snapshots
        self._tracks: dict[int, _TrackState] = {}
        self._presence = Presence(config.presence_timeout_s)
        self._cooldown = Cooldown(config.cooldown_s)

    def observe(self, tracks: Iterable[Track], live_ids: frozenset[int], now: float) -> list[PresenceChange]:
        """Record this frame's sightings, forget ended tracks, and time out presence."""
        for track in tracks:
            state = self._state(track.track_id)
            state.liveness.sighting(now, track.face.landmarks if track.face is not None else None)
            if state.person is not None:
                self._presence.refresh(state.person[0], state.person[1], now)
        ended = [t for t in self._tracks if t not in live_ids]
        for track_id in ended:
            self._end(track_id)
        self.scheduler.forget(ended)
        return self._presence.expire(now)

    def tick(self, now: float) -> list[PresenceChange]:
        """Presence timeouts when no frame arrives (a live source that stalled)."""
        return self._presence.expire(now)

    def flush(self) -> list[PresenceChange]:
        """End every track and turn every presence off (the source ended)."""
        ended = list(self._tracks)
        for track_id in ended:
            self._end(track_id)
        self.scheduler.forget(ended)
        return self._presence.clear()

    def reject(
        self, track: Track, frame: Frame, reason: Reason, now: float, *, stage_ms: Mapping[str, float] | None = None
    ) -> Outcome:
        """A claimed face failed a gate; after ``votes`` such faces and none accepted, say why once."""
        state = self._state(track.track_id)
        state.gates[reason] += 1
        if state.evaluated or state.gate_reported or state.window or sum(state.gates.values()) < self.config.votes:
            return Outcome()
        state.gate_reported = True
        worst = state.gates.most_common(1)[0][0]
        return Outcome(_make_decision(track, frame, "uncertain", worst, self.thresholds.match, stage_ms=stage_ms))

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
        if self.scheduler.is_settled(track.track_id):
            return Outcome()  # claimed before the track settled
        state = self._state(track.track_id)
        weight = sample_weight(embedding.quality)
        state.window.append(embedding)
        state.liveness.embedded(now, embedding.vector, passive)
        self.samples.add(track.track_id, embedding.vector, chip)
        if state.best_chip is None or weight >= state.best_chip[0]:
            state.best_chip = (weight, chip)
        if len(state.window) < self.config.votes:
            return Outcome()
        return self._evaluate(track, frame, state, now, stage_ms)

    def present(self) -> dict[str, str]:
        """Persons currently present: id -> name."""
        return self._presence.present()

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)

    # --- internals ----------------------------------------------------------------------------

    def _state(self, track_id: int) -> _TrackState:
        state = self._tracks.get(track_id)
        if state is None:
            state = _TrackState(window=deque(maxlen=self.config.votes), liveness=TrackLiveness(self._liveness))
            self._tracks[track_id] = state
        return state

    def _end(self, track_id: int) -> None:
        del self._tracks[track_id]
        self.samples.end(track_id)

    def _evaluate(
        self, track: Track, frame: Frame, state: _TrackState, now: float, stage_ms: Mapping[str, float] | None
    ) -> Outcome:
        votes = list(state.window)
        vectors = np.stack([e.vector for e in votes]).astype(np.float32)
        fused = fuse(vectors, [sample_weight(e.quality) for e in votes])
        found = self._lookup(fused)
        status, reason = classify(found.match, self.thresholds)
        best = found.match.best
        evaluation = _Evaluation(track, frame, fused, found, len(votes), now, stage_ms)
        if status == "known" and best is not None:
            return self._known(state, evaluation, best)
        return self._not_known(state, evaluation, status, reason)

    def _known(self, state: _TrackState, ev: _Evaluation, best: Candidate) -> Outcome:
        """A match: published once live (or liveness off), named without a grant when not live."""
        track = ev.track
        liveness = state.liveness.judge(best.person_id, ev.fused, self.thresholds.unknown)
        if liveness.live is None and self._liveness.required:
            _LOGGER.debug("track %d: %s matched, liveness pending", track.track_id, best.person_id)
            return Outcome()  # evaluated again on the next embedding, until the policy decides
        state.evaluated = True
        live = liveness.live is not False
        grant = live and bool(ev.found.metadata.get(self.config.access_metadata_key, False))
        decision = self._decision(
            ev, "known", "matched" if live else "liveness_failed", best=best, grant=grant, liveness=liveness
        )
        if not live:
            state.person = None
            self.scheduler.unsettle(track.track_id)
            return self._announce(state, decision, ("liveness_failed", best.person_id), ev.now)
        state.doubtful = False
        self.scheduler.settle(track.track_id, ev.found.generation, known=True)
        state.person = (best.person_id, best.name)
        presence = self._presence.seen(best.person_id, best.name, ev.now)
        return self._announce(state, decision, ("known", best.person_id, grant), ev.now, presence)

    def _not_known(self, state: _TrackState, ev: _Evaluation, status: Status, reason: Reason) -> Outcome:
        """Uncertain or unknown: published on the track's first evaluation only, on to the spool."""
        track_id = ev.track.track_id
        state.person = None
        state.doubtful = state.doubtful or status == "uncertain"
        if status == "unknown" and not state.doubtful:
            self.scheduler.settle(track_id, ev.found.generation, known=False)
        else:
            self.scheduler.unsettle(track_id)
        if state.evaluated:
            return Outcome()  # after the first evaluation only a named person is news
        state.evaluated = True
        decision = self._decision(ev, status, reason, closest=ev.found.match.best)
        # Uncertain faces are spooled too: "last unknown" then names them, and confirming one
        # (as a new person or as the closest one) teaches the device exactly the faces it doubted.
        chip = state.best_chip[1] if self._unknown_snapshots and state.best_chip is not None else None
        return Outcome(decision, unknown=UnknownFace(ev.fused, chip, ev.now))

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
        if self._cooldown.cooling(cooldown_key, now):
            _LOGGER.debug("track %d: %s within cooldown, not published", decision.track_id, cooldown_key)
            return Outcome(None, presence)
        return Outcome(decision, presence)

    def _decision(
        self,
        ev: _Evaluation,
        status: Status,
        reason: Reason,
        *,
        best: Candidate | None = None,
        grant: bool = False,
        liveness: LivenessResult | None = None,
        closest: Candidate | None = None,
    ) -> Decision:
        match = ev.found.match
        top = match.best
        return _make_decision(
            ev.track,
            ev.frame,
            status,
            reason,
            self.thresholds.match,
            best=best,
            similarity=top.similarity if top is not None else 0.0,
            margin=match.margin if top is not None else 0.0,
            samples=ev.samples,
            stage_ms=ev.stage_ms,
            grant=grant,
            liveness=liveness,
            closest=closest,
        )


def _make_decision(
    track: Track,
    frame: Frame,
    status: Status,
    reason: Reason,
    threshold: float,
    *,
    best: Candidate | None = None,
    similarity: float = 0.0,
    margin: float = 0.0,
    samples: int = 0,
    stage_ms: Mapping[str, float] | None = None,
    grant: bool = False,
    liveness: LivenessResult | None = None,
    closest: Candidate | None = None,
) -> Decision:
    return Decision(
        track_id=track.track_id,
        status=status,
        reason=reason,
        person_id=best.person_id if best is not None else None,
        name=best.name if best is not None else None,
        similarity=float(similarity),
        threshold=threshold,
        margin=float(margin),
        grant=grant,
        bbox=track.bbox,
        frame_index=frame.index,
        captured_at=frame.captured_at,
        wall_time=frame.wall_time,
        samples=samples,
        liveness=liveness,
        stage_ms=dict(stage_ms or {}),
        closest=closest,
    )
