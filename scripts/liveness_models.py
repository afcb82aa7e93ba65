"""Build step for the passive liveness models: MiniFASNet state dicts -> float32 and int8 TFLite, checked.

1. reads the two Silent-Face state dicts from ``../shared/models-src/silent_face`` (pinned by sha256) into the
   PyTorch rebuild of ``minifasnet.py`` (``strict=True``);
2. cuts real face crops from registry photos (``edgeface.samples``: the ``face_recognition`` sdist's photos, faces
   found by edgeface's own BlazeFace), jittered in box and light, at each model's crop scale: one seed for the int8
   calibration, another for the checks;
3. translates each network to TF ops, exports float32 and int8 TFLite, and checks every variant's three class
   probabilities against the PyTorch rebuild on the check crops: max |dp| <= 1e-3 (float) and <= 0.02 (int8);
4. returns the files and their manifest entries (role ``liveness``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from minifasnet import INPUT_SIZE, build_function, load_torch, torch_probabilities
from tflite_export import Quantization, convert, ms_per_chip, run

from edgeface.data import BBox
from edgeface.liveness.passive import crop_box
from edgeface.samples import ensure_samples
from edgeface.vision.backends import create_detector

Array = npt.NDArray[Any]

_LOGGER = logging.getLogger("build_models.liveness")

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = Path(os.environ.get("EDGEFACE_MODELS_SRC", REPO.parent / "shared" / "models-src")) / "silent_face"
SOURCE_REPO = "minivision-ai/Silent-Face-Anti-Spoofing"
SOURCE_COMMIT = "b6d5f04ad78778917853b25c778acef6d5626d15"
LICENCE = "Apache-2.0"


@dataclass(frozen=True)
class Source:
    model_id: str  # manifest id prefix; "_float32" / "_int8" are appended
    file: str
    sha256: str
    crop_scale: float  # encoded in the file name: 2.7_80x80 = 2.7 x the face box, resized to 80 x 80
    architecture: str


SOURCES = (
    Source("minifasnet_v2_2p7", "2.7_80x80_MiniFASNetV2.pth",
           "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0", 2.7, "MiniFASNetV2"),
    Source("minifasnet_v1se_4p0", "4_0_0_80x80_MiniFASNetV1SE.pth",
           "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990", 4.0, "MiniFASNetV1SE"),
)
# Source labels: class 1 is a live face, classes 0 and 2 the two spoof classes of the training set.
CLASSES = ("spoof", "live", "spoof")
# Fused live probability (mean of both models' class-1 probabilities) from which a face is live, chosen on
# bona fide photos only (docs/liveness.md): the highest value on a 0.05 grid at which dev/ and LFW View 1
# without alignment fill, pooled, stay at or under 4.5 % rejected -- the 5 % target less a margin, since a
# value tuned to exactly 5 % exceeds it on photos it was not tuned on (0.35: dev 3.9 %, View 1 4.4 %; 0.4
# is at 4.97 %). LFW photos whose corners the dataset's alignment filled with black look like a picture held
# up in a dark frame and are rejected 29 % even so: reported, not tuned for, since only a threshold near
# 0.013 brings all of View 1 under 5 %, where 16 % of the synthetic attacks pass. The attacks did not choose
# the value (at it 97.9 % of them are rejected); View 2 never enters the build.
DEFAULT_THRESHOLD = 0.35
THRESHOLD_SOURCE = (
    "edgeface eval liveness on bona fide photos only (scripts/liveness_sets.py photos: every dev/ photo, "
    "76 faces, and LFW View 1 split by the black corners its alignment left): the highest fused live "
    "probability on a 0.05 grid at which dev/ and View 1 without that fill (2,663 faces), pooled, stay at "
    "or under 4.5 % refused, the 5 % target less a margin: dev 3.9 %, View 1 without fill 4.4 %, with "
    "fill 29.1 % (reported, not tuned for); both clips' frames 0 %. Synthetic attacks did not choose it "
    "(97.9 % of them rejected at it); View 2 never used. docs/liveness.md."
)
# Crops per face: calibration and check sets from different seeds, so the check is on crops the int8
# calibration never saw.
CALIBRATION_PER_FACE, CALIBRATION_SEED = 24, 20251201
CHECK_PER_FACE, CHECK_SEED = 16, 20251202
MAX_FLOAT_DELTA = 1e-3
# The int8 target. Neither int8 variant meets it on this network (docs/models.md): full-integer drifts by up to
# 0.2 and runs slower than float here, dynamic-range by up to 0.04 near the decision boundary. The build
# keeps the closer one as the int8 file, says so in the log and the manifest, and the runtime uses float32.
MAX_INT8_DELTA = 0.02
INT8_VARIANTS: tuple[Quantization, ...] = ("int8-full", "dynamic-range")
# Box jitter of the crops: where a detector puts a box varies by a few percent of its size frame to frame.
_SHIFT, _SIZE = 0.08, (0.9, 1.1)


class LivenessBuildError(RuntimeError):
    """A source file does not match its pin, or an export drifts from the PyTorch rebuild."""


@dataclass(frozen=True)
class Face:
    name: str
    image: Array  # BGR uint8
    bbox: BBox


def registry_faces(models_dir: Path) -> list[Face]:
    """Every face BlazeFace finds in the registry photos (largest first per photo)."""
    detector = create_detector("litert", "full", models_dir, 0.6, 5)
    faces = []
    for path in sorted(ensure_samples().iterdir()):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        for i, detection in enumerate(detector.detect(image)):
            if min(detection.bbox.width, detection.bbox.height) >= 40:
                faces.append(Face(f"{path.name}#{i}", image, detection.bbox))
    detector.close()
    if not faces:
        raise LivenessBuildError("no faces found in the registry photos")
    return faces


def jittered_crops(faces: list[Face], scale: float, per_face: int, seed: int) -> Array:
    """``(len(faces) * (per_face + 1), 80, 80, 3)`` BGR crops: each face as detected, then jittered."""
    rng = np.random.default_rng(seed)
    out = []
    for face in faces:
        b = face.bbox
        for k in range(per_face + 1):
            box = b
            if k:
                w, h = b.width * rng.uniform(*_SIZE), b.height * rng.uniform(*_SIZE)
                cx = b.center[0] + rng.uniform(-_SHIFT, _SHIFT) * b.width
                cy = b.center[1] + rng.uniform(-_SHIFT, _SHIFT) * b.height
                box = BBox(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            height, width = face.image.shape[:2]
            x0, y0, x1, y1 = crop_box(width, height, box, scale)
            crop = cv2.resize(face.image[y0 : y1 + 1, x0 : x1 + 1], (INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
            if k:
                mean = crop.mean()
                crop = (crop - mean) * rng.uniform(0.7, 1.3) + mean + rng.uniform(-30, 30)
                crop = 255.0 * (np.clip(crop, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
                crop += rng.normal(0.0, rng.uniform(0.0, 6.0), size=crop.shape)
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
            out.append(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    return np.stack(out)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelReport:
    """One source model's export: max |dp| per variant against PyTorch on the check crops, and timings."""

    source: Source
    check_crops: int
    deltas: dict[Quantization, float]
    int8: Quantization
    ms: dict[Quantization, float]

    def summary(self) -> str:
        parts = [f"{q} max|dp| {d:.2e} {self.ms[q]:.2f} ms" for q, d in self.deltas.items()]
        return f"{self.source.architecture} ({self.check_crops} check crops): " + "; ".join(parts)


@dataclass(frozen=True)
class LivenessBuild:
    files: dict[str, bytes]
    entries: list[dict[str, Any]]
    reports: list[ModelReport]


def _entry(source: Source, file: str, data: bytes, quantization: Quantization, delta: float) -> dict[str, Any]:
    kind = "float32" if quantization == "none" else "int8"
    return {
        "id": f"{source.model_id}_{kind}",
        "role": "liveness",
        "file": file,
        "sha256": _sha256(data),
        "bytes": len(data),
        "input": {"width": INPUT_SIZE, "height": INPUT_SIZE, "channels": 3, "color": "bgr", "dtype": "float32",
                  "mean": [0.0, 0.0, 0.0], "scale": 1.0},
        "crop": {"scale": source.crop_scale},
        "output": {"size": len(CLASSES), "normalise": False},
        "classes": list(CLASSES),
        "default_threshold": DEFAULT_THRESHOLD,
        "threshold_source": THRESHOLD_SOURCE,
        "quantization": quantization,
        "licence": LICENCE,
        "source": {"package": SOURCE_REPO, "version": SOURCE_COMMIT,
                   "file": f"resources/anti_spoof_models/{source.file}", "sha256": source.sha256},
        "build": "python scripts/build_models.py",
        "notes": (
            f"{source.architecture} rebuilt from the state dict (scripts/minifasnet.py). Input: the face box scaled "
            f"{source.crop_scale}x about its centre, shifted inside the image (scale reduced when the image cannot "
            "hold it), resized to 80x80, BGR 0..255, no normalisation. Output: softmax probabilities of "
            "(spoof, live, spoof). default_threshold applies to the mean live probability of the 2.7x and 4.0x "
            "models (docs/liveness.md)."
            + (" Full-integer post-training quantization (float32 in/out), calibrated on jittered crops of "
               "registry photos." if quantization == "int8-full" else "")
            + (" Dynamic-range quantization (int8 weights)." if quantization == "dynamic-range" else "")
            + f" Max |dp| against the PyTorch rebuild on {CHECK_PER_FACE + 1} crops per registry face: {delta:.2g}"
            + (f" (misses the {MAX_INT8_DELTA} target; not the runtime default)." if delta > MAX_INT8_DELTA else ".")
        ),
    }


def build_liveness(models_dir: Path) -> LivenessBuild:
    """Export, check and describe both liveness models; ``models_dir`` provides the face detector."""
    faces = registry_faces(models_dir)
    _LOGGER.info("liveness: %d registry faces for calibration and checks", len(faces))
    files: dict[str, bytes] = {}
    entries: list[dict[str, Any]] = []
    reports = []
    for source in SOURCES:
        path = SOURCE_DIR / source.file
        if not path.is_file():
            raise LivenessBuildError(f"{path} is missing (set EDGEFACE_MODELS_SRC to the models-src folder)")
        digest = _sha256(path.read_bytes())
        if digest != source.sha256:
            raise LivenessBuildError(f"{path}: sha256 {digest}, pinned {source.sha256}")
        net = load_torch(path)
        fn = build_function(net)
        calibration = jittered_crops(faces, source.crop_scale, CALIBRATION_PER_FACE, CALIBRATION_SEED)
        check = jittered_crops(faces, source.crop_scale, CHECK_PER_FACE, CHECK_SEED)
        reference = torch_probabilities(net, check)
        models: dict[Quantization, bytes] = {
            q: convert(fn, q, calibration.astype(np.float32) if q == "int8-full" else None)
            for q in ("none", *INT8_VARIANTS)
        }
        x = check.astype(np.float32)
        deltas = {q: float(np.abs(run(m, x) - reference).max()) for q, m in models.items()}
        ms = {q: ms_per_chip(m, x[0], 1) for q, m in models.items()}
        if deltas["none"] > MAX_FLOAT_DELTA:
            raise LivenessBuildError(f"{source.architecture} float32 TFLite drifts: max |dp| {deltas['none']:.2e}")
        int8 = min(INT8_VARIANTS, key=lambda q: deltas[q])
        report = ModelReport(source, len(check), deltas, int8, ms)
        _LOGGER.info("liveness: %s; int8 file: %s", report.summary(), int8)
        if deltas[int8] > MAX_INT8_DELTA:
            _LOGGER.warning("liveness: %s int8 (%s) misses the |dp| <= %s target: %.4f; the runtime uses float32",
                            source.architecture, int8, MAX_INT8_DELTA, deltas[int8])
        reports.append(report)
        for q in ("none", report.int8):
            kind = "float32" if q == "none" else "int8"
            file = f"{source.model_id}_{kind}.tflite"
            files[file] = models[q]
            entries.append(_entry(source, file, models[q], q, deltas[q]))
    return LivenessBuild(files, entries, reports)
