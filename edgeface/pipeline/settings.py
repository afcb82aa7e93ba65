"""What a ``Pipeline`` is built from: one frozen settings object, and the sink its events go to.

``PipelineSettings`` gathers the plain values every stage needs, resolved once (the decision
thresholds from the settings and the embedder's manifest defaults), so the stages never read a
config section themselves. ``EventSink`` is the pipeline's only way out: decisions, presence changes
and the source's state, called from the pipeline's threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgeface.config import DecisionConfig, PipelineConfig, SourceConfig, TrackerConfig
from edgeface.data import Decision
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.rules import Thresholds


class EmbedderDefaults(Protocol):
    """The operating point an embedder's manifest entry records (``vision.embed.Embedder``)."""

    @property
    def default_threshold(self) -> float: ...

    @property
    def uncertain_band(self) -> float | None: ...

    @property
    def default_margin(self) -> float | None: ...


class EventSink(Protocol):
    """Where the pipeline's events go; each method is called from a pipeline thread and must not block long."""

    def decision(self, decision: Decision) -> None:
        """A recognition, an unknown face or a refusal worth publishing."""
        ...

    def presence(self, change: PresenceChange) -> None:
        """A person's presence turned on or off."""
        ...

    def source_state(self, state: str, detail: str) -> None:
        """The source is streaming, reconnecting or ended (``pipeline.capture`` states)."""
        ...


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    fps: float | None = None  # rate cap; None = the source's own rate
    realtime: bool = True  # pace a replay at its native rate
    loop: bool = True  # start a replay over at its end
    resize_width: int | None = None
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0

    @classmethod
    def of(cls, source: SourceConfig) -> CaptureSettings:
        return cls(
            fps=source.fps,
            realtime=source.realtime,
            loop=source.loop,
            resize_width=source.resize_width,
            reconnect_initial_s=source.reconnect_initial_s,
            reconnect_max_s=source.reconnect_max_s,
        )


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    thresholds: Thresholds
    decision: DecisionConfig
    capture: CaptureSettings = CaptureSettings()
    iou_threshold: float = 0.3  # tracker: minimum IoU to continue a track
    track_max_age_s: float = 1.0  # tracker: a track unseen this long ends
    queue_size: int = 2
    stop_timeout_s: float = 2.0
    unknown_snapshots: bool = False  # keep the best chip of a stranger as a JPEG in the spool

    @classmethod
    def of(
        cls,
        embedder: EmbedderDefaults,
        *,
        source: SourceConfig | None = None,
        decision: DecisionConfig | None = None,
        tracker: TrackerConfig | None = None,
        pipeline: PipelineConfig | None = None,
        unknown_snapshots: bool = False,
    ) -> PipelineSettings:
        """The settings from config sections (defaults where one is not given) and the embedder's defaults."""
        dec = decision or DecisionConfig()
        trk = tracker or TrackerConfig()
        pipe = pipeline or PipelineConfig()
        return cls(
            thresholds=thresholds_for(dec, embedder),
            capture=CaptureSettings.of(source or SourceConfig()),
            decision=dec,
            iou_threshold=trk.iou_threshold,
            track_max_age_s=trk.max_age_s,
            queue_size=pipe.queue_size,
            stop_timeout_s=pipe.stop_timeout_s,
            unknown_snapshots=unknown_snapshots,
        )


def thresholds_for(decision: DecisionConfig, embedder: EmbedderDefaults) -> Thresholds:
    """The thresholds in force: the configured ones, else the embedder's calibrated defaults."""
    return Thresholds.resolve(
        decision, embedder.default_threshold, band=embedder.uncertain_band, margin=embedder.default_margin
    )
