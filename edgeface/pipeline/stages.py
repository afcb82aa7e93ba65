"""The pipeline: capture -> detect -> track (+landmarks) -> align+embed -> decide -> spool, one thread each.

Threads are named and non-daemon, share one ``stop`` Event, and hand over through bounded
``DropQueue``s (the producer drops the oldest item when the next stage is behind, so latency stays
bounded and a slow stage costs frames, not memory). Each stage keeps a heartbeat and rolling
latency statistics; ``Pipeline.metrics()`` gathers them.

A ``Pipeline`` is built from the frame source, the ``Vision`` boundary, a database ``Lookup``, one
frozen ``PipelineSettings`` and one ``EventSink``; optional parts (the unknown spool, the liveness
policy, the passive model, event attributes) come as ``PipelineParts``. The command side reads the
per-track samples from ``Pipeline.samples`` directly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from edgeface.liveness.policy import LivenessPolicy, NoLiveness
from edgeface.pipeline.capture import STREAMING, Captured, CaptureThread, EndOfStream
from edgeface.pipeline.decide import Decider
from edgeface.pipeline.lookup import Lookup
from edgeface.pipeline.outlets import Attributes, DecideStage, DecisionOutlet, SpoolStage
from edgeface.pipeline.queues import DropQueue
from edgeface.pipeline.rules import Gates
from edgeface.pipeline.samples import SampleRing
from edgeface.pipeline.settings import EventSink, PipelineSettings
from edgeface.pipeline.stage import Detected, Embedded, Tracked, Unknown
from edgeface.pipeline.tracker import Tracker
from edgeface.pipeline.unknowns import UnknownObserver, UnknownRouter
from edgeface.pipeline.workers import DetectStage, EmbedStage, PassiveScorer, TrackStage
from edgeface.sources.base import FrameSource
from edgeface.vision.analyzer import Vision

_LOGGER = logging.getLogger(__name__)

# Unknown decisions waiting for the spool stage: a frame's worth of strangers even in a crowd.
SPOOL_QUEUE = 16


@dataclass(frozen=True, slots=True)
class PipelineParts:
    """The optional collaborators of a pipeline; each absent part turns its feature off."""

    spool: UnknownObserver | None = None  # unknown faces get an id and can be confirmed
    liveness: LivenessPolicy | None = None  # None: liveness off
    passive: PassiveScorer | None = None  # the passive model, scored with each embedding
    attributes: Attributes | None = None  # per-recognition attributes (emotion)


def _queues(size: int, stop: threading.Event, *, lossless: bool) -> dict[str, DropQueue[Any]]:
    """The inbox of each stage after capture, by stage name."""
    return {
        "detect": DropQueue[Captured | EndOfStream]("detect", size, stop, lossless=lossless),
        "track": DropQueue[Detected | EndOfStream]("track", size, stop, lossless=lossless),
        "embed": DropQueue[Tracked | EndOfStream]("embed", size, stop, lossless=lossless),
        "decide": DropQueue[Embedded | EndOfStream]("decide", size, stop, lossless=lossless),
        # Strangers are rare and each one matters: room for a crowd of them at once.
        "spool": DropQueue[Unknown | EndOfStream]("spool", max(size, SPOOL_QUEUE), stop, lossless=lossless),
    }


class Pipeline:
    """Builds and runs the stage threads for one source; see the module docstring."""

    def __init__(
        self,
        source: FrameSource,
        vision: Vision,
        lookup: Lookup,
        settings: PipelineSettings,
        sink: EventSink,
        parts: PipelineParts | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        parts = parts or PipelineParts()
        self.settings = settings
        self.source = source
        self.stop_event = stop or threading.Event()
        self.drained = threading.Event()
        self._sink = sink
        liveness = parts.liveness or NoLiveness()
        self.decider = Decider(
            settings.decision,
            settings.thresholds,
            lookup,
            liveness=liveness,
            unknown_snapshots=settings.unknown_snapshots,
        )
        self.samples: SampleRing = self.decider.samples
        capture, stop_ev = settings.capture, self.stop_event
        # A replay that is not paced in real time is offline processing: every frame is wanted.
        self.queues = q = _queues(settings.queue_size, stop_ev, lossless=not source.is_live and not capture.realtime)
        self.capture = CaptureThread(
            source,
            q["detect"],
            stop_ev,
            capture,
            on_source_state=sink.source_state,
        )
        self.detect = DetectStage(q["detect"], q["track"], stop_ev, vision)
        self.track = TrackStage(
            q["track"],
            q["embed"],
            stop_ev,
            tracker=Tracker(settings.iou_threshold, settings.track_max_age_s),
            vision=vision,
            scheduler=self.decider.scheduler,
            min_face_px=settings.decision.min_face_px,
        )
        self.embed = EmbedStage(
            q["embed"], q["decide"], stop_ev, vision=vision, gates=Gates.of(settings.decision), passive=parts.passive
        )
        self.outlet = DecisionOutlet(sink)
        self.decide = DecideStage(
            q["decide"],
            q["spool"],
            stop_ev,
            self.decider,
            self.outlet,
            live_source=source.is_live,
            attributes=parts.attributes,
        )
        router = UnknownRouter(parts.spool, settings.decision.cooldown_s)
        self.spool = SpoolStage(q["spool"], stop_ev, router, self.outlet, self.drained)
        self._stages = (self.detect, self.track, self.embed, self.decide, self.spool)
        self._threads: list[threading.Thread] = [self.capture, *self._stages]
        self._started_at: float | None = None

    @property
    def source_failure(self) -> str | None:
        """Why a finite replay ended early (vanished, unreadable), or None; read once ``drained`` is set."""
        return self.capture.failure

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def start(self) -> None:
        """Open the source (SourceError propagates: fail fast) and start the threads, last stage first."""
        self.source.open()
        self._started_at = time.monotonic()
        self._sink.source_state(STREAMING, self.source.name)
        for thread in reversed(self._threads):
            thread.start()

    def stop(self) -> None:
        """Ask every thread to finish (returns at once; ``join`` waits)."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> list[str]:
        """Wait up to ``timeout`` seconds in total (default ``stop_timeout_s``); names of threads still alive."""
        deadline = time.monotonic() + (self.settings.stop_timeout_s if timeout is None else timeout)
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            _LOGGER.warning("pipeline threads still running after the stop timeout: %s", ", ".join(alive))
        return alive

    def shutdown(self) -> None:
        """Stop and wait for the threads (``join``'s default timeout; it logs any still alive)."""
        self.stop()
        self.join()

    def heartbeats(self) -> dict[str, float]:
        """Last loop time (monotonic) of each stage thread, by thread name."""
        return {self.capture.name: self.capture.heartbeat, **{s.name: s.heartbeat for s in self._stages}}

    def metrics(self) -> dict[str, Any]:
        """fps, per-stage p50/p95 ms, capture->decide latency, drops and depth per queue, counters."""
        stages = {"capture": self.capture.stats.summary()}
        for stage in self._stages:
            stages[stage.name] = stage.stats.summary()
        return {
            "fps": round(self.decide.rate.rate(), 2),
            "capture_fps": round(self.capture.rate.rate(), 2),
            "frames": self.capture.frames,
            "processed": self.decide.items,
            "faces": self.detect.faces,
            "landmarked": self.track.landmarked,
            "unaligned": self.track.unaligned,
            "embeddings": self.embed.embedded,
            "tracks": self.track.live,
            "decisions": self.outlet.decisions,
            "liveness_failed": self.outlet.liveness_failed,
            "passive_checks": self.embed.passive_checks,
            "passive_ms": self.embed.passive_stats.summary(),
            "stages": stages,
            "embed_batch": self.embed.batch_stats.summary(),
            "latency_ms": self.decide.latency.summary(),
            "decision_latency_ms": self.outlet.latency.summary(),
            "drops": {name: q.drops for name, q in self.queues.items()},
            "queued": {name: q.qsize() for name, q in self.queues.items()},
            "uptime_s": round(time.monotonic() - self._started_at, 1) if self._started_at else 0.0,
        }
