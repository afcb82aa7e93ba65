"""Values that cross stage boundaries. Frozen so a stage can never change what another stage holds.

Coordinates are pixels of the frame the value came from, x to the right and y down. Images are
numpy arrays in OpenCV's BGR channel order unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. ``captured_at`` is ``time.monotonic()`` and drives latency metrics."""

    index: int
    image: ImageArray
    captured_at: float
    wall_time: float
    source: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class BBox:
    """Axis-aligned box in pixels, (x0, y0) inclusive top-left, (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    def iou(self, other: BBox) -> float:
        """Intersection over union, 0 when the boxes do not overlap."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[int]:
        """[x, y, w, h] rounded to whole pixels, the form published over MQTT."""
        return [round(self.x0), round(self.y0), round(self.width), round(self.height)]


@dataclass(frozen=True, slots=True)
class Detection:
    """A face found by the detector.

    ``keypoints`` is (6, 2): the subject's right eye, left eye, nose tip, mouth centre, right ear
    tragion, left ear tragion -- BlazeFace's order.
    """

    bbox: BBox
    score: float
    keypoints: FloatArray


@dataclass(frozen=True, slots=True)
class Landmarks:
    """FaceMesh output: ``points`` is (468, 3), x/y in frame pixels, z relative depth in pixels."""

    points: FloatArray
    presence: float


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face with its landmarks (``None`` when the landmarker rejected the crop)."""

    detection: Detection
    landmarks: Landmarks | None


# What a chip was aligned on: FaceMesh's five points, or (FaceMesh rejected the face) BlazeFace's keypoints.
AlignedBy = Literal["landmarks", "keypoints"]


@dataclass(frozen=True, slots=True)
class Quality:
    """Measurements gating whether a face may be decided or enrolled."""

    face_px: float  # inter-ocular-scaled face size in pixels (min of bbox width/height)
    sharpness: float  # variance of the Laplacian on the aligned chip
    yaw: float  # degrees, 0 = frontal, from landmarks (estimated from the detector's keypoints without them)
    pitch: float  # degrees (NaN without landmarks)
    aligned_by: AlignedBy = "landmarks"


@dataclass(frozen=True, slots=True)
class Embedding:
    """An L2-normalised descriptor of one aligned face chip."""

    vector: FloatArray
    model_id: str
    quality: Quality


@dataclass(frozen=True, slots=True)
class Candidate:
    """One identity from a top-k search: its best sample similarity (cosine, -1..1)."""

    person_id: str
    name: str
    similarity: float


@dataclass(frozen=True, slots=True)
class Match:
    """Top-k result for one embedding, best first; empty when the database is empty."""

    candidates: tuple[Candidate, ...]
    # Best similarity to the top candidate's negative samples (see ``reject``), -1 when it has none.
    negative_similarity: float = -1.0

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def margin(self) -> float:
        """Similarity gap between the best and the second-best person (1.0 when only one)."""
        if not self.candidates:
            return 0.0
        if len(self.candidates) == 1:
            return 1.0
        return self.candidates[0].similarity - self.candidates[1].similarity


Status = Literal["known", "unknown", "uncertain"]
Reason = Literal[
    "matched",
    "below_threshold",
    "uncertain_band",
    "ambiguous_margin",
    "negative_match",
    "too_small",
    "too_blurry",
    "bad_pose",
    "empty_database",
    "liveness_failed",
]


@dataclass(frozen=True, slots=True)
class LivenessResult:
    """Outcome of the liveness policy for one track."""

    live: bool | None  # None: not enough evidence yet
    score: float
    checks: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the daemon concluded about one track; published as a recognition or unknown event."""

    track_id: int
    status: Status
    reason: Reason
    person_id: str | None
    name: str | None
    similarity: float
    threshold: float
    margin: float
    grant: bool
    bbox: BBox
    frame_index: int
    captured_at: float
    wall_time: float
    samples: int
    liveness: LivenessResult | None = None
    unknown_id: str | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)
    # The closest enrolled person when the face was not recognised (unknown/uncertain): the event's
    # ``best_match``. ``person_id`` stays None then -- nobody was decided.
    closest: Candidate | None = None
    emotion: dict[str, float] | None = None  # class -> probability, when attributes are enabled
