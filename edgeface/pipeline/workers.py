"""The vision stages: detect (boxes) -> track (+ FaceMesh where needed) -> align and embed.

Per-frame work stays at what every frame needs: the detector and the tracker. FaceMesh runs only on
the faces that need their landmarks -- a track about to be embedded (alignment and the pose gate)
and, when a landmark liveness check (blink, motion) is configured, every sighting of a track that
has not been shown live yet. A track between its embeddings is followed by its box alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Protocol

from edgeface.data import BBox, Face, ImageArray, Reason
from edgeface.pipeline.capture import END, Captured, EndOfStream
from edgeface.pipeline.fanout import SideThreads
from edgeface.pipeline.queues import DropQueue, RollingStats
from edgeface.pipeline.rules import Gates, gate
from edgeface.pipeline.schedule import EmbedScheduler
from edgeface.pipeline.stage import Detected, Embedded, Stage, Tracked
from edgeface.pipeline.tracker import SceneCutDetector, Track, Tracker
from edgeface.vision.analyzer import AlignedFace, Vision

_LOGGER = logging.getLogger(__name__)


class PassiveScorer(Protocol):
    """The passive liveness model as the embed stage calls it (``edgeface.liveness.passive.PassiveLiveness``)."""

    def score(self, image_bgr: ImageArray, bbox: BBox) -> float | None:
        """Fused live probability of the face in ``bbox``; None when it is too small to judge."""
        ...


class DetectStage(Stage[Captured]):
    def __init__(
        self,
        inbox: DropQueue[Captured | EndOfStream],
        out: DropQueue[Detected | EndOfStream],
        stop: threading.Event,
        vision: Vision,
    ) -> None:
        super().__init__("detect", inbox, stop)
        self.out = out
        self.vision = vision
        self.faces = 0

    def process(self, item: Captured) -> None:
        t0 = time.perf_counter()
        detections = self.vision.detect(item.frame.image)
        self.faces += len(detections)
        self.out.put(Detected(item, detections, {"detect": (time.perf_counter() - t0) * 1000.0}))

    def finish(self) -> None:
        self.out.put(END)


class TrackStage(Stage[Detected]):
    """Tracks boxes, claims embeddings through the scheduler, and runs FaceMesh on the faces that need it."""

    def __init__(
        self,
        inbox: DropQueue[Detected | EndOfStream],
        out: DropQueue[Tracked | EndOfStream],
        stop: threading.Event,
        *,
        tracker: Tracker,
        vision: Vision,
        scheduler: EmbedScheduler,
        min_face_px: int,
    ) -> None:
        super().__init__("track", inbox, stop)
        self.out = out
        self.tracker = tracker
        self.vision = vision
        self.scheduler = scheduler
        self.min_face_px = min_face_px
        self.cuts = SceneCutDetector()
        self.live = 0
        self.landmarked = 0  # faces FaceMesh ran on
        self.unaligned = 0  # faces FaceMesh rejected

    def process(self, item: Detected) -> None:
        t0 = time.perf_counter()
        image, now = item.captured.frame.image, item.captured.t
        if self.cuts(image):
            cut = self.tracker.end_all()
            if cut:
                _LOGGER.debug("scene cut at frame %d: tracks %s ended", item.captured.frame.index, cut)
        tracked, ended = self.tracker.update(item.detections, now)
        if ended:
            _LOGGER.debug("tracks ended: %s", ended)
        t1 = time.perf_counter()
        tracks: list[Track] = []
        claimed: list[Track] = []
        rejected: list[tuple[Track, Reason]] = []
        for seen in tracked:
            embed = self.scheduler.claim(seen.track_id, now)
            if embed and min(seen.bbox.width, seen.bbox.height) < self.min_face_px:
                rejected.append((seen, "too_small"))  # not worth FaceMesh nor aligning
                embed = False
            landmarks = None
            if embed or self.scheduler.watches_landmarks(seen.track_id):
                landmarks = self.vision.landmarks(image, seen.detection)
                self.landmarked += 1
                self.unaligned += landmarks is None
            track = dataclasses.replace(seen, face=Face(seen.detection, landmarks))
            tracks.append(track)
            if embed and landmarks is None and not self.vision.keypoint_fallback:
                self.scheduler.release(track.track_id)  # nothing to align on: try again on the next frame
            elif embed:
                claimed.append(track)
        live = self.tracker.live_ids
        self.live = len(live)
        t2 = time.perf_counter()
        ms = {**item.stage_ms, "track": (t1 - t0) * 1000.0, "landmarks": (t2 - t1) * 1000.0}
        self.out.put(Tracked(item.captured, tracks, live, claimed, rejected, ms))

    def finish(self) -> None:
        self.out.put(END)


class EmbedStage(Stage[Tracked]):
    """Aligns the claimed faces, gates them on quality, embeds the rest, scores passive liveness beside it."""

    def __init__(
        self,
        inbox: DropQueue[Tracked | EndOfStream],
        out: DropQueue[Embedded | EndOfStream],
        stop: threading.Event,
        *,
        vision: Vision,
        gates: Gates,
        passive: PassiveScorer | None = None,
    ) -> None:
        super().__init__("embed", inbox, stop)
        self.out = out
        self.vision = vision
        self.gates = gates
        self.passive = passive
        self.side = SideThreads("embed-side")
        self.embedded = 0
        self.passive_checks = 0
        self.batch_stats = RollingStats()  # ms per embed call, all of a frame's faces (most frames embed none)
        self.passive_stats = RollingStats()  # ms per face scored by the passive liveness model

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.side.close()

    def process(self, item: Tracked) -> None:
        t0 = time.perf_counter()
        image = item.captured.frame.image
        rejected = list(item.rejected)
        ready: list[tuple[Track, AlignedFace]] = []
        for track in item.claimed:
            assert track.face is not None  # the track stage gives every track its Face
            for aligned in self.vision.align(image, [track.face]):
                reason = gate(aligned.quality, self.gates)
                if reason is not None:
                    rejected.append((track, reason))
                else:
                    ready.append((track, aligned))
        samples = []
        passive: dict[int, float] = {}
        if ready:
            tracks = [track for track, _ in ready]
            # The passive check needs only the box: it runs while the embedder's components do.
            scored = self.side.submit(lambda: self._passive(image, tracks)) if self.passive is not None else None
            t1 = time.perf_counter()
            try:
                embeddings = self.vision.embed([aligned for _, aligned in ready], self.side.run)
            finally:
                passive = scored.result() if scored is not None else {}
            self.batch_stats.add((time.perf_counter() - t1) * 1000.0)
            samples = [(track, e, a.chip) for (track, a), e in zip(ready, embeddings, strict=True)]
            self.embedded += len(samples)
        ms = {**item.stage_ms, "embed": (time.perf_counter() - t0) * 1000.0}
        self.out.put(Embedded(item.captured, item.tracks, item.live_ids, samples, rejected, ms, passive))

    def _passive(self, image: ImageArray, tracks: list[Track]) -> dict[int, float]:
        # Scored with each embedding, not each frame: a few crops per track, like the embedder.
        assert self.passive is not None
        scores: dict[int, float] = {}
        for track in tracks:
            t1 = time.perf_counter()
            score = self.passive.score(image, track.bbox)
            if score is not None:
                self.passive_stats.add((time.perf_counter() - t1) * 1000.0)
                self.passive_checks += 1
                scores[track.track_id] = score
        return scores

    def finish(self) -> None:
        self.out.put(END)
