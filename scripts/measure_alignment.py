"""Measure edgeface's face chips against the reference's (dlib's 5 points and get_face_chip) on a pairs set.

Usage (LFW View 1; the `reference` extra must be installed, as scripts/test.sh does):

    .venv/bin/python scripts/measure_alignment.py ../shared/data/lfw/view1_train.csv \
        ../shared/data/lfw/view1_test.csv --points /tmp/points.npz

Step 1 (cached in --points) runs, on every image, edgeface's detector and FaceMesh and the reference's
HOG detector and 5-point predictor, and keeps the largest face of each. Step 2 prints:

* per dlib point, the FaceMesh point nearest to it (mean error as a fraction of the inter-ocular distance),
* the chip-grid displacement of edgeface's chip from dlib's, by head yaw,
* where BlazeFace's six keypoints land in dlib's chip (mean and spread): the fallback template,
* where they land in the ArcFace chip aligned on FaceMesh's ArcFace points: the arcface5 fallback template,
* a linear fit of FaceMesh yaw on the keypoints' ear asymmetry (the fallback's yaw estimate),
* verification on the pairs (int8 embedder) with chips aligned by each variant: FaceMesh points on the
  manifest template, dlib's own points, FaceMesh points on a refitted template, BlazeFace keypoints.

Everything derived here (template, keypoint positions, yaw slope) is fitted on the images of the first
pairs file only; the verification figures are printed for the first file, the others, and all.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from edgeface.config import VisionConfig
from edgeface.data import Landmarks
from edgeface.tools import metrics
from edgeface.tools.dataset import load_pairs, merge_pairs
from edgeface.tools.reference import ReferencePipeline
from edgeface.vision.align import Aligner, similarity
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.imageio import load_image
from edgeface.vision.keypoints import ARCFACE_REFERENCE_TEMPLATE
from edgeface.vision.landmarks import ARCFACE_POINT_INDICES, FIVE_POINT_INDICES
from edgeface.vision.quality import head_pose

EMBEDDER = "dlib_resnet_v1_int8"
YAW_BINS = (0.0, 10.0, 20.0, 30.0, 90.0)
# A face whose chip grid is this far (px of 150) from dlib's is another face: the two detectors picked
# different "largest faces" in a group photo. Such faces are left out of every fit.
SAME_FACE_RMS = 10.0
KEYPOINT_NAMES = ("right eye", "left eye", "nose tip", "mouth", "right ear", "left ear")


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def collect(images: list[Path], out: Path) -> None:
    """Points of the largest face of each image by both pipelines, saved as npz."""
    analyzer = FaceAnalyzer.from_config(VisionConfig(embedder=EMBEDDER))
    ref = ReferencePipeline()
    n = len(images)
    mesh = np.full((n, 468, 3), np.nan, np.float32)
    keypoints = np.full((n, 6, 2), np.nan, np.float32)
    boxes = np.full((n, 4), np.nan, np.float32)
    dlib5 = np.full((n, 5, 2), np.nan, np.float32)
    for i, path in enumerate(images):
        image = load_image(path)
        faces = analyzer.locate(image)
        if faces:
            face = max(faces, key=lambda f: f.detection.bbox.width * f.detection.bbox.height)
            keypoints[i] = face.detection.keypoints
            b = face.detection.bbox
            boxes[i] = (b.x0, b.y0, b.x1, b.y1)
            if face.landmarks is not None:
                mesh[i] = face.landmarks.points
        rgb = ref.to_rgb(image)
        found = ref.locate(rgb)
        if found:
            box = max(found, key=lambda b: b.width * b.height)
            (shape,) = ref.shapes(rgb, [box])
            dlib5[i] = [(shape.part(k).x, shape.part(k).y) for k in range(5)]
        if (i + 1) % 250 == 0:
            print(f"collected {i + 1}/{n}", file=sys.stderr)
    np.savez(out, files=np.array([str(p) for p in images]), mesh=mesh, keypoints=keypoints, boxes=boxes, dlib5=dlib5)


def arcface_keypoints(mesh: np.ndarray, kps: np.ndarray, sel: np.ndarray) -> None:
    """Print where the keypoints land in the ArcFace chip (FaceMesh's ArcFace points on its template).

    Median and robust spread (interquartile range / 1.349, px of 112) over the faces ``sel``.
    """
    landed = []
    for i in sel:
        points = np.array([mesh[i, list(group), :2].mean(axis=0) for group in ARCFACE_POINT_INDICES])
        landed.append(_apply(similarity(points, ARCFACE_REFERENCE_TEMPLATE), kps[i]))
    chip = np.stack(landed)
    median = np.median(chip, axis=0)
    q1, q3 = np.percentile(chip, [25, 75], axis=0)
    spread = (q3 - q1) / 1.349
    print(f"keypoints in the ArcFace chip ({len(sel)} faces):")
    for k, name in enumerate(KEYPOINT_NAMES):
        print(
            f"  keypoint {name}: median ({median[k, 0]:.2f}, {median[k, 1]:.2f}), spread ({spread[k, 0]:.2f}, "
            f"{spread[k, 1]:.2f}) px"
        )


def grid_rms(a: np.ndarray, b: np.ndarray, size: int) -> float:
    """RMS distance (chip px) between where two chip->image similarities send the chip grid, in b's chip."""
    ys, xs = np.mgrid[0:size:10, 0:size:10]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    moved = _apply(_invert(b), _apply(a, grid))
    return float(np.sqrt(((moved - grid) ** 2).sum(axis=1).mean()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, nargs="+", help="pairs csv files; the first one is the fitting set")
    parser.add_argument("--points", type=Path, required=True, help="npz cache of step 1")
    args = parser.parse_args()
    sets = [load_pairs(p) for p in args.pairs]
    dataset = merge_pairs(sets)
    images = dataset.images
    if not args.points.is_file():
        collect(images, args.points)
    data = np.load(args.points)
    assert [str(p) for p in images] == data["files"].tolist(), "points file is for another image list"
    mesh, kps, dlib5 = data["mesh"].astype(np.float64), data["keypoints"].astype(np.float64), data["dlib5"]
    index = {p: i for i, p in enumerate(images)}
    fit_images = {index[p] for p in sets[0].images}
    fit = np.array([i in fit_images for i in range(len(images))])

    analyzer = FaceAnalyzer.from_config(VisionConfig(embedder=EMBEDDER))
    template = analyzer.aligner.template
    size = analyzer.aligner.size
    has_mesh = ~np.isnan(mesh[:, 0, 0])
    has_dlib = ~np.isnan(dlib5[:, 0, 0])
    has_kp = ~np.isnan(kps[:, 0, 0])
    both = has_mesh & has_dlib
    print(
        f"images {len(images)}: FaceMesh {has_mesh.sum()}, dlib 5-point {has_dlib.sum()}, both {both.sum()}, "
        f"detected {has_kp.sum()}, detected but FaceMesh rejected {(has_kp & ~has_mesh).sum()}"
    )

    # 1. Which FaceMesh point is nearest to each dlib point (fitting images, error / inter-ocular distance).
    sel = np.flatnonzero(both & fit)
    iod = np.linalg.norm(dlib5[sel, 0:2].mean(1) - dlib5[sel, 2:4].mean(1), axis=1)
    best_indices = []
    for k in range(5):
        err = np.linalg.norm(mesh[sel, :, :2] - dlib5[sel, k][:, None, :], axis=2) / iod[:, None]
        mean = err.mean(axis=0)
        order = np.argsort(mean)[:3]
        current = FIVE_POINT_INDICES[k]
        best_indices.append(int(order[0]))
        print(
            f"dlib point {k}: current {current} {mean[current]:.3f}; nearest "
            + ", ".join(f"{j} {mean[j]:.3f}" for j in order)
        )

    # 2. Chip-grid displacement of our chip from dlib's, by |yaw|.
    dlib_fwd = {i: similarity(template, dlib5[i]) for i in np.flatnonzero(has_dlib)}
    ours_fwd = {i: similarity(template, mesh[i, list(FIVE_POINT_INDICES), :2]) for i in np.flatnonzero(has_mesh)}
    yaw = np.full(len(images), np.nan)
    for i in np.flatnonzero(has_mesh):
        yaw[i] = head_pose(Landmarks(points=mesh[i].astype(np.float32), presence=1.0))[0]
    rms = np.array([grid_rms(ours_fwd[i], dlib_fwd[i], size) if both[i] else np.nan for i in range(len(images))])
    same_face = both & (rms < SAME_FACE_RMS)
    print(f"same face found by both: {same_face.sum()} (left out: {(both & ~same_face).sum()} different faces)")
    print("chip grid RMS displacement, ours vs dlib (px of 150), by |yaw| (same face only):")
    for lo, hi in itertools.pairwise(YAW_BINS):
        m = same_face & (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)
        if m.any():
            print(
                f"  |yaw| {lo:.0f}-{hi:.0f}: {m.sum()} faces, mean {np.nanmean(rms[m]):.2f}, "
                f"median {np.nanmedian(rms[m]):.2f}, p95 {np.nanpercentile(rms[m], 95):.2f}"
            )

    # 3. Refitted template: where our five points land in dlib's chip, median over the fitting faces.
    sel = np.flatnonzero(same_face & fit)
    landed = np.stack([_apply(_invert(dlib_fwd[i]), mesh[i, list(FIVE_POINT_INDICES), :2]) for i in sel])
    refit = np.median(landed, axis=0)
    print("refitted template (FaceMesh points in dlib's chip, median):", np.round(refit, 2).tolist())
    print("  spread (std, px):", np.round(landed.std(axis=0), 2).tolist())

    # 4. BlazeFace keypoints in dlib's chip: the fallback template.
    kp_chip = np.stack([_apply(_invert(dlib_fwd[i]), kps[i]) for i in sel])
    kp_mean = np.median(kp_chip, axis=0)
    kp_std = kp_chip.std(axis=0)
    for k, name in enumerate(KEYPOINT_NAMES):
        print(
            f"keypoint {name}: median ({kp_mean[k, 0]:.2f}, {kp_mean[k, 1]:.2f}), std ({kp_std[k, 0]:.2f}, "
            f"{kp_std[k, 1]:.2f}) px"
        )

    # 4b. The same in the ArcFace chip (the arcface5 point set's fallback template).
    arcface_keypoints(mesh, kps, np.flatnonzero(has_mesh & has_kp & fit))

    # 5. Yaw from the keypoints: ear asymmetry of the nose tip.
    sel_y = np.flatnonzero(has_kp & has_mesh & fit & ~np.isnan(yaw))
    d_r = np.linalg.norm(kps[sel_y, 2] - kps[sel_y, 4], axis=1)
    d_l = np.linalg.norm(kps[sel_y, 2] - kps[sel_y, 5], axis=1)
    ratio = (d_r - d_l) / (d_r + d_l)
    slope = float((ratio * yaw[sel_y]).sum() / (ratio * ratio).sum())
    resid = yaw[sel_y] - slope * ratio
    print(
        f"yaw ~ {slope:.1f} * (|nose-ear_r| - |nose-ear_l|) / (sum): residual std {resid.std():.1f} deg, "
        f"corr {np.corrcoef(ratio, yaw[sel_y])[0, 1]:.3f}, FaceMesh yaw std {yaw[sel_y].std():.1f}"
    )

    # 6. Verification with each alignment variant.
    fm_best = list(best_indices)
    variants: dict[str, dict[int, np.ndarray]] = {
        "FaceMesh, manifest template (runtime)": {
            i: similarity(template, mesh[i, list(FIVE_POINT_INDICES), :2]) for i in np.flatnonzero(has_mesh)
        },
        "dlib's own 5 points": dlib_fwd,
        f"FaceMesh nearest points {fm_best}": {
            i: similarity(template, mesh[i, fm_best, :2]) for i in np.flatnonzero(has_mesh)
        },
        "FaceMesh, refitted template": {
            i: similarity(refit, mesh[i, list(FIVE_POINT_INDICES), :2]) for i in np.flatnonzero(has_mesh)
        },
        "BlazeFace eyes+nose+mouth (fallback)": {
            i: similarity(kp_mean[:4], kps[i, :4]) for i in np.flatnonzero(has_kp)
        },
        "BlazeFace eyes+mouth": {i: similarity(kp_mean[[0, 1, 3]], kps[i, [0, 1, 3]]) for i in np.flatnonzero(has_kp)},
        "BlazeFace all six keypoints": {i: similarity(kp_mean, kps[i]) for i in np.flatnonzero(has_kp)},
    }
    aligner = Aligner(template, size)
    first = set(sets[0].pairs)
    pair_idx = [(index[p.a], index[p.b], p.same, p in first) for p in dataset.pairs]
    vectors: dict[str, dict[int, np.ndarray]] = {name: {} for name in variants}
    for i, path in enumerate(images):
        image = load_image(path)
        for name, forwards in variants.items():
            if i in forwards:
                # Aligner.align takes points: the template mapped through this variant's transform.
                chip = aligner.align(image, _apply(forwards[i], template))
                vectors[name][i] = analyzer.embedder.embed([chip])[0]
        if (i + 1) % 500 == 0:
            print(f"embedded {i + 1}/{len(images)}", file=sys.stderr)
    # Pairs every variant could score (dlib's HOG misses some photos): the like-for-like comparison.
    common = {(a, b) for a, b, _, _ in pair_idx if all(a in v and b in v for v in vectors.values())}
    print(f"pairs scored by every variant: {len(common)} of {len(pair_idx)}")
    for name in variants:
        vec = vectors[name]
        for label, keep in (("fit set", True), ("others", False), ("all", None), ("common", None)):
            rows = [
                (a, b, s)
                for a, b, s, f in pair_idx
                if (keep is None or f == keep) and (label != "common" or (a, b) in common)
            ]
            if not rows:
                continue
            scores = np.array([float(vec[a] @ vec[b]) if a in vec and b in vec else -np.inf for a, b, _ in rows])
            same = np.array([s for _, _, s in rows])
            curve = metrics.roc(scores, same)
            best = metrics.best_accuracy(curve)
            tar = metrics.tar_at_far(curve, 1e-3)
            eer = metrics.equal_error_rate(curve)
            print(
                f"{name:<42} {label:<8} pairs {len(rows):>5} unscored {int(np.isinf(scores).sum()):>3} "
                f"best acc {best.value:.4f} TAR@1e-3 {tar.value:.4f} EER {eer.value:.4f}"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
