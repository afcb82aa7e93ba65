"""The pipeline: capture -> detect(+landmarks) -> track -> align+embed -> decide, one thread each.

Threads are named and non-daemon, share one ``stop`` Event, and hand over through bounded
``DropQueue``s (the producer drops the oldest item when the next stage is behind, so latency stays
bounded and a slow stage costs frames, not memory). Each stage keeps a heartbeat and rolling
latency statistics; ``Pipeline.metrics()`` gathers them.

A finite replay ends with an END item that every stage passes on after its last frame; the decide
stage then turns presence off, sets ``drained`` and sets ``stop`` -- ``edgeface run`` on a file
exits when the file is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeface.config import DecisionConfig, PipelineConfig, SourceConfig, TrackerConfig
from edgeface.data import Decision, FloatArray, ImageArray
from edgeface.errors import EdgefaceError
from edgeface.liveness.policy import LivenessPolicy
from edgeface.matching.matcher import match
from edgeface.matching.snapshot import DbSnapshot
from edgeface.pipeline.capture import STREAMING, Captured, CaptureThread, EndOfStream, SourceState
from edgeface.pipeline.decide import Decider, Lookup, LookupResult, UnknownObserver
from edgeface.pipeline.queues import DropQueue
from edgeface.pipeline.rules import Thresholds
from edgeface.pipeline.tracker import Tracker
from edgeface.pipeline.workers import (
    Aligner,
    Attributes,
    DecideStage,
    Detected,
    Detector,
    DetectStage,
    Embedded,
    Embedder,
    EmbedStage,
    Landmarker,
    PassiveScorer,
    QualityMeasure,
    Tracked,
    TrackStage,
)
from edgeface.sources.base import FrameSource
from edgeface.vision import quality

if TYPE_CHECKING:
    from edgeface.matching.db import FaceDatabase
    from edgeface.vision.analyzer import FaceAnalyzer

_LOGGER = logging.getLogger(__name__)

__all__ = ["Aligner", "Detector", "Embedder", "Landmarker", "Pipeline", "QualityMeasure", "snapshot_lookup"]

SnapshotProvider = Callable[[], DbSnapshot]
MetadataProvider = Callable[[str], Mapping[str, object]]


class SnapshotLookup:
    """The decision ``Lookup`` over the database: the provider is asked per match, so a reload lands atomically."""

    def __init__(
        self, snapshot_provider: SnapshotProvider, top_k: int, metadata_provider: MetadataProvider | None = None
    ) -> None:
        self._snapshots = snapshot_provider
        self._top_k = top_k
        self._metadata = metadata_provider

    def __call__(self, vector: FloatArray, /) -> LookupResult:
        """Top-k match on the current snapshot, the best candidate's metadata and the snapshot's generation."""
        snapshot = self._snapshots()
        result = match(snapshot, vector[np.newaxis, :], self._top_k)[0]
        best = result.best
        if best is None or self._metadata is None:
            return LookupResult(result, {}, snapshot.generation)
        try:
            return LookupResult(result, self._metadata(best.person_id), snapshot.generation)
        except EdgefaceError:
            # Deleted between the snapshot and now: no metadata, so no grant.
            return LookupResult(result, {}, snapshot.generation)

    def generation(self) -> int:
        """The current snapshot's generation (the database builds a snapshot once per generation)."""
        return self._snapshots().generation


def snapshot_lookup(
    snapshot_provider: SnapshotProvider, top_k: int, metadata_provider: MetadataProvider | None = None
) -> Lookup:
    """A decision ``Lookup`` over the database (see ``SnapshotLookup``)."""
    return SnapshotLookup(snapshot_provider, top_k, metadata_provider)


# --- the whole pipeline -----------------------------------------------------------------------


class Pipeline:
    """Builds and runs the stage threads for one source; see the module docstring."""

    def __init__(
        self,
        source: FrameSource,
        detector: Detector,
        landmarker: Landmarker,
        embedder: Embedder,
        *,
        aligner: Aligner,
        snapshot_provider: SnapshotProvider,
        metadata_provider: MetadataProvider | None = None,
        spool: UnknownObserver | None = None,
        liveness: LivenessPolicy | None = None,
        passive: PassiveScorer | None = None,
        source_config: SourceConfig | None = None,
        decision_config: DecisionConfig | None = None,
        tracker_config: TrackerConfig | None = None,
        pipeline_config: PipelineConfig | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        on_presence: Callable[[str, str, bool], None] | None = None,
        on_source_state: SourceState | None = None,
        unknown_snapshots: bool = False,
        measure: QualityMeasure = quality.measure,
        stop: threading.Event | None = None,
        attributes: Attributes | None = None,
    ) -> None:
        src = source_config or SourceConfig()
        dec = decision_config or DecisionConfig()
        trk = tracker_config or TrackerConfig()
        self.config = pipeline_config or PipelineConfig()
        self.source = source
        self.stop_event = stop or threading.Event()
        self.drained = threading.Event()
        self._on_source_state = on_source_state
        self.thresholds = Thresholds.resolve(
            dec, embedder.default_threshold, band=embedder.uncertain_band, margin=embedder.default_margin
        )
        lookup = snapshot_lookup(snapshot_provider, dec.top_k, metadata_provider)
        self.decider = Decider(
            dec, self.thresholds, lookup, liveness=liveness, spool=spool, unknown_snapshots=unknown_snapshots
        )
        # A replay that is not paced in real time is offline processing: every frame is wanted.
        lossless = not source.is_live and not src.realtime
        size, stop_ev = self.config.queue_size, self.stop_event
        self.queues: dict[str, DropQueue[Any]] = {
            "detect": DropQueue[Captured | EndOfStream]("detect", size, stop_ev, lossless=lossless),
            "track": DropQueue[Detected | EndOfStream]("track", size, stop_ev, lossless=lossless),
            "embed": DropQueue[Tracked | EndOfStream]("embed", size, stop_ev, lossless=lossless),
            "decide": DropQueue[Embedded | EndOfStream]("decide", size, stop_ev, lossless=lossless),
        }
        q = self.queues
        self.capture = CaptureThread(
            source,
            q["detect"],
            stop_ev,
            fps=src.fps,
            realtime=src.realtime,
            loop=src.loop,
            resize_width=src.resize_width,
            reconnect_initial_s=src.reconnect_initial_s,
            reconnect_max_s=src.reconnect_max_s,
            on_source_state=on_source_state,
        )
        self.detect = DetectStage(q["detect"], q["track"], stop_ev, detector, landmarker)
        self.track = TrackStage(q["track"], q["embed"], stop_ev, Tracker(trk.iou_threshold, trk.max_age_s))
        self.embed = EmbedStage(
            q["embed"],
            q["decide"],
            stop_ev,
            aligner=aligner,
            embedder=embedder,
            measure=measure,
            decider=self.decider,
            passive=passive,
        )
        self.decide = DecideStage(
            q["decide"],
            stop_ev,
            self.decider,
            live_source=source.is_live,
            on_decision=on_decision,
            on_presence=on_presence,
            drained=self.drained,
            attributes=attributes,
        )
        self._threads: list[threading.Thread] = [self.capture, self.detect, self.track, self.embed, self.decide]
        self._started_at: float | None = None

    @property
    def source_failure(self) -> str | None:
        """Why a finite replay ended early (vanished, unreadable), or None; read once ``drained`` is set."""
        return self.capture.failure

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    @classmethod
    def from_analyzer(
        cls, source: FrameSource, vision: FaceAnalyzer, database: FaceDatabase, **options: Any
    ) -> Pipeline:
        """A pipeline over one analyzer's models and one database; ``options`` are the keyword arguments above.

        Each match reads the database's current snapshot, and a grant reads the person's metadata then.
        """
        return cls(
            source,
            vision.detector,
            vision.landmarker,
            vision.embedder,
            aligner=vision.aligner,
            snapshot_provider=database.snapshot,
            metadata_provider=lambda person_id: database.get(person_id).metadata,
            **options,
        )

    def start(self) -> None:
        """Open the source (SourceError propagates: fail fast) and start the threads, last stage first."""
        self.source.open()
        self._started_at = time.monotonic()
        if self._on_source_state is not None:
            self._on_source_state(STREAMING, self.source.name)
        for thread in reversed(self._threads):
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish (returns at once; ``join`` waits)."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> list[str]:
        """Wait up to ``timeout`` seconds in total (default ``stop_timeout_s``); names of threads still alive."""
        deadline = time.monotonic() + (self.config.stop_timeout_s if timeout is None else timeout)
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            _LOGGER.warning("pipeline threads still running after the stop timeout: %s", ", ".join(alive))
        return alive

    def heartbeats(self) -> dict[str, float]:
        """Last loop time (monotonic) of each stage thread, by thread name."""
        return {
            self.capture.name: self.capture.heartbeat,
            **{s.name: s.heartbeat for s in (self.detect, self.track, self.embed, self.decide)},
        }

    def track_samples(self, track_id: int) -> list[tuple[FloatArray, ImageArray]]:
        """Recent (embedding, aligned chip) pairs of a live or recently ended track (for enroll/reject)."""
        return self.decider.track_samples(track_id)

    def metrics(self) -> dict[str, Any]:
        """fps, per-stage p50/p95 ms, capture->decide latency, drops and depth per queue, counters."""
        stages = {"capture": self.capture.stats.summary()}
        for stage in (self.detect, self.track, self.embed, self.decide):
            stages[stage.name] = stage.stats.summary()
        return {
            "fps": round(self.decide.rate.rate(), 2),
            "capture_fps": round(self.capture.rate.rate(), 2),
            "frames": self.capture.frames,
            "processed": self.decide.items,
            "faces": self.detect.faces,
            "embeddings": self.embed.embedded,
            "tracks": self.track.live,
            "decisions": self.decide.decisions,
            "liveness_failed": self.decide.liveness_failed,
            "passive_checks": self.embed.passive_checks,
            "passive_ms": self.embed.passive_stats.summary(),
            "stages": stages,
            "embed_batch": self.embed.batch_stats.summary(),
            "latency_ms": self.decide.latency.summary(),
            "decision_latency_ms": self.decide.decision_latency.summary(),
            "drops": {name: q.drops for name, q in self.queues.items()},
            "queued": {name: q.qsize() for name, q in self.queues.items()},
            "uptime_s": round(time.monotonic() - self._started_at, 1) if self._started_at else 0.0,
        }
