"""``edgeface eval``: verification and identification accuracy of each encoder on a labelled set.

Every image is encoded once per model and its subject kept (``vision.subject``: the face ``verify``
takes). A pair with a face missing on either side is scored ``-inf`` (see ``metrics``):
detection failures count against the model, and every model is judged on the same pairs. A
folder-per-person set is verified on all its image pairs and also identified: the first photo of
each person is the gallery (persons with one photo are distractors), the others are probes.

A pairs set with a ``fold`` column is also scored by the k-fold protocol (``metrics.kfold_accuracy``),
and every ``--target-far`` gets its threshold (``metrics.threshold_at_far``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeface.data import FloatArray
from edgeface.errors import EdgefaceError
from edgeface.tools import metrics
from edgeface.tools.calibrate import Calibration, calibrate, format_calibration
from edgeface.tools.dataset import PairSet, PersonSet
from edgeface.tools.embcache import CachedImage, EmbeddingCache
from edgeface.tools.encoders import FaceEncoder, score_matrix, subject
from edgeface.tools.progress import Progress

TARGET_FARS = (1e-2, 1e-3, 1e-4)
# Pairs listed per side in the report's "hardest" block: what to look at when calibrating.
HARDEST = 5
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    file: str
    faces: int  # detected
    described: int = 0  # detected and embedded (aligned on landmarks)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    threshold: float
    value: float
    far: float
    tar: float

    @classmethod
    def of(cls, point: metrics.OperatingPoint) -> Point:
        return cls(point.threshold, point.value, point.far, point.tar)


@dataclass(slots=True)
class ModelReport:
    """Everything measured for one model; ``as_dict`` is its JSON form."""

    model_id: str
    metric: str
    images: int
    with_face: int
    without_face: int
    multiple_faces: int
    ms_per_image: float
    pairs: int
    genuine: int
    impostor: int
    unscored_pairs: int
    threshold: float
    at_threshold: Point
    best: Point
    tar_at_far: dict[str, Point]
    eer: Point
    best_interval: tuple[float, float] = (0.0, 0.0)  # (low, high]: thresholds deciding as ``best``
    target_far: list[metrics.FarThreshold] = field(default_factory=list)
    kfold: metrics.KFold | None = None
    calibration: Calibration | None = None
    cached_images: int = 0
    hardest: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)
    rank1: float | None = None
    rank1_correct: int = 0
    probes: int = 0
    gallery: int = 0
    per_image: list[ImageOutcome] = field(default_factory=list)
    roc_far: list[float] = field(default_factory=list)
    roc_tar: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_safe(asdict(self))
        return out


def _json_safe(value: Any) -> Any:
    """JSON has no infinity: the "accept nothing" threshold and unscored pairs become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# A cache is written back this often (images), so that an interrupted long run keeps its work.
CACHE_SAVE_EVERY = 500


def _encode_one(encoder: FaceEncoder, path: Path) -> CachedImage:
    from edgeface.vision.imageio import load_image

    try:
        image = load_image(path)
    except EdgefaceError as exc:
        return CachedImage(None, 0, 0, 0.0, str(exc))
    start = time.perf_counter()
    faces = encoder.encode(image)
    spent = time.perf_counter() - start
    best = subject(faces)
    return CachedImage(
        None if best is None else best.vector, len(faces), sum(f.vector is not None for f in faces), spent, None
    )


def _encode_all(
    encoder: FaceEncoder, images: Sequence[Path], root: Path, progress: Progress, cache: EmbeddingCache | None
) -> tuple[list[FloatArray | None], list[ImageOutcome], float, int]:
    """Vectors and outcomes of every image, the seconds spent encoding, and how many came from the cache."""
    vectors: list[FloatArray | None] = []
    outcomes: list[ImageOutcome] = []
    spent, cached = 0.0, 0
    for i, path in enumerate(images):
        name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        entry = cache.get(path) if cache is not None else None
        if entry is None:
            entry = _encode_one(encoder, path)
            if cache is not None:
                cache.put(path, entry)
                if (i + 1) % CACHE_SAVE_EVERY == 0:
                    cache.save()
        else:
            cached += 1
        spent += entry.seconds
        vectors.append(entry.vector)
        outcomes.append(ImageOutcome(name, entry.faces, entry.described, entry.error))
        progress.update(i + 1, name)
    progress.close(len(images))
    if cache is not None:
        cache.save()
    return vectors, outcomes, spent, cached


def _scores(encoder: FaceEncoder, vectors: Sequence[FloatArray | None]) -> metrics.F64:
    """(N, N) scores of image i against image j; rows/columns of images without a face are -inf."""
    present = np.array([v is not None for v in vectors])
    full = np.full((len(vectors), len(vectors)), -np.inf)
    if present.any():
        stacked = np.stack([v for v in vectors if v is not None]).astype(np.float32)
        idx = np.flatnonzero(present)
        full[np.ix_(idx, idx)] = score_matrix(encoder.metric, stacked, stacked)
    return full


def _pairs_of(dataset: PairSet | PersonSet, images: list[Path]) -> tuple[IntArray, IntArray, metrics.BoolArray]:
    """Index arrays (a, b) into ``images`` and the same-person labels of every pair to verify."""
    if isinstance(dataset, PairSet):
        where = {p: i for i, p in enumerate(images)}
        a = np.array([where[p.a] for p in dataset.pairs])
        b = np.array([where[p.b] for p in dataset.pairs])
        return a, b, np.array([p.same for p in dataset.pairs])
    labels = np.array(dataset.labels(), dtype=object)
    a, b = np.triu_indices(len(images), k=1)
    return a, b, labels[a] == labels[b]


def evaluate(
    encoder: FaceEncoder,
    dataset: PairSet | PersonSet,
    *,
    show_progress: bool = True,
    cache_dir: Path | None = None,
    target_fars: Sequence[float] = (),
    calibration: bool = False,
) -> ModelReport:
    """Encode the set's images with ``encoder`` (reusing ``cache_dir``'s vectors) and compute every metric."""
    images = dataset.images
    root = dataset.source.parent if isinstance(dataset, PairSet) else dataset.source
    progress = Progress(f"eval {encoder.model_id}", len(images), enabled=show_progress)
    cache = EmbeddingCache(cache_dir, encoder.model_id, encoder.fingerprint) if cache_dir is not None else None
    vectors, outcomes, spent, cached = _encode_all(encoder, images, root, progress, cache)
    full = _scores(encoder, vectors)
    a, b, same = _pairs_of(dataset, images)
    scores = full[a, b]
    curve = metrics.roc(scores, same)
    far, tar = metrics.rates_at(scores, same, encoder.default_threshold)
    accuracy = metrics.accuracy_at(scores, same, encoder.default_threshold)
    report = ModelReport(
        model_id=encoder.model_id,
        metric=encoder.metric,
        images=len(images),
        with_face=sum(o.described > 0 for o in outcomes),
        without_face=sum(o.described == 0 for o in outcomes),
        multiple_faces=sum(o.faces > 1 for o in outcomes),
        ms_per_image=1000.0 * spent / max(1, len(images)),
        pairs=int(scores.size),
        genuine=curve.genuine,
        impostor=curve.impostor,
        unscored_pairs=int(np.sum(~np.isfinite(scores))),
        threshold=encoder.default_threshold,
        at_threshold=Point(encoder.default_threshold, accuracy, far, tar),
        best=Point.of(metrics.best_accuracy(curve)),
        tar_at_far={f"{t:g}": Point.of(metrics.tar_at_far(curve, t)) for t in TARGET_FARS},
        eer=Point.of(metrics.equal_error_rate(curve)),
        best_interval=metrics.best_accuracy_interval(curve),
        hardest=_hardest(scores, same, [outcomes[i].file for i in a], [outcomes[i].file for i in b]),
        per_image=outcomes,
        roc_far=curve.far.tolist(),
        roc_tar=curve.tar.tolist(),
        target_far=[metrics.threshold_at_far(curve, t) for t in target_fars],
        cached_images=cached,
    )
    folds = dataset.folds if isinstance(dataset, PairSet) else None
    if folds is not None:
        report.kfold = metrics.kfold_accuracy(scores, same, folds)
    if calibration:
        labels = dataset.labels() if isinstance(dataset, PersonSet) else [p.parent.name for p in images]
        report.calibration = calibrate(full, labels, current=encoder.default_threshold)
    if isinstance(dataset, PersonSet):
        _identify(report, dataset, full)
    return report


def _hardest(
    scores: metrics.F64, same: metrics.BoolArray, names_a: list[str], names_b: list[str]
) -> dict[str, list[tuple[str, str, float]]]:
    """The highest-scoring impostor pairs and the lowest-scoring genuine pairs."""

    def listed(indices: npt.NDArray[np.intp]) -> list[tuple[str, str, float]]:
        return [(names_a[i], names_b[i], float(scores[i])) for i in indices]

    impostors, genuine = np.flatnonzero(~same), np.flatnonzero(same)
    return {
        "impostor": listed(impostors[np.argsort(-scores[impostors], kind="stable")[:HARDEST]]),
        "genuine": listed(genuine[np.argsort(scores[genuine], kind="stable")[:HARDEST]]),
    }


def _identify(report: ModelReport, dataset: PersonSet, full: metrics.F64) -> None:
    labels = dataset.labels()
    first: dict[str, int] = {}
    for i, name in enumerate(labels):
        first.setdefault(name, i)
    gallery = sorted(first.values())
    probes = [i for i in range(len(labels)) if i not in first.values()]
    if not probes:
        return
    matrix = full[np.ix_(probes, gallery)]
    rate, correct = metrics.rank1_accuracy(matrix, [labels[i] for i in probes], [labels[i] for i in gallery])
    report.rank1, report.rank1_correct, report.probes, report.gallery = rate, correct, len(probes), len(gallery)


def format_table(reports: Sequence[ModelReport]) -> str:
    """The human summary: one row per model."""
    header = (
        f"{'model':<24} {'faces':>7} {'ms/img':>7} {'pairs':>9} {'thr':>7} {'acc@thr':>7} "
        f"{'best thr':>8} {'best acc':>8} {'TAR@1e-2':>8} {'TAR@1e-3':>8} {'TAR@1e-4':>8} {'EER':>6} {'rank-1':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in reports:
        rank1 = f"{r.rank1:6.3f}" if r.rank1 is not None else f"{'-':>6}"
        lines.append(
            f"{r.model_id:<24} {r.with_face:>3}/{r.images:<3} {r.ms_per_image:7.1f} {r.genuine:>4}+{r.impostor:<4} "
            f"{r.threshold:7.3f} {r.at_threshold.value:7.3f} {r.best.threshold:8.3f} {r.best.value:8.3f} "
            f"{r.tar_at_far['0.01'].value:8.3f} {r.tar_at_far['0.001'].value:8.3f} "
            f"{r.tar_at_far['0.0001'].value:8.3f} {r.eer.value:6.3f} {rank1}"
        )
    notes = [
        "faces = images with a usable (embedded) face / images",
        "thresholds: cosine similarity for edgeface models, minus the Euclidean distance for dlib_reference",
    ]
    impostors = min(r.impostor for r in reports)
    strict = [f"{t:g}" for t in TARGET_FARS if impostors * t < 1]
    if strict:
        notes.append(f"only {impostors} impostor pairs: TAR@{' and @'.join(strict)} allow no false accept at all")
    notes += [
        f"{r.model_id}: best accuracy for any threshold in ({r.best_interval[0]:.4f}, {r.best_interval[1]:.4f}]"
        for r in reports
    ]
    notes += [line for r in reports for line in _protocol_lines(r)]
    notes += [
        f"{r.model_id}: {r.cached_images} of {r.images} images from the cache" for r in reports if r.cached_images
    ]
    missed = [
        f"{o.file} ({r.model_id}{', detected but not aligned' if o.faces else ''})"
        for r in reports
        for o in r.per_image
        if o.described == 0
    ]
    if missed:
        notes.append("no usable face in: " + ", ".join(missed))
    return "\n".join(lines + [""] + [f"note: {n}" for n in notes])


def _protocol_lines(r: ModelReport) -> list[str]:
    """The k-fold figure and each target FAR's threshold, as report notes."""
    lines = format_calibration(r.model_id, r.calibration) if r.calibration is not None else []
    if r.kfold is not None:
        per_fold = " ".join(f"{f.accuracy:.4f}" for f in r.kfold.folds)
        lines.append(
            f"{r.model_id}: {len(r.kfold.folds)}-fold accuracy {r.kfold.mean:.4f} +- {r.kfold.std:.4f} "
            f"(each fold at the best threshold of the others; folds: {per_fold})"
        )
    for t in r.target_far:
        zero = f"; below 1/{t.impostor} impostor pairs: means no false accept" if t.zero_fa_only else ""
        lines.append(
            f"{r.model_id}: target FAR {t.target:g} -> threshold {t.threshold:.4f} (any in ({t.low:.4f}, "
            f"{t.threshold:.4f}] decides alike): FAR {t.far:.5f} ({t.false_accepts}/{t.impostor}), "
            f"TAR {t.tar:.4f}{zero}"
        )
    return lines


def report_json(reports: Sequence[ModelReport], dataset: PairSet | PersonSet) -> dict[str, Any]:
    """The full report, including per-image face counts and every ROC point, JSON-ready."""
    kind = "pairs" if isinstance(dataset, PairSet) else "persons"
    sources = [str(s) for s in dataset.sources] if isinstance(dataset, PairSet) else [str(dataset.source)]
    return {"dataset": str(dataset.source), "sources": sources, "kind": kind, "models": [r.as_dict() for r in reports]}


def plot_roc(reports: Sequence[ModelReport], out: Path, title: str) -> bool:
    """Draw each model's ROC (log FAR) into ``out``; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in reports:
        far = np.maximum(np.asarray(r.roc_far), 1e-4)  # FAR 0 drawn at the left edge of the log axis
        ax.step(far, r.roc_tar, where="post", label=f"{r.model_id} (EER {r.eer.value:.3f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True
