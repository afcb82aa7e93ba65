"""The decision stages: decide (rules, presence) -> spool (unknown ids), and the outlet to the event sink.

The decide stage turns embeddings into decisions and presence changes; a known face's decision goes
to the sink from there. An unknown or uncertain face's first decision goes on to the spool stage,
which gives it its unknown id (disk writes, JPEG snapshot) on its own thread. A finite replay's END
passes through both: the decide stage turns presence off, the spool stage sets ``drained`` and
``stop`` once the last decision is out -- ``edgeface run`` on a file exits when the file is done.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from edgeface.data import BBox, Decision, Frame, ImageArray
from edgeface.pipeline.capture import END, EndOfStream
from edgeface.pipeline.decide import Decider
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.queues import DropQueue, RateMeter, RollingStats
from edgeface.pipeline.settings import EventSink
from edgeface.pipeline.stage import Embedded, Stage, Unknown
from edgeface.pipeline.unknowns import UnknownRouter

_LOGGER = logging.getLogger(__name__)

Attributes = Callable[[ImageArray, BBox], dict[str, float]]
"""Per-face attributes of a published recognition (emotion probabilities), computed on the decide thread."""


class DecisionOutlet:
    """Hands decisions and presence changes to the sink, stamping total latency and counting them.

    Called from the decide and the spool stage: the counters are updated under a lock.
    """

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.latency = RollingStats()  # frame captured -> decision handed to the sink
        self.decisions = 0
        self.liveness_failed = 0

    def decision(self, decision: Decision, stage_ms: dict[str, float]) -> None:
        total = (time.monotonic() - decision.captured_at) * 1000.0
        decision = dataclasses.replace(decision, stage_ms={**decision.stage_ms, **stage_ms, "total": total})
        self.latency.add(total)
        with self._lock:
            self.decisions += 1
            self.liveness_failed += decision.reason == "liveness_failed"
        _LOGGER.debug("decision %s", decision)
        try:
            self._sink.decision(decision)
        except Exception:  # one failing publish must not lose the other decisions of this frame
            _LOGGER.exception("decision sink failed")

    def presence(self, changes: Sequence[PresenceChange]) -> None:
        for change in changes:
            _LOGGER.info("presence %s (%s): %s", change.person_id, change.name, "on" if change.on else "off")
            try:
                self._sink.presence(change)
            except Exception:
                _LOGGER.exception("presence sink failed")


class DecideStage(Stage[Embedded]):
    def __init__(
        self,
        inbox: DropQueue[Embedded | EndOfStream],
        unknowns: DropQueue[Unknown | EndOfStream],
        stop: threading.Event,
        decider: Decider,
        outlet: DecisionOutlet,
        *,
        live_source: bool,
        attributes: Attributes | None = None,
    ) -> None:
        super().__init__("decide", inbox, stop)
        self.unknowns = unknowns
        self.decider = decider
        self.outlet = outlet
        self.live_source = live_source
        self._attributes = attributes
        self.rate = RateMeter()
        self.latency = RollingStats()  # frame captured -> decide stage done

    def process(self, item: Embedded) -> None:
        t0 = time.perf_counter()
        frame, now = item.captured.frame, item.captured.t
        self.outlet.presence(self.decider.observe(item.tracks, item.live_ids, now))
        outcomes = [
            self.decider.reject(track, frame, reason, now, stage_ms=item.stage_ms) for track, reason in item.rejected
        ]
        for track, embedding, chip in item.samples:
            outcome = self.decider.add(
                track, frame, embedding, chip, now, stage_ms=item.stage_ms, passive=item.passive.get(track.track_id)
            )
            self.outlet.presence(outcome.presence)
            outcomes.append(outcome)
        decide_ms = (time.perf_counter() - t0) * 1000.0
        for outcome in outcomes:
            if outcome.decision is None:
                continue
            if outcome.unknown is not None:
                self.unknowns.put(Unknown(outcome.decision, outcome.unknown, decide_ms))
            elif outcome.decision.status == "known":
                self.outlet.decision(self._with_attributes(outcome.decision, frame), {"decide": decide_ms})
            else:
                self.outlet.decision(outcome.decision, {"decide": decide_ms})
        self.latency.add((time.monotonic() - frame.captured_at) * 1000.0)
        self.rate.tick()

    def _with_attributes(self, decision: Decision, frame: Frame) -> Decision:
        # Only for a recognition being published (a few per visit), never per frame.
        if self._attributes is None:
            return decision
        t0 = time.perf_counter()
        emotion = self._attributes(frame.image, decision.bbox)
        stage_ms = {**decision.stage_ms, "attributes": (time.perf_counter() - t0) * 1000.0}
        return dataclasses.replace(decision, emotion=emotion, stage_ms=stage_ms)

    def idle(self) -> None:
        # Only a live source's clock is the monotonic clock; a replay's time stands still between frames.
        if self.live_source:
            self.outlet.presence(self.decider.tick(time.monotonic()))

    def finish(self) -> None:
        self.outlet.presence(self.decider.flush())
        self.unknowns.put(END)


class SpoolStage(Stage[Unknown]):
    """Gives unknown decisions their spool id off the decide thread, then publishes them."""

    def __init__(
        self,
        inbox: DropQueue[Unknown | EndOfStream],
        stop: threading.Event,
        router: UnknownRouter,
        outlet: DecisionOutlet,
        drained: threading.Event,
    ) -> None:
        super().__init__("spool", inbox, stop)
        self.router = router
        self.outlet = outlet
        self.drained = drained

    def process(self, item: Unknown) -> None:
        t0 = time.perf_counter()
        decision = self.router.route(item.decision, item.face)
        if decision is not None:
            spool_ms = (time.perf_counter() - t0) * 1000.0
            self.outlet.decision(decision, {"decide": item.decide_ms, "spool": spool_ms})

    def finish(self) -> None:
        self.drained.set()
        self.stop.set()
