"""The stage threads of the pipeline and the items they hand each other (``stages.Pipeline`` wires them).

Each stage is a named, non-daemon thread reading its inbox with a timeout until ``stop`` is set or
END arrives; it keeps a heartbeat and rolling p50/p95 of its per-frame time.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from edgeface.data import (
    AlignedBy,
    BBox,
    Decision,
    Detection,
    Embedding,
    Face,
    FloatArray,
    ImageArray,
    Landmarks,
    Quality,
    Reason,
)
from edgeface.pipeline.capture import END, Captured, EndOfStream
from edgeface.pipeline.decide import Decider, PresenceChange
from edgeface.pipeline.queues import DropQueue, RateMeter, RollingStats
from edgeface.pipeline.tracker import SceneCutDetector, Track, Tracker

_LOGGER = logging.getLogger(__name__)

# How long a stage waits on its inbox before rechecking ``stop``: well inside the 2 s stop budget.
POLL_S = 0.1
# A stage that fails this many frames in a row has a bug, not a bad frame: stop instead of logging
# one traceback per frame forever.
MAX_CONSECUTIVE_ERRORS = 25

T = TypeVar("T")


# --- what the stages need from vision and matching -------------------------------------------


class Detector(Protocol):
    def detect(self, image_bgr: ImageArray) -> list[Detection]: ...


class Landmarker(Protocol):
    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None: ...


class Aligner(Protocol):
    @property
    def keypoint_fallback(self) -> bool:
        """Whether a face without landmarks is aligned on its detector keypoints."""
        ...

    def align_face(self, image_bgr: ImageArray, face: Face) -> tuple[ImageArray, AlignedBy] | None:
        """The chip (on the template point set's five points, or the fallback's keypoints) and its alignment."""
        ...


class PassiveScorer(Protocol):
    """The passive liveness model (``edgeface.liveness.passive.PassiveLiveness``)."""

    def score(self, image_bgr: ImageArray, bbox: BBox) -> float | None:
        """Fused live probability of the face in ``bbox``; None when it is too small to judge."""
        ...


class Embedder(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def default_threshold(self) -> float: ...

    @property
    def uncertain_band(self) -> float | None: ...

    @property
    def default_margin(self) -> float | None: ...

    def embed(self, chips: Sequence[ImageArray]) -> FloatArray:
        """(N, D) L2-normalised float32 embeddings of aligned chips."""
        ...


QualityMeasure = Callable[[Detection, Landmarks | None, ImageArray], Quality]


# --- items handed between stages --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detected:
    captured: Captured
    faces: list[Face]
    stage_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Tracked:
    captured: Captured
    tracks: list[Track]
    live_ids: frozenset[int]
    stage_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Embedded:
    captured: Captured
    tracks: list[Track]
    live_ids: frozenset[int]
    samples: list[tuple[Track, Embedding, ImageArray]]
    rejected: list[tuple[Track, Reason]]
    stage_ms: dict[str, float] = field(default_factory=dict)
    passive: dict[int, float] = field(default_factory=dict)  # track id -> passive liveness score of this frame


# --- the stage threads ------------------------------------------------------------------------


class _Stage(threading.Thread, Generic[T]):
    """A worker that takes items from ``inbox`` until ``stop`` or END; subclasses implement ``process``."""

    def __init__(self, name: str, inbox: DropQueue[T | EndOfStream], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=False)
        self.inbox = inbox
        self.stop = stop
        self.heartbeat = time.monotonic()
        self.stats = RollingStats()
        self.items = 0

    def run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                item = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                self._guarded(self.idle)
                continue
            if isinstance(item, EndOfStream):
                self._guarded(self.finish)
                return
            started = time.perf_counter()
            try:
                self.process(item)
            except Exception:
                failures += 1
                _LOGGER.exception("stage %s failed on a frame (%d in a row)", self.name, failures)
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    _LOGGER.error("stage %s keeps failing; stopping the pipeline", self.name)
                    self.stop.set()
                continue
            failures = 0
            self.items += 1
            self.stats.add((time.perf_counter() - started) * 1000.0)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            _LOGGER.exception("stage %s failed", self.name)

    def process(self, item: T) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        """Called when no item arrived within the poll interval."""

    def finish(self) -> None:
        """Called once at END."""


class DetectStage(_Stage[Captured]):
    def __init__(
        self,
        inbox: DropQueue[Captured | EndOfStream],
        out: DropQueue[Detected | EndOfStream],
        stop: threading.Event,
        detector: Detector,
        landmarker: Landmarker,
    ) -> None:
        super().__init__("detect", inbox, stop)
        self.out = out
        self.detector = detector
        self.landmarker = landmarker
        self.faces = 0

    def process(self, item: Captured) -> None:
        image = item.frame.image
        t0 = time.perf_counter()
        detections = self.detector.detect(image)
        t1 = time.perf_counter()
        faces = [Face(d, self.landmarker.landmarks(image, d)) for d in detections]
        t2 = time.perf_counter()
        self.faces += len(faces)
        ms = {"detect": (t1 - t0) * 1000.0, "landmarks": (t2 - t1) * 1000.0}
        self.out.put(Detected(item, faces, ms))

    def finish(self) -> None:
        self.out.put(END)


class TrackStage(_Stage[Detected]):
    def __init__(
        self,
        inbox: DropQueue[Detected | EndOfStream],
        out: DropQueue[Tracked | EndOfStream],
        stop: threading.Event,
        tracker: Tracker,
    ) -> None:
        super().__init__("track", inbox, stop)
        self.out = out
        self.tracker = tracker
        self.cuts = SceneCutDetector()
        self.live = 0

    def process(self, item: Detected) -> None:
        t0 = time.perf_counter()
        if self.cuts(item.captured.frame.image):
            cut = self.tracker.end_all()
            if cut:
                _LOGGER.debug("scene cut at frame %d: tracks %s ended", item.captured.frame.index, cut)
        tracks, ended = self.tracker.update(item.faces, item.captured.t)
        live = self.tracker.live_ids
        self.live = len(live)
        if ended:
            _LOGGER.debug("tracks ended: %s", ended)
        ms = {**item.stage_ms, "track": (time.perf_counter() - t0) * 1000.0}
        self.out.put(Tracked(item.captured, tracks, live, ms))

    def finish(self) -> None:
        self.out.put(END)


class EmbedStage(_Stage[Tracked]):
    def __init__(
        self,
        inbox: DropQueue[Tracked | EndOfStream],
        out: DropQueue[Embedded | EndOfStream],
        stop: threading.Event,
        *,
        aligner: Aligner,
        embedder: Embedder,
        measure: QualityMeasure,
        decider: Decider,
        passive: PassiveScorer | None = None,
    ) -> None:
        super().__init__("embed", inbox, stop)
        self.out = out
        self.aligner = aligner
        self.embedder = embedder
        self.measure = measure
        self.decider = decider
        self.passive = passive
        self.embedded = 0
        self.passive_checks = 0
        self.batch_stats = RollingStats()  # ms per embedder call (most frames embed nothing)
        self.passive_stats = RollingStats()  # ms per face scored by the passive liveness model

    def process(self, item: Tracked) -> None:
        t0 = time.perf_counter()
        image, now = item.captured.frame.image, item.captured.t
        rejected: list[tuple[Track, Reason]] = []
        ready: list[tuple[Track, ImageArray, Quality]] = []
        for track in item.tracks:
            face = track.face
            if face is None or (face.landmarks is None and not self.aligner.keypoint_fallback):
                continue  # no landmarks, no alignment: wait for a better frame
            if not self.decider.claim_embedding(track.track_id, now):
                continue
            if self.decider.too_small(track.bbox):
                rejected.append((track, "too_small"))  # not worth aligning
                continue
            aligned = self.aligner.align_face(image, face)
            if aligned is None:
                continue
            chip = aligned[0]
            quality = self.measure(face.detection, face.landmarks, chip)
            reason = self.decider.gate(quality)
            if reason is not None:
                rejected.append((track, reason))
            else:
                ready.append((track, chip, quality))
        samples: list[tuple[Track, Embedding, ImageArray]] = []
        if ready:
            # One batched call: the interpreter's per-invoke overhead dominates for small chips.
            t1 = time.perf_counter()
            vectors = self.embedder.embed([chip for _, chip, _ in ready])
            self.batch_stats.add((time.perf_counter() - t1) * 1000.0)
            model_id = self.embedder.model_id
            for (track, chip, quality), vector in zip(ready, vectors, strict=True):
                samples.append((track, Embedding(vector, model_id, quality), chip))
            self.embedded += len(samples)
        passive: dict[int, float] = {}
        if self.passive is not None:
            # Scored with each embedding, not each frame: a few crops per track, like the embedder.
            for track, _chip, _quality in ready:
                t1 = time.perf_counter()
                score = self.passive.score(image, track.bbox)
                if score is not None:
                    self.passive_stats.add((time.perf_counter() - t1) * 1000.0)
                    self.passive_checks += 1
                    passive[track.track_id] = score
        ms = {**item.stage_ms, "embed": (time.perf_counter() - t0) * 1000.0}
        self.out.put(Embedded(item.captured, item.tracks, item.live_ids, samples, rejected, ms, passive))

    def finish(self) -> None:
        self.out.put(END)


Attributes = Callable[[ImageArray, BBox], dict[str, float]]
"""Per-face attributes of a published recognition (emotion probabilities), computed on the decide thread."""


class DecideStage(_Stage[Embedded]):
    def __init__(
        self,
        inbox: DropQueue[Embedded | EndOfStream],
        stop: threading.Event,
        decider: Decider,
        *,
        live_source: bool,
        on_decision: Callable[[Decision], None] | None,
        on_presence: Callable[[str, str, bool], None] | None,
        drained: threading.Event,
        attributes: Attributes | None = None,
    ) -> None:
        super().__init__("decide", inbox, stop)
        self._attributes = attributes
        self.decider = decider
        self.live_source = live_source
        self._on_decision = on_decision
        self._on_presence = on_presence
        self.drained = drained
        self.rate = RateMeter()
        self.latency = RollingStats()  # frame captured -> decide stage done
        self.decision_latency = RollingStats()  # frame captured -> decision emitted
        self.decisions = 0
        self.liveness_failed = 0

    def process(self, item: Embedded) -> None:
        t0 = time.perf_counter()
        frame, now = item.captured.frame, item.captured.t
        self._presence(self.decider.observe(item.tracks, item.live_ids, now))
        decisions: list[Decision] = []
        for track, reason in item.rejected:
            outcome = self.decider.reject(track, frame, reason, now, stage_ms=item.stage_ms)
            if outcome.decision is not None:
                decisions.append(outcome.decision)
        for track, embedding, chip in item.samples:
            outcome = self.decider.add(
                track, frame, embedding, chip, now, stage_ms=item.stage_ms, passive=item.passive.get(track.track_id)
            )
            self._presence(outcome.presence)
            if outcome.decision is not None:
                decisions.append(outcome.decision)
        decide_ms = (time.perf_counter() - t0) * 1000.0
        for made in decisions:
            total = (time.monotonic() - frame.captured_at) * 1000.0
            decision = dataclasses.replace(made, stage_ms={**made.stage_ms, "decide": decide_ms, "total": total})
            if self._attributes is not None and decision.status == "known":
                decision = self._with_attributes(decision, frame.image)
            self.decision_latency.add(total)
            self.decisions += 1
            self.liveness_failed += decision.reason == "liveness_failed"
            _LOGGER.debug("decision %s", decision)
            if self._on_decision is not None:
                self._deliver(self._on_decision, decision)
        self.latency.add((time.monotonic() - frame.captured_at) * 1000.0)
        self.rate.tick()

    def _with_attributes(self, decision: Decision, image: ImageArray) -> Decision:
        # Only for a recognition being published (a few per visit), never per frame.
        t0 = time.perf_counter()
        emotion = self._attributes(image, decision.bbox) if self._attributes is not None else None
        stage_ms = {**decision.stage_ms, "attributes": (time.perf_counter() - t0) * 1000.0}
        return dataclasses.replace(decision, emotion=emotion, stage_ms=stage_ms)

    def idle(self) -> None:
        # Only a live source's clock is the monotonic clock; a replay's time stands still between frames.
        if self.live_source:
            self._presence(self.decider.tick(time.monotonic()))

    def finish(self) -> None:
        self._presence(self.decider.flush())
        self.drained.set()
        self.stop.set()

    def _presence(self, changes: Sequence[PresenceChange]) -> None:
        for change in changes:
            _LOGGER.info("presence %s (%s): %s", change.person_id, change.name, "on" if change.on else "off")
            if self._on_presence is not None:
                self._deliver(self._on_presence, change.person_id, change.name, change.on)

    def _deliver(self, callback: Callable[..., None], *args: Any) -> None:
        # One failing consumer (a publish error) must not lose the other decisions of this frame.
        try:
            callback(*args)
        except Exception:
            _LOGGER.exception("%s callback failed", getattr(callback, "__name__", "decision"))
