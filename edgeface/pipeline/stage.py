"""The stage thread every pipeline stage is, and the items the stages hand each other.

Each stage is a named, non-daemon thread reading its inbox with a timeout until ``stop`` is set or
END arrives; it keeps a heartbeat and rolling p50/p95 of its per-item time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from edgeface.data import Decision, Detection, Embedding, ImageArray, Reason
from edgeface.pipeline.capture import Captured, EndOfStream
from edgeface.pipeline.decide import UnknownFace
from edgeface.pipeline.queues import DropQueue, RollingStats
from edgeface.pipeline.tracker import Track

_LOGGER = logging.getLogger(__name__)

# How long a stage waits on its inbox before rechecking ``stop``: well inside the 2 s stop budget.
POLL_S = 0.1
# A stage that fails this many items in a row has a bug, not a bad frame: stop instead of logging
# one traceback per frame forever.
MAX_CONSECUTIVE_ERRORS = 25

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Detected:
    captured: Captured
    detections: list[Detection]
    stage_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class Tracked:
    """This frame's tracks; ``claimed`` are the ones to embed, with their landmarks (a subset of ``tracks``)."""

    captured: Captured
    tracks: list[Track]
    live_ids: frozenset[int]
    claimed: list[Track]
    rejected: list[tuple[Track, Reason]]
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


@dataclass(frozen=True, slots=True)
class Unknown:
    """An unknown/uncertain decision on its way to the spool stage."""

    decision: Decision
    face: UnknownFace
    decide_ms: float


class Stage(threading.Thread, Generic[T]):
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
