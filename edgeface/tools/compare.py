"""``edgeface bench --compare face_recognition``: edgeface and the dlib reference on the same frames.

Both run sequentially in this process on identical frames (decoded once each, resized as the
capture thread does), so their speeds are comparable on any machine. Each names every face it finds
against the same gallery -- edgeface by its best cosine similarity at its threshold, the reference
as face_recognition's examples do (closest sample within distance 0.6) -- and faces of the two are
paired by box overlap to count how often they agree on who it is.

This is per-frame naming; the daemon's decisions additionally fuse votes over a track. A face below
the daemon's quality gates (``decision.min_face_px``, ``max_yaw_deg``, ``min_sharpness``) is counted
as ``gated``, not named: the daemon would not decide it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeface.config import DecisionConfig, VisionConfig
from edgeface.data import BBox, FloatArray, ImageArray
from edgeface.errors import SourceError
from edgeface.pipeline.rules import gate
from edgeface.pipeline.tracker import iou_matrix
from edgeface.sources.base import open_source
from edgeface.tools.dataset import person_folders
from edgeface.tools.encoders import EdgefaceEncoder, EncodedFace, FaceEncoder, ReferenceEncoder, score_matrix, subject
from edgeface.tools.progress import Progress
from edgeface.vision.imageio import load_image

UNKNOWN = "unknown"
# A face edgeface detected but could not align (FaceMesh rejected the crop, keypoints too unsure).
UNALIGNED = "unaligned"
# A face the daemon would not decide: below its quality gates (size, pose, sharpness; pipeline.rules.gate).
GATED = "gated"
NOT_NAMED = frozenset({UNKNOWN, UNALIGNED, GATED})
# HOG boxes are square and tighter than BlazeFace's; 0.3 still pairs the same face reliably while
# two neighbouring faces in a crowd stay below it.
PAIR_IOU = 0.3


@dataclass(slots=True)
class Gallery:
    """Labelled sample vectors of one encoder (one row per photo in which it found a face)."""

    names: list[str]
    vectors: FloatArray
    photos: int

    def name(
        self, encoder: FaceEncoder, faces: Sequence[EncodedFace], decision: DecisionConfig | None = None
    ) -> list[str]:
        """Who each face is: the best-scoring sample's person if it reaches the encoder's threshold.

        With ``decision``, a face failing the daemon's quality gates is ``gated``, as the daemon would
        not decide it either (the reference has no gates).
        """
        names = [UNALIGNED if f.vector is None else UNKNOWN for f in faces]
        if decision is not None:
            for i, f in enumerate(faces):
                if f.quality is not None and gate(f.quality, decision) is not None:
                    names[i] = GATED
        described = [i for i, f in enumerate(faces) if f.vector is not None and names[i] != GATED]
        if not described or not self.names:
            return names
        queries = np.stack([v for i in described if (v := faces[i].vector) is not None])
        scores = score_matrix(encoder.metric, queries, self.vectors)
        best = scores.argmax(axis=1)
        hit = scores[np.arange(len(described)), best] >= encoder.default_threshold
        for i, b, h in zip(described, best, hit, strict=True):
            if h:
                names[i] = self.names[b]
        return names


def build_gallery(encoder: FaceEncoder, folder: Path | None) -> Gallery:
    """Encode the subject of every photo of a folder-per-person set (empty without a folder)."""
    names: list[str] = []
    vectors: list[FloatArray] = []
    photos = 0
    for name, paths in (person_folders(folder) if folder is not None else {}).items():
        for path in paths:
            photos += 1
            face = subject(encoder.encode(load_image(path)))
            # As enrollment: a face FaceMesh rejected is no reference sample.
            if face is not None and face.vector is not None and face.aligned_by != "keypoints":
                names.append(name)
                vectors.append(face.vector)
    stacked = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, 1), np.float32)
    return Gallery(names, stacked, photos)


def resize_to(image: ImageArray, width: int | None) -> ImageArray:
    """The capture thread's downscale (INTER_AREA, only when wider), so both runs see the same pixels."""
    if width is None or image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


@dataclass(slots=True)
class _Side:
    encoder: FaceEncoder
    gallery: Gallery
    decision: DecisionConfig | None = None
    seconds: float = 0.0
    faces: int = 0
    frames_with_face: int = 0
    named: Counter[str] = field(default_factory=Counter)
    keypoint_aligned: int = 0  # faces aligned on the detector's keypoints (FaceMesh rejected them)
    keypoint_named: int = 0  # ... and named as a person

    def run(self, image: ImageArray) -> tuple[list[BBox], list[str]]:
        started = time.perf_counter()
        faces = self.encoder.encode(image)
        names = self.gallery.name(self.encoder, faces, self.decision)
        self.seconds += time.perf_counter() - started
        self.faces += len(faces)
        self.frames_with_face += bool(faces)
        self.named.update(names)
        fallback = [n for f, n in zip(faces, names, strict=True) if f.aligned_by == "keypoints"]
        self.keypoint_aligned += len(fallback)
        self.keypoint_named += sum(n not in NOT_NAMED for n in fallback)
        return [f.bbox for f in faces], names

    def summary(self, frames: int) -> dict[str, Any]:
        return {
            "model_id": self.encoder.model_id,
            "fps": frames / self.seconds if self.seconds > 0 else 0.0,
            "ms_per_frame": 1000.0 * self.seconds / max(1, frames),
            "faces": self.faces,
            "frames_with_face": self.frames_with_face,
            "named": dict(self.named.most_common()),
            "named_faces": sum(v for k, v in self.named.items() if k not in NOT_NAMED),
            "keypoint_aligned": self.keypoint_aligned,
            "keypoint_named": self.keypoint_named,
            "gallery_samples": len(self.gallery.names),
            "gallery_photos": self.gallery.photos,
        }


def _boxes(boxes: Sequence[BBox]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=np.float64).reshape(-1, 4)


def _pair(a: Sequence[BBox], b: Sequence[BBox]) -> list[tuple[int, int]]:
    """Greedy one-to-one pairing by descending IoU above ``PAIR_IOU``."""
    if not a or not b:
        return []
    iou = iou_matrix(_boxes(a), _boxes(b))
    pairs: list[tuple[int, int]] = []
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < PAIR_IOU:
            break
        if all(i != p and j != q for p, q in pairs):
            pairs.append((i, j))
    return pairs


def compare(
    vision: VisionConfig,
    decision: DecisionConfig,
    uri: str,
    *,
    frames: int | None,
    width: int | None,
    gallery: Path | None,
    loop: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Both pipelines over the first ``frames`` frames of ``uri`` (replayed from its start when
    ``loop``, as the bench's capture did): speeds, faces and agreement."""
    edge_encoder, ref_encoder = EdgefaceEncoder(vision, vision.embedder), ReferenceEncoder()
    edge = _Side(edge_encoder, build_gallery(edge_encoder, gallery), decision)
    ref = _Side(ref_encoder, build_gallery(ref_encoder, gallery))
    source = open_source(uri, hold_s=None)
    source.open()
    progress = Progress("compare face_recognition", frames, enabled=show_progress)
    count, paired, agreed, unnamed_both = 0, 0, 0, 0
    disagreements: Counter[str] = Counter()
    try:
        while frames is None or count < frames:
            try:
                raw = source.read()
                if raw is None and loop and count > 0:
                    source.close()
                    source.open()
                    raw = source.read()
            except SourceError:
                break
            if raw is None:
                break
            image = resize_to(raw, width)
            edge_boxes, edge_names = edge.run(image)
            ref_boxes, ref_names = ref.run(image)
            for i, j in _pair(edge_boxes, ref_boxes):
                paired += 1
                if edge_names[i] == ref_names[j]:
                    agreed += 1
                elif edge_names[i] in NOT_NAMED and ref_names[j] in NOT_NAMED:
                    unnamed_both += 1  # e.g. "unaligned vs unknown": neither names anybody
                    disagreements[f"{edge_names[i]} vs {ref_names[j]}"] += 1
                else:
                    disagreements[f"{edge_names[i]} vs {ref_names[j]}"] += 1
            count += 1
            progress.update(count)
    finally:
        source.close()
        progress.close(count)
    e, r = edge.summary(count), ref.summary(count)
    return {
        "frames": count,
        "edgeface": e,
        "reference": r,
        "speedup_sequential": e["fps"] / r["fps"] if r["fps"] > 0 else None,
        "paired_faces": paired,
        "only_edgeface": e["faces"] - paired,
        "only_reference": r["faces"] - paired,
        "agreement": agreed / paired if paired else None,
        # Same outcome: the same person, or nobody named by either (unknown, gated and unaligned alike).
        "agreement_outcome": (agreed + unnamed_both) / paired if paired else None,
        "disagreements": dict(disagreements.most_common()),
    }
