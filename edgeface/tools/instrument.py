"""Timing wrappers around the real pipeline components, for ``edgeface bench``.

Each wrapper is a full implementation of the protocol it wraps (it delegates every call and records
how long the call took), so the bench runs the daemon's own ``Pipeline`` unchanged while seeing
each step of the ``Vision`` boundary separately: the pipeline's own statistics time whole stages
(landmarks with tracking, alignment with embedding, matching inside decide) and keep only a
rolling window without the maximum.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from edgeface.data import Detection, Embedding, Face, FloatArray, ImageArray, Landmarks
from edgeface.sources.base import FrameSource
from edgeface.tools import metrics
from edgeface.tools.progress import Progress
from edgeface.vision.analyzer import AlignedFace, Vision
from edgeface.vision.embed import Runner, in_order

# Stages timed by the wrappers, in report order, with what one sample of each is.
STAGES: dict[str, str] = {
    "capture": "frame",  # source read (decode); the capture thread's resize is in the pipeline's own figure
    "detect": "frame",
    "landmarks": "face",  # only the faces the pipeline runs FaceMesh on (see ``pipeline.workers``)
    "align": "face",  # alignment and the quality measures of the chip
    "embed": "batch",
    "match": "query",  # replayed after the run on the run's embeddings (see bench.py)
    "publish": "event",  # payload build + hand-over to the MQTT link
}


class StageTimes:
    """Milliseconds per call for each stage; appends from several threads are safe under the GIL."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {name: [] for name in STAGES}

    def add(self, stage: str, started: float) -> None:
        self.samples[stage].append((time.perf_counter() - started) * 1000.0)

    def summaries(self) -> dict[str, metrics.LatencySummary]:
        return {name: metrics.latency_summary(values) for name, values in self.samples.items()}


class LimitedSource:
    """A FrameSource that ends after ``limit`` frames of ``inner`` and times each read."""

    def __init__(self, inner: FrameSource, limit: int | None, times: StageTimes, progress: Progress) -> None:
        self.inner = inner
        self.limit = limit
        self.times = times
        self.read_count = 0
        self._progress = progress

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def native_fps(self) -> float | None:
        return self.inner.native_fps

    @property
    def is_live(self) -> bool:
        # A bench run is finite even on a camera: it ends after ``limit`` frames.
        return False

    def open(self) -> None:
        self.inner.open()

    def read(self) -> ImageArray | None:
        if self.limit is not None and self.read_count >= self.limit:
            return None
        started = time.perf_counter()
        image = self.inner.read()
        if image is None:
            return None
        self.times.add("capture", started)
        self.read_count += 1
        self._progress.update(self.read_count)
        return image

    def close(self) -> None:
        self.inner.close()


class TimedVision:
    """The ``Vision`` boundary with each step timed, and the embeddings kept so matching can be replayed."""

    def __init__(self, inner: Vision, times: StageTimes) -> None:
        self.inner, self.times = inner, times
        self.vectors: list[FloatArray] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def keypoint_fallback(self) -> bool:
        return self.inner.keypoint_fallback

    def detect(self, image_bgr: ImageArray) -> list[Detection]:
        started = time.perf_counter()
        try:
            return self.inner.detect(image_bgr)
        finally:
            self.times.add("detect", started)

    def landmarks(self, image_bgr: ImageArray, detection: Detection) -> Landmarks | None:
        started = time.perf_counter()
        try:
            return self.inner.landmarks(image_bgr, detection)
        finally:
            self.times.add("landmarks", started)

    def align(self, image_bgr: ImageArray, faces: Sequence[Face]) -> list[AlignedFace]:
        started = time.perf_counter()
        try:
            return self.inner.align(image_bgr, faces)
        finally:
            self.times.add("align", started)

    def embed(self, aligned: Sequence[AlignedFace], run: Runner = in_order) -> list[Embedding]:
        started = time.perf_counter()
        try:
            out = self.inner.embed(aligned, run)
        finally:
            self.times.add("embed", started)
        self.vectors.extend(e.vector for e in out)
        return out
