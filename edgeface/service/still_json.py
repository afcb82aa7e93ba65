"""The JSON pieces of still-image replies: per-stage timing, quality, candidates and landmarks.

Conventions as in ``edgeface.mqtt.events``: similarities rounded to 4 decimals, ``distance`` is
``1 - similarity``, durations in milliseconds rounded to 0.1, ``bbox`` is ``[x, y, w, h]``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from edgeface.data import Candidate, Face, Quality
from edgeface.vision.landmarks import five_points


class Clock:
    """Milliseconds per named stage of one request."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000.0

    def report(self) -> dict[str, float]:
        total = (time.perf_counter() - self.started) * 1000.0
        return {**{k: round(v, 1) for k, v in self.ms.items()}, "total": round(total, 1)}


def quality_json(quality: Quality) -> dict[str, Any]:
    def num(v: float) -> float | None:
        return round(v, 1) if np.isfinite(v) else None

    return {
        "face_px": num(quality.face_px),
        "sharpness": num(quality.sharpness),
        "yaw": num(quality.yaw),
        "pitch": num(quality.pitch),
        # "keypoints": FaceMesh rejected the face and it was aligned on the detector's keypoints (pitch unknown).
        "aligned_by": quality.aligned_by,
    }


def candidate_json(c: Candidate, threshold: float) -> dict[str, Any]:
    # Confidence: how far the similarity sits between "anyone" (0) and a sure match (the threshold) --
    # 0.5 at the threshold would mislead a client that treats > 0.5 as yes, so the threshold maps to 1.
    confidence = min(1.0, max(0.0, c.similarity / threshold)) if threshold > 0 else float(c.similarity >= threshold)
    return {
        "person_id": c.person_id,
        "name": c.name,
        "similarity": round(c.similarity, 4),
        "distance": round(1.0 - c.similarity, 4),
        "confidence": round(confidence, 4),
    }


def keypoints(face: Face) -> dict[str, list[float]] | None:
    """Five named landmarks (FaceMesh's alignment points), or None when FaceMesh rejected the face."""
    if face.landmarks is None:
        return None
    points = five_points(face.landmarks)
    names = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose")
    return {name: [round(float(x), 1), round(float(y), 1)] for name, (x, y) in zip(names, points, strict=True)}
