"""``edgeface eval liveness``: attack and bona fide error rates of each liveness check on a labelled set.

A set is a folder with ``real/`` (bona fide) and ``fake/`` (attacks), any depth below. Each photo is a
still: every face the detector finds is scored by the passive model (the only check a single image
allows). Each video is a *track*: the largest face of every frame, its landmarks for blink and motion,
a passive score every ``decision.embed_interval_s`` of video time (as the daemon scores a track), and
each policy consulted at every scored sighting; the track counts as live if any consultation said
live -- that is when a door would open -- and as rejected otherwise.

Per check (``passive``, ``blink``, ``motion``) and ``combined`` (the configured ``liveness.mode``):
APCER (attacks accepted / attacks judged), BPCER (bona fide rejected / bona fide judged) at the
configured thresholds, and the equal error rate with the score at which it occurs. Scores are
relative to the pass level (1.0 = exactly at the configured threshold), so the EER point reads as a
multiple of it; the passive check's is also given as a probability. Faces too small to judge and
images without a face are counted, not scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from edgeface.config import Settings
from edgeface.data import BBox, Face, ImageArray
from edgeface.errors import EdgefaceError
from edgeface.liveness.blink import BlinkCheck
from edgeface.liveness.fill import detect_fill
from edgeface.liveness.motion import MotionCheck
from edgeface.liveness.passive import PassiveLiveness
from edgeface.liveness.policy import (
    LandmarkLiveness,
    LivenessPolicy,
    PassivePolicy,
    TrackObservation,
    build_policy,
)
from edgeface.sources.uri import IMAGE_SUFFIXES
from edgeface.tools.progress import Progress
from edgeface.vision.imageio import load_image

_LOGGER = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
Label = Literal["real", "fake"]
CHECKS = ("passive", "blink", "motion", "combined")
Locate = Callable[[ImageArray], list[Face]]


class LivenessSetError(EdgefaceError):
    """A liveness evaluation set that cannot be read."""


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    label: Label


def load_liveness_set(root: Path) -> list[Sample]:
    """Every image and video under ``root/real`` and ``root/fake`` (one may be absent: BPCER or APCER only)."""
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise LivenessSetError(f"liveness set {root}: neither a real/ nor a fake/ folder")
    samples: list[Sample] = []
    for label in ("real", "fake"):
        folder = root / label
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                samples.append(Sample(path, label))
    if not samples:
        raise LivenessSetError(f"liveness set {root}: no images or videos under real/ and fake/")
    return samples


@dataclass(slots=True)
class Judged:
    """One face (still) or one track (video): each check's score (None: not measured) and verdict."""

    path: Path
    label: Label
    kind: Literal["still", "track"]
    scores: dict[str, float] = field(default_factory=dict)
    live: dict[str, bool | None] = field(default_factory=dict)


@dataclass(slots=True)
class Counts:
    """What could not be judged, by sample kind."""

    no_face: int = 0
    too_small: int = 0
    too_close: int = 0  # a still's face against its border fill (edgeface.liveness.fill)
    unreadable: int = 0


class LivenessEvaluator:
    """Scores stills and replays tracks with the configured passive model and policies."""

    def __init__(self, settings: Settings, locate: Locate, passive: PassiveLiveness) -> None:
        live = settings.liveness
        self.settings = settings
        self.locate = locate
        self.passive = passive
        self.interval_s = max(settings.decision.embed_interval_s, 1e-3)
        self.policies: dict[str, LivenessPolicy] = {
            "passive": PassivePolicy(passive.threshold, live.window_s, live.passive_samples),
            "blink": LandmarkLiveness("blink", live.window_s, BlinkCheck(live.blink_close_ratio, live.blink_max_s)),
            "motion": LandmarkLiveness("motion", live.window_s, motion=MotionCheck(live.motion_threshold)),
        }
        if live.mode != "off":
            self.policies["combined"] = build_policy(live, passive.threshold)
        self.counts = Counts()
        self.passive_ms: list[float] = []  # per still face: crop, resize and both models

    def still(self, sample: Sample) -> list[Judged]:
        """One Judged per face of a photo, scored by the passive model."""
        try:
            image = load_image(sample.path)
        except EdgefaceError as exc:
            _LOGGER.warning("%s: %s", sample.path, exc)
            self.counts.unreadable += 1
            return []
        faces = self.locate(image)
        if not faces:
            self.counts.no_face += 1
        out = []
        t0 = time.perf_counter()
        fill = detect_fill(image) if faces else None  # photos are stills: their padding is not the scene
        fill_ms = (time.perf_counter() - t0) * 1000.0
        for face in faces:
            t0 = time.perf_counter()
            result = self.passive.check(image, face.detection.bbox, fill=fill)
            self.passive_ms.append((time.perf_counter() - t0) * 1000.0 + fill_ms / len(faces))
            if result.score is None:
                if result.reason == "too_close":
                    self.counts.too_close += 1
                else:
                    self.counts.too_small += 1
                continue
            ratio = result.score / self.passive.threshold
            judged = Judged(sample.path, sample.label, "still", {"passive": ratio}, {"passive": result.live})
            if self.settings.liveness.mode == "passive":  # other modes need a sequence: no still passes them
                judged.scores["combined"], judged.live["combined"] = ratio, result.live
            out.append(judged)
        return out

    def track(self, sample: Sample) -> list[Judged]:
        """The verdict of each policy on the largest face of a video, consulted at every scored sighting."""
        capture = cv2.VideoCapture(str(sample.path))
        if not capture.isOpened():
            self.counts.unreadable += 1
            return []
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        history: list[TrackObservation] = []
        best: dict[str, float] = {}
        verdicts: dict[str, list[bool | None]] = {name: [] for name in self.policies}
        next_score, index, seen = 0.0, 0, False
        try:
            while True:
                ok, raw = capture.read()
                if not ok:
                    break
                frame = np.asarray(raw, dtype=np.uint8)
                t = index / fps
                index += 1
                faces = self.locate(frame)
                if not faces:
                    continue
                seen = True
                face = max(faces, key=lambda f: _area(f.detection.bbox))
                passive = None
                if t >= next_score - 1e-6:
                    passive = self.passive.score(frame, face.detection.bbox)
                    next_score = t + self.interval_s
                history.append(TrackObservation(t, face.landmarks, passive))
                if passive is None:
                    continue
                window = [o for o in history if o.t >= t - self.settings.liveness.window_s - 0.5]
                for name, policy in self.policies.items():
                    result = policy.assess(window)
                    verdicts[name].append(result.live)
                    best[name] = max(best.get(name, 0.0), result.score)
        finally:
            capture.release()
        if not seen:
            self.counts.no_face += 1
            return []
        live = {name: True if True in v else (False if False in v else None) for name, v in verdicts.items()}
        return [Judged(sample.path, sample.label, "track", best, live)]

    def judge(self, sample: Sample) -> list[Judged]:
        """Still or track, by the file's kind."""
        return self.track(sample) if sample.path.suffix.lower() in VIDEO_SUFFIXES else self.still(sample)


def _area(box: BBox) -> float:
    return box.width * box.height


def equal_error(real: Sequence[float], fake: Sequence[float]) -> tuple[float, float]:
    """(EER, score threshold) where attack acceptance and bona fide rejection are closest; live means score >= t."""
    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    candidates = np.unique(np.concatenate((r, f, [np.inf])))
    apcer = np.array([(f >= t).mean() for t in candidates])
    bpcer = np.array([(r < t).mean() for t in candidates])
    i = int(np.argmin(np.abs(apcer - bpcer)))
    return float((apcer[i] + bpcer[i]) / 2.0), float(candidates[i])


def _rate(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(judged: Sequence[Judged], passive_threshold: float) -> dict[str, dict[str, Any]]:
    """Per kind (still, track) and check: counts, APCER/BPCER at the configured thresholds, EER and its score."""
    out: dict[str, dict[str, Any]] = {}
    for kind in ("still", "track"):
        rows: dict[str, Any] = {}
        for check in CHECKS:
            items = [j for j in judged if j.kind == kind and check in j.live]
            if not items:
                continue
            real = [j for j in items if j.label == "real"]
            fake = [j for j in items if j.label == "fake"]
            row: dict[str, Any] = {
                "bona_fide": len(real),
                "attacks": len(fake),
                # An undecided verdict (None) opens no door: a rejection for both kinds.
                "apcer": _rate([j.live[check] is True for j in fake]),
                "bpcer": _rate([j.live[check] is not True for j in real]),
            }
            if real and fake:
                eer, at = equal_error([j.scores[check] for j in real], [j.scores[check] for j in fake])
                row["eer"], row["eer_score"] = eer, at
                if check == "passive":
                    row["eer_probability"] = at * passive_threshold
            rows[check] = row
        if rows:
            out[kind] = rows
    return out


def evaluate(evaluator: LivenessEvaluator, samples: Sequence[Sample], *, show_progress: bool) -> list[Judged]:
    """Judge every sample."""
    progress = Progress("liveness", len(samples), enabled=show_progress)
    judged: list[Judged] = []
    for i, sample in enumerate(samples, 1):
        judged.extend(evaluator.judge(sample))
        progress.update(i)
    progress.close(len(samples))
    return judged


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """A plain-text table: one row per kind and check."""
    lines = [f"{'kind':<6} {'check':<9} {'bona fide':>9} {'attacks':>7} {'APCER':>7} {'BPCER':>7} {'EER':>7} {'at':>7}"]
    for kind, rows in summary.items():
        for check, row in rows.items():
            lines.append(
                f"{kind:<6} {check:<9} {row['bona_fide']:>9} {row['attacks']:>7} {_pct(row['apcer'])} "
                f"{_pct(row['bpcer'])} {_pct(row.get('eer'))} {_num(row.get('eer_score'))}"
            )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{100.0 * value:>6.2f}%"


def _num(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.3f}"


def timing(ms: Sequence[float]) -> dict[str, float] | None:
    """Median and 95th percentile milliseconds of the passive check per still face."""
    if not ms:
        return None
    p50, p95 = np.percentile(np.asarray(ms), [50, 95])
    return {"n": len(ms), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


def report_json(
    root: Path,
    settings: Settings,
    passive: PassiveLiveness,
    judged: Sequence[Judged],
    counts: Counts,
    passive_ms: Sequence[float] = (),
) -> dict[str, Any]:
    """The full report: configuration, per-check rates, what was not judged, timing, and every score."""
    return {
        "passive_ms_per_face": timing(passive_ms),
        "dataset": str(root),
        "mode": settings.liveness.mode,
        "passive_models": list(passive.model_ids),
        "passive_threshold": passive.threshold,
        "summary": summarise(judged, passive.threshold),
        "not_judged": {
            "no_face": counts.no_face,
            "too_small": counts.too_small,
            "too_close": counts.too_close,
            "unreadable": counts.unreadable,
        },
        "items": [
            {"file": str(j.path), "label": j.label, "kind": j.kind, "scores": j.scores, "live": j.live} for j in judged
        ],
    }
