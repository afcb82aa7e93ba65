"""Per-track decisions: quality gates, vote collection, fusion, thresholds, cooldown and presence.

Pure logic -- time comes in as ``now`` (the frame clock) and the database is reached through a
``Lookup`` callable -- so every rule here is tested with hand-built ``Match`` values. A lock makes the
public methods safe to call from the embed stage (``claim_embedding``), the decide stage and the
command handler (``track_samples``); nothing here sleeps or does I/O beyond what ``spool`` does.

Life of a track: the embed stage claims an embedding at most every ``embed_interval_s``; a face
failing a gate is not embedded. Once ``votes`` embeddings are in, they are fused (quality-weighted
mean) and matched once. ``known`` and ``unknown`` are final for the track; ``uncertain`` keeps the
window sliding and the track is decided again, published only if it becomes ``known`` (or, after a
gate-only ``uncertain`` where no identity was ever evaluated, on its first real evaluation).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
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
from edgeface.liveness.policy import LivenessPolicy, NoLiveness, TrackObservation
from edgeface.pipeline.tracker import Track

_LOGGER = logging.getLogger(__name__)

# Width of the "uncertain" band below the match threshold when unknown_threshold is not set:
# about one standard deviation of same-person similarity for the dlib/ArcFace-class models we ship.
DEFAULT_UNCERTAIN_BAND = 0.05
# Fusion weights saturate here: a face this large and this sharp is as good as the model can use
# (the embedder's chip is 150 px); smaller or softer faces count for proportionally less.
FULL_WEIGHT_FACE_PX = 112.0
FULL_WEIGHT_SHARPNESS = 100.0
# Even the worst face that passed the gates keeps some say, so one good vote cannot be outvoted by zero.
MIN_WEIGHT = 0.05
# Sightings kept per track for liveness checks: ~3 s at 10 fps covers a blink.
HISTORY_LEN = 32
# Embeddings (with chips) kept per track for 'enroll/reject {track_id}', and how many ended tracks
# keep theirs: an operator issues the command seconds after the event, when the person may have left.
KEEP_SAMPLES = 5
RECENT_TRACKS = 16
SNAPSHOT_JPEG_QUALITY = 85
# Frame clocks are sums of 1/fps steps; compare intervals with this slack so 0.1 + 0.1 counts as 0.2.
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Cosine-similarity cut-offs: at or above ``match`` is a person, below ``unknown`` a stranger."""

    match: float
    unknown: float
    margin: float

    @classmethod
    def resolve(cls, config: DecisionConfig, model_default: float) -> Thresholds:
        """Fill unset thresholds from the embedder's manifest default."""
        match = config.match_threshold if config.match_threshold is not None else model_default
        unknown = config.unknown_threshold if config.unknown_threshold is not None else match - DEFAULT_UNCERTAIN_BAND
        return cls(match=match, unknown=min(unknown, match), margin=config.margin)


class Lookup(Protocol):
    """Match one fused query against the current database snapshot.

    Returns the match and the metadata of its best candidate (empty when none), both from the same
    snapshot so a reload between the two cannot mix databases.
    """

    def __call__(self, vector: FloatArray, /) -> tuple[Match, Mapping[str, object]]: ...


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


def gate(quality: Quality, config: DecisionConfig) -> Reason | None:
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
    return max(MIN_WEIGHT, size * sharp * pose)


def fuse(vectors: FloatArray, weights: Sequence[float]) -> FloatArray:
    """Weighted mean of L2-normalised rows, re-normalised."""
    w = np.asarray(weights, dtype=np.float32)
    mean = (vectors * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    out: FloatArray = (mean / norm if norm > 0 else mean).astype(np.float32)
    return out


@dataclass(slots=True)
class _TrackState:
    window: deque[Embedding]
    kept: deque[tuple[FloatArray, ImageArray]]
    history: deque[TrackObservation] = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    last_claim: float | None = None
    status: Status | None = None
    gate_only: bool = False  # the last decision was a gate 'uncertain' (no identity evaluated yet)
    gates: Counter[Reason] = field(default_factory=Counter)
    person: tuple[str, str] | None = None
    best_chip: tuple[float, ImageArray] | None = None  # (weight, chip) for the unknown snapshot


class Decider:
    """Turns a track's embeddings into at most one published Decision (see module docstring)."""

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
        self._published: dict[str, float] = {}  # person or unknown id -> when last published
        self._present: dict[str, tuple[str, float]] = {}  # person id -> (name, last seen)

    # --- called by the embed stage ------------------------------------------------------------

    def claim_embedding(self, track_id: int, now: float) -> bool:
        """Whether this track wants an embedding now; a True answer starts its interval."""
        with self._lock:
            state = self._state(track_id)
            if state.status in ("known", "unknown"):
                return False
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
                landmarks = track.face.landmarks if track.face is not None else None
                state.history.append(TrackObservation(now, track.bbox, landmarks))
                if state.status == "known" and state.person is not None:
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
            if state.status is not None or state.window or sum(state.gates.values()) < self.config.votes:
                return Outcome()
            state.status = "uncertain"
            state.gate_only = True
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
    ) -> Outcome:
        """Add one embedding of the track; the Outcome holds the Decision to publish if this completes one."""
        with self._lock:
            state = self._state(track.track_id)
            if state.status in ("known", "unknown"):
                return Outcome()
            weight = sample_weight(embedding.quality)
            state.window.append(embedding)
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
                window=deque(maxlen=self.config.votes), kept=deque(maxlen=max(KEEP_SAMPLES, self.config.votes))
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

    def _cooling(self, key: str, now: float) -> bool:
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
        match, metadata = self._lookup(fused)
        status, reason = classify(match, self.thresholds)
        best = match.best
        similarity = best.similarity if best is not None else 0.0
        liveness: LivenessResult | None = None
        grant = False
        if status == "known":
            liveness = self._liveness.assess(list(state.history))
            if liveness.live is False:
                status, reason = "uncertain", "liveness_failed"
            else:
                allowed = bool(metadata.get(self.config.access_metadata_key, False))
                grant = allowed and (liveness.live is True or not self._liveness.required)

        previous, gate_only = state.status, state.gate_only
        if previous == "uncertain" and not gate_only and status != "known":
            return Outcome()  # still not known: keep the window sliding, publish nothing new
        state.status, state.gate_only = status, False

        if status == "known" and best is not None:
            state.person = (best.person_id, best.name)
            presence = () if best.person_id in self._present else (PresenceChange(best.person_id, best.name, True),)
            self._present[best.person_id] = (best.name, now)
            if self._cooling(best.person_id, now):
                _LOGGER.debug("track %d: %s within cooldown, not published", track.track_id, best.person_id)
                return Outcome(None, presence)
            decision = self._decision(
                track,
                frame,
                status,
                reason,
                best=best,
                similarity=similarity,
                margin=match.margin,
                samples=len(votes),
                stage_ms=stage_ms,
                grant=grant,
                liveness=liveness,
            )
            return Outcome(decision, presence)

        unknown_id: str | None = None
        if status == "unknown" and self._spool is not None:
            jpeg = self._snapshot(state) if self._unknown_snapshots else None
            sighting = self._spool.observe(fused, frame.wall_time, jpeg)
            unknown_id = sighting.unknown_id
            if sighting.ignored:
                _LOGGER.debug("track %d: unknown %s is ignored, not published", track.track_id, unknown_id)
                return Outcome()
            if self._cooling(unknown_id, now):
                return Outcome()
        margin = match.margin if best is not None else 0.0
        decision = self._decision(
            track,
            frame,
            status,
            reason,
            similarity=similarity,
            margin=margin,
            samples=len(votes),
            stage_ms=stage_ms,
            liveness=liveness,
            unknown_id=unknown_id,
        )
        return Outcome(decision)

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
        )
