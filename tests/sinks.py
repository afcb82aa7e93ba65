"""Event sinks for pipeline tests (second implementations of ``pipeline.settings.EventSink``), and the
offline pipeline those tests build: a replay processed frame by frame, not paced, nothing dropped."""

from __future__ import annotations

import threading

from edgeface.config import DecisionConfig, PipelineConfig, SourceConfig
from edgeface.data import Decision
from edgeface.matching.db import FaceDatabase
from edgeface.pipeline.lookup import SnapshotLookup
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.settings import EventSink, PipelineSettings
from edgeface.pipeline.stages import Pipeline, PipelineParts
from edgeface.sources.base import FrameSource
from edgeface.vision.analyzer import FaceAnalyzer


class DecisionLog:
    """Keeps the decisions (from any pipeline thread); presence and source state are not watched."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self._lock = threading.Lock()

    def decision(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def presence(self, change: PresenceChange) -> None:
        """Not watched by the tests using this sink."""

    def source_state(self, state: str, detail: str) -> None:
        """Not watched by the tests using this sink."""


def offline_pipeline(
    source: FrameSource,
    vision: FaceAnalyzer,
    database: FaceDatabase,
    sink: EventSink,
    parts: PipelineParts | None = None,
) -> Pipeline:
    """A pipeline over a finite replay: unpaced, lossless, 3 votes 0.1 s apart, the model's thresholds."""
    decision = DecisionConfig(votes=3, embed_interval_s=0.1)
    settings = PipelineSettings.of(
        vision.embedder,
        source=SourceConfig(realtime=False, loop=False),
        decision=decision,
        pipeline=PipelineConfig(queue_size=2),
    )
    return Pipeline(source, vision, SnapshotLookup.over(database, decision.top_k), settings, sink, parts)
