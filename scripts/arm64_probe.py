"""Run edgeface's runtime on this machine and record what it computes; compare two such records.

``scripts/arm64-check.sh`` runs ``probe`` twice -- on the host (x86-64) and under qemu on an emulated
aarch64 Debian root -- and then ``compare``. The aarch64 run takes its model inputs (raw tensors,
aligned chips) from the host's record, so differences come from the aarch64 runtime alone, while it
detects and finds landmarks on the real photos by itself, as a device would. Every model in
``models/manifest.json`` is checked, whatever its role, so new models are covered without change here.

    python scripts/arm64_probe.py probe --photos DIR --out x86.npz
    python scripts/arm64_probe.py probe --photos DIR --reference x86.npz --out arm64.npz
    python scripts/arm64_probe.py compare x86.npz arm64.npz
    python scripts/arm64_probe.py sizes SITE_PACKAGES_DIR
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import queue
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Agreement required between the host and the aarch64 run. Float32 graphs differ only by the order of
# float additions in the SIMD kernels (NEON vs AVX); quantised graphs -- full-integer int8, and
# dynamic-range ones, which quantise activations at run time -- can also round a quantisation step
# the other way, which moves an embedding by a few 1e-4 in cosine (SFace dynamic-range: 0.99968).
COSINE_FLOAT32 = 0.999999
COSINE_INT8 = 0.9996
# Boxes, keypoints and landmarks are compared relative to the face's box side: OpenCV's resampling
# (the detector's letterbox, FaceMesh's crop) rounds differently in its NEON and AVX code, which moves
# a point by up to ~5e-4 of the face (0.17 px on a 330 px face in obama3.jpg). 2e-3 of the face is
# 0.3 px on a 150 px face: well below what visibly moves a chip, far below what a real fault does.
RELATIVE_PX = 2e-3
DETECTION_SCORE = 1e-3
MIN_SCORE = 0.5
MAX_FACES = 10
BROKER_TIMEOUT_S = 60.0  # generous: the broker runs under emulation on a shared machine

Arrays = dict[str, npt.NDArray[Any]]


class ProbeError(Exception):
    """The runtime failed on this machine; the message says where."""


# --- probe ---------------------------------------------------------------------------------------


def _import_everything() -> list[str]:
    """Import every module of the package: one that needs a missing or broken wheel fails here."""
    import edgeface

    names = [m.name for m in pkgutil.walk_packages(edgeface.__path__, "edgeface.") if not m.name.endswith("__main__")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise ProbeError(f"import {name} failed: {exc!r}\n{traceback.format_exc()}") from exc
    return names


def _broker_round_trip() -> float:
    """Start the embedded broker, publish and receive one retained QoS 1 message; seconds taken."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgeface.mqtt.broker import PROTOCOL, EmbeddedBroker

    start = time.monotonic()
    broker = EmbeddedBroker(port=0)
    broker.start()
    received: queue.Queue[bytes] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="arm64-probe", protocol=PROTOCOL)
    client.on_message = lambda _c, _u, msg: received.put(bytes(msg.payload))
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        client.publish("edgeface/probe/status", b"online", qos=1, retain=True).wait_for_publish(BROKER_TIMEOUT_S)
        client.subscribe("edgeface/probe/#", qos=1)
        try:
            payload = received.get(timeout=BROKER_TIMEOUT_S)
        except queue.Empty as exc:
            raise ProbeError(f"embedded broker: no retained message back within {BROKER_TIMEOUT_S}s") from exc
        if payload != b"online":
            raise ProbeError(f"embedded broker: got {payload!r} back instead of b'online'")
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()
    return time.monotonic() - start


def _raw_input(spec: Any, image: npt.NDArray[np.uint8], batch: int) -> npt.NDArray[Any]:
    """A real photo resized to the model's input, normalised as its manifest says."""
    import cv2

    inp = spec.input
    pixels: npt.NDArray[Any] = cv2.resize(image, (inp.width, inp.height), interpolation=cv2.INTER_AREA)
    if inp.channels == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)[..., None]
    elif inp.color == "rgb":
        pixels = pixels[..., ::-1]
    mean = np.asarray(inp.mean, dtype=np.float32)[: inp.channels]
    x = (pixels.astype(np.float32) - mean) * np.float32(inp.scale)
    return np.repeat(x[None], batch, axis=0)


def _quantize(x: npt.NDArray[Any], model: Any) -> npt.NDArray[Any]:
    if model.input_dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = model.input_quant
    q = np.round(x / np.float32(scale)) + zero if scale else np.round(x)
    limits = np.iinfo(model.input_dtype)
    out: npt.NDArray[Any] = np.clip(q, limits.min, limits.max).astype(model.input_dtype)
    return out


def _probe_models(models_dir: Path, image: npt.NDArray[np.uint8], ref: Arrays, out: Arrays) -> dict[str, str]:
    """Load every manifest model and run it once on a real-photo input; returns id -> quantization."""
    import cv2

    from edgeface.vision.fused import create_embedder
    from edgeface.vision.manifest import FusedSpec, load_manifest
    from edgeface.vision.runtime import TFLiteModel

    kinds: dict[str, str] = {}
    for spec in load_manifest(models_dir).models:
        if isinstance(spec, FusedSpec):  # no file of its own: run it whole on the photo as a chip
            chip = ref.get(f"input|{spec.id}")
            if chip is None:
                side = spec.alignment.size
                chip = np.asarray(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA), dtype=np.uint8)
            try:
                out[f"raw|{spec.id}|0"] = create_embedder(models_dir, spec.id).embed([chip])
            except Exception as exc:
                raise ProbeError(f"fused model {spec.id}: {exc!r}") from exc
            out[f"input|{spec.id}"] = chip
            kinds[spec.id] = spec.quantization or "float"
            continue
        try:
            model = TFLiteModel(models_dir, spec)
            x = ref.get(f"input|{spec.id}")
            if x is None:
                x = _quantize(_raw_input(spec, image, model.batch), model)
            outputs = model.run(x)
        except Exception as exc:
            raise ProbeError(f"model {spec.id} ({spec.file}): {exc!r}") from exc
        out[f"input|{spec.id}"] = x
        for k, (value, detail) in enumerate(zip(outputs, model.output_details, strict=True)):
            out[f"raw|{spec.id}|{k}"] = model.dequantize(value, detail)
        kinds[spec.id] = spec.quantization or "float"
    return kinds


def _probe_faces(models_dir: Path, photos: dict[str, npt.NDArray[np.uint8]], ref: Arrays, out: Arrays) -> None:
    """Detections and landmarks on every photo; embeddings of aligned chips for every embedder."""
    from edgeface.config import VisionConfig
    from edgeface.errors import ModelError
    from edgeface.vision.align import Aligner
    from edgeface.vision.detect import MODEL_IDS, SSD_OPTIONS, LiteRTDetector
    from edgeface.vision.fused import create_embedder
    from edgeface.vision.landmarks import LiteRTLandmarker, five_points
    from edgeface.vision.manifest import load_manifest

    specs = load_manifest(models_dir).models
    detectors = [LiteRTDetector(models_dir, s.id, MIN_SCORE, MAX_FACES) for s in specs if s.id in SSD_OPTIONS]
    landmarkers = []
    for spec in (s for s in specs if s.role == "landmarker"):
        try:
            landmarkers.append(LiteRTLandmarker(models_dir, spec.id))
        except ModelError as exc:  # another kind of landmarker: its raw outputs are still compared
            print(f"probe: {spec.id} is not a FaceMesh landmarker ({exc}); raw outputs only")
    if not detectors or not landmarkers:
        raise ProbeError(f"manifest in {models_dir} has no BlazeFace detector or no landmarker")
    default_detector = MODEL_IDS[VisionConfig().detector]
    faces: dict[str, list[Any]] = {}  # photo -> landmarks of the default detector's faces
    for name, image in photos.items():
        for det in detectors:
            found = det.detect(image)
            out[f"det|{det.model_id}|{name}"] = np.asarray(
                [[d.score, d.bbox.x0, d.bbox.y0, d.bbox.x1, d.bbox.y1, *d.keypoints.ravel()] for d in found],
                dtype=np.float32,
            ).reshape(len(found), -1)
            for lmk in landmarkers:
                points = np.full((len(found), 468, 3), np.nan, dtype=np.float32)
                for i, d in enumerate(found):
                    marks = lmk.landmarks(image, d)
                    if marks is not None:
                        points[i] = marks.points[:, :3]
                        if det.model_id == default_detector and lmk is landmarkers[0]:
                            faces.setdefault(name, []).append(marks)
                out[f"lm|{lmk.model_id}|{det.model_id}|{name}"] = points
    for spec in specs:
        if spec.role != "embedder":
            continue
        embedder = create_embedder(models_dir, spec.id)
        chips = ref.get(f"chips|{spec.id}")
        if chips is None:
            aligner = Aligner(embedder.template, embedder.chip_size, embedder.points)
            chips = np.stack(
                [aligner.align(photos[n], five_points(m, embedder.points)) for n in sorted(faces) for m in faces[n]]
            )
        out[f"chips|{spec.id}"] = chips
        out[f"emb|{spec.id}"] = embedder.embed(list(chips))


def probe(photos_dir: Path, out_path: Path, reference: Path | None, models_dir: Path | None) -> None:
    """Run everything and write the record to ``out_path``."""
    started = time.monotonic()
    modules = _import_everything()
    from edgeface.config import DEFAULT_MODELS_DIR
    from edgeface.vision.imageio import load_image

    models = models_dir or DEFAULT_MODELS_DIR
    ref: Arrays = dict(np.load(reference)) if reference else {}
    photos = {p.name: load_image(p) for p in sorted(photos_dir.iterdir()) if p.suffix in {".jpg", ".png"}}
    if not photos:
        raise ProbeError(f"no .jpg/.png photos in {photos_dir}")
    imported_s = time.monotonic() - started
    broker_s = _broker_round_trip()
    out: Arrays = {}
    mark = time.monotonic()
    kinds = _probe_models(models, next(iter(photos.values())), ref, out)
    models_s = time.monotonic() - mark
    mark = time.monotonic()
    _probe_faces(models, photos, ref, out)
    faces_s = time.monotonic() - mark
    meta = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "modules": len(modules),
        "photos": sorted(photos),
        "quantization": kinds,
        "import_s": round(imported_s, 1),
        "broker_s": round(broker_s, 3),
        "models_s": round(models_s, 1),
        "faces_s": round(faces_s, 1),
        "probe_s": round(time.monotonic() - started, 1),
    }
    try:
        from importlib.metadata import version

        meta["ai_edge_litert"] = version("ai-edge-litert")
        meta["opencv"] = version("opencv-python-headless")
    except Exception:  # a tflite_runtime-only install is still worth comparing
        pass
    out["meta"] = np.asarray(json.dumps(meta))
    np.savez_compressed(out_path, **out)
    print(f"probe: {meta['machine']} {json.dumps({k: v for k, v in meta.items() if k != 'quantization'})}")


# --- compare -------------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, line: str) -> None:
        (self.lines if ok else self.failures).append(line)


def _cosine(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    if denom == 0.0:
        return 1.0 if not a64.any() and not b64.any() else 0.0
    return float(a64 @ b64 / denom)


def _bound(kind: str) -> float:
    """The cosine bound for a manifest ``quantization`` ("int8-full", "dynamic-range", ...; none = float)."""
    return COSINE_FLOAT32 if kind.lower() in {"none", "float"} else COSINE_INT8


def compare(ref: Arrays, cand: Arrays) -> Report:
    """Check the candidate record against the reference within the bounds at the top of the file."""
    report = Report()
    meta_ref, meta_cand = json.loads(str(ref["meta"])), json.loads(str(cand["meta"]))
    kinds: dict[str, str] = meta_ref["quantization"]
    for model_id in kinds:
        if model_id not in meta_cand["quantization"]:
            report.failures.append(f"model {model_id}: not run on {meta_cand['machine']}")
    for key in sorted(k for k in ref if k.startswith("raw|")):
        _, model_id, index = key.split("|")
        if key not in cand:
            report.failures.append(f"model {model_id}: output {index} missing on {meta_cand['machine']}")
            continue
        cos, bound = _cosine(ref[key], cand[key]), _bound(kinds[model_id])
        report.check(cos >= bound, f"model {model_id} output {index}: cosine {cos:.9f} (bound {bound})")
    for key in sorted(k for k in ref if k.startswith("emb|")):
        model_id = key.split("|")[1]
        a, b = ref[key], cand.get(key)
        if b is None or b.shape != a.shape:
            report.failures.append(f"embedder {model_id}: embeddings {None if b is None else b.shape}, want {a.shape}")
            continue
        cosines = np.sum(a.astype(np.float64) * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst, bound = float(cosines.min()), _bound(kinds[model_id])
        report.check(worst >= bound, f"embedder {model_id}: {len(a)} chips, min cosine {worst:.9f} (bound {bound})")
    _compare_detections(ref, cand, report)
    _compare_landmarks(ref, cand, report)
    return report


def _box_sides(rows: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Side of each face box (the larger of width and height) from detection rows."""
    sides: npt.NDArray[Any] = np.maximum(rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]).astype(np.float64)
    return sides


def _compare_detections(ref: Arrays, cand: Arrays, report: Report) -> None:
    worst: dict[str, tuple[float, float, float, int]] = {}
    for key in sorted(k for k in ref if k.startswith("det|")):
        _, model_id, photo = key.split("|")
        a, b = ref[key], cand.get(key)
        if b is None or b.shape != a.shape:
            got = "none" if b is None else len(b)
            report.failures.append(f"detector {model_id} on {photo}: {got} faces, the host found {len(a)}")
            continue
        if not len(a):
            continue
        diff = np.abs(a[:, 1:] - b[:, 1:]).max(axis=1)
        px, rel = float(diff.max()), float((diff / _box_sides(a)).max())
        score = float(np.abs(a[:, 0] - b[:, 0]).max())
        prev = worst.get(model_id, (0.0, 0.0, 0.0, 0))
        worst[model_id] = (max(prev[0], px), max(prev[1], rel), max(prev[2], score), prev[3] + len(a))
        if rel > RELATIVE_PX or score > DETECTION_SCORE:
            report.failures.append(
                f"detector {model_id} on {photo}: boxes/keypoints differ by {px:.4f} px = {rel:.2e} of the face "
                f"(bound {RELATIVE_PX:.0e}), scores by {score:.5f} (bound {DETECTION_SCORE})"
            )
    for model_id, (px, rel, score, n) in worst.items():
        report.lines.append(
            f"detector {model_id}: {n} faces, same count, max {px:.4f} px = {rel:.2e} of the face "
            f"(bound {RELATIVE_PX:.0e}), score {score:.5f}"
        )


def _compare_landmarks(ref: Arrays, cand: Arrays, report: Report) -> None:
    worst: dict[str, tuple[float, float, int]] = {}
    for key in sorted(k for k in ref if k.startswith("lm|")):
        _, model_id, detector, photo = key.split("|")
        a, b = ref[key], cand.get(key)
        if b is None or b.shape != a.shape:
            report.failures.append(f"landmarker {model_id} on {photo} ({detector}): faces differ")
            continue
        rejected_a, rejected_b = np.isnan(a[:, 0, 0]), np.isnan(b[:, 0, 0])
        if (rejected_a != rejected_b).any():
            report.failures.append(f"landmarker {model_id} on {photo} ({detector}): accepts different faces")
            continue
        kept = ~rejected_a
        if not kept.any():
            continue
        diff = np.abs(a[kept, :, :2] - b[kept, :, :2]).max(axis=(1, 2))
        sides = _box_sides(ref[f"det|{detector}|{photo}"])[kept]
        px, rel = float(diff.max()), float((diff / sides).max())
        prev = worst.get(model_id, (0.0, 0.0, 0))
        worst[model_id] = (max(prev[0], px), max(prev[1], rel), prev[2] + int(kept.sum()))
        if rel > RELATIVE_PX:
            report.failures.append(
                f"landmarker {model_id} on {photo} ({detector}): points differ by {px:.4f} px = {rel:.2e} of the "
                f"face (bound {RELATIVE_PX:.0e})"
            )
    for model_id, (px, rel, n) in worst.items():
        report.lines.append(
            f"landmarker {model_id}: {n} faces, max {px:.4f} px = {rel:.2e} of the face (bound {RELATIVE_PX:.0e})"
        )


# --- installed sizes ---------------------------------------------------------------------------


def installed_sizes(site: Path) -> list[tuple[str, str, int]]:
    """(distribution, version, bytes on disk) for every distribution in ``site``, largest first."""
    rows = []
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines()
        fields = dict(line.split(": ", 1) for line in meta if ": " in line and not line.startswith(" "))
        files = {(site / line.rsplit(",", 2)[0]).resolve() for line in (info / "RECORD").read_text().splitlines()}
        size = sum(f.stat().st_size for f in files if f.is_file())  # RECORD lists compiled byte code too
        rows.append((fields.get("Name", info.name), fields.get("Version", "?"), size))
    return sorted(rows, key=lambda r: -r[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="run the runtime here and write a record")
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reference", type=Path, help="record whose model inputs and chips to reuse")
    p.add_argument("--models", type=Path, help="models directory (default: the package's)")
    c = sub.add_parser("compare", help="compare a record with the reference record")
    c.add_argument("reference", type=Path)
    c.add_argument("candidate", type=Path)
    s = sub.add_parser("sizes", help="installed size per distribution in a site-packages directory")
    s.add_argument("site", type=Path)
    args = parser.parse_args(argv)
    if args.command == "probe":
        try:
            probe(args.photos, args.out, args.reference, args.models)
        except Exception as exc:
            print(f"probe on {platform.machine()} FAILED: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "sizes":
        rows = installed_sizes(args.site)
        for name, ver, size in rows:
            print(f"{name:28s} {ver:14s} {size / 1e6:8.1f} MB")
        print(f"{'total':43s} {sum(r[2] for r in rows) / 1e6:8.1f} MB")
        return 0
    ref, cand = dict(np.load(args.reference)), dict(np.load(args.candidate))
    report = compare(ref, cand)
    machine = json.loads(str(cand["meta"]))["machine"]
    for line in report.lines:
        print(f"compare {machine}: ok   {line}")
    for line in report.failures:
        print(f"compare {machine}: FAIL {line}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
