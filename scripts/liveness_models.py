"""Build step for the passive liveness models: MiniFASNet state dicts -> float32 and int8 TFLite, checked.

1. reads the two Silent-Face state dicts from ``../shared/models-src/silent_face`` (pinned by sha256) into the
   PyTorch rebuild of ``minifasnet.py`` (``strict=True``);
2. cuts real face crops from ``../shared/data`` (``liveness_crops.py``: the dev/ photos and LFW View 1, faces found
   by the runtime detector, cut at each model's crop scale as the runtime cuts them): one half of the photos for the
   int8 calibration, the other, held out, for the checks;
3. translates each network to TF ops, exports float32 and three int8 variants -- full-integer, dynamic-range, and
   int8 weights with learned rounding (``adaround.py``, on the calibration crops) read through DEQUANTIZE ops into
   float32 maths -- and checks every variant's three class probabilities against the PyTorch rebuild on the
   held-out crops: max |dp| <= 1e-3 (float, else the build fails); the int8 file is, by a fixed rule, the fastest
   int8 variant within 0.02, or the closest one when none is (logged and written into its manifest entry);
4. returns the files and their manifest entries (role ``liveness``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from adaround import exact_depthwise, round_weights
from liveness_crops import detect_faces, split_photos
from minifasnet import INPUT_SIZE, MiniFASNet, build_function, load_torch, torch_probabilities
from tflite_export import Array, Quantization, convert, dequantized_weights, float_depthwise, ms_per_chip, run

_LOGGER = logging.getLogger("build_models.liveness")

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIR = Path(os.environ.get("EDGEFACE_MODELS_SRC", REPO.parent / "shared" / "models-src")) / "silent_face"
DATA_DIR = Path(os.environ.get("EDGEFACE_DATA", REPO.parent / "shared" / "data"))
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
MAX_FLOAT_DELTA = 1e-3
# The int8 target (docs/models.md). Rounding the weights to the nearest int8 step moves a probability near the
# decision boundary by up to 0.07, a dynamic-range kernel's per-invoke int8 activations add up to 0.03 and
# full-integer activations far more; only learned rounding with float32 activations ("int8-weights") meets it.
MAX_INT8_DELTA = 0.02
INT8_VARIANTS: tuple[Quantization, ...] = ("int8-full", "dynamic-range", "int8-weights")


class LivenessBuildError(RuntimeError):
    """A source file does not match its pin, or an export drifts from the PyTorch rebuild."""


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


def _entry(
    source: Source, file: str, data: bytes, quantization: Quantization, delta: float, check: str
) -> dict[str, Any]:
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
            + (" Full-integer post-training quantization (float32 in/out), calibrated on real face crops of "
               "dev/ and LFW View 1." if quantization == "int8-full" else "")
            + (" Dynamic-range quantization (int8 weights)." if quantization == "dynamic-range" else "")
            + (" int8 weights (every convolution and matrix of 1,024 weights or more, per output channel, their "
               "rounding learned on the calibration crops: scripts/adaround.py) read through DEQUANTIZE ops, so "
               "the maths is float32: the file is a third of float32's, the speed float32's; depthwise filters "
               "stay float32." if quantization == "int8-weights" else "")
            + f" Max |dp| against the PyTorch rebuild on {check}: {delta:.2g}"
            + (f" (misses the {MAX_INT8_DELTA} target; not the runtime default)." if delta > MAX_INT8_DELTA else ".")
        ),
    }


def pick_int8(deltas: dict[Quantization, float], ms: dict[Quantization, float]) -> Quantization:
    """The int8 file: the fastest variant within ``MAX_INT8_DELTA``, else the one closest to PyTorch."""
    meeting = [q for q in INT8_VARIANTS if deltas[q] <= MAX_INT8_DELTA]
    if meeting:
        return min(meeting, key=lambda q: ms[q])
    return min(INT8_VARIANTS, key=lambda q: deltas[q])


def _learned_int8_weights(net: MiniFASNet, calibration_bgr: Array, float_model: bytes) -> bytes:
    """The "int8-weights" file: learned-rounding int8 weights, depthwise filters exactly float32, float maths.

    The dynamic-range export of the rounded network stores the learned integers (``round_weights`` keeps the
    converter's per-channel scales); its depthwise filters, which the converter rounds too, are put back to
    the float model's; every int8 weight is then read through a DEQUANTIZE op.
    """
    rounded, _ = round_weights(net, calibration_bgr)
    exported = float_depthwise(convert(build_function(rounded), "dynamic-range"))
    return dequantized_weights(exact_depthwise(exported, float_model))


def build_liveness(models_dir: Path) -> LivenessBuild:
    """Export, check and describe both liveness models; ``models_dir`` provides the face detector."""
    calibration_photos, check_photos = split_photos(DATA_DIR)
    calibration_faces = detect_faces(calibration_photos, models_dir)
    check_faces = detect_faces(check_photos, models_dir)
    if not calibration_faces.names or not check_faces.names:
        raise LivenessBuildError(f"no faces found in the dev/ and LFW View 1 photos of {DATA_DIR}")
    check = (f"{len(check_faces.names)} held-out real face crops ({len(check_photos)} dev/ and LFW View 1 photos; "
             f"int8 calibration on {len(calibration_faces.names)} faces of other photos)")
    _LOGGER.info("liveness: %d calibration and %d check faces", len(calibration_faces.names), len(check_faces.names))
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
        calibration = calibration_faces.crops(source.crop_scale)
        crops = check_faces.crops(source.crop_scale)
        reference = torch_probabilities(net, crops)
        models: dict[Quantization, bytes] = {
            q: convert(fn, q, calibration.astype(np.float32) if q == "int8-full" else None)
            for q in ("none", "int8-full", "dynamic-range")
        }
        models["int8-weights"] = _learned_int8_weights(net, calibration, models["none"])
        x = crops.astype(np.float32)
        deltas = {q: float(np.abs(run(m, x) - reference).max()) for q, m in models.items()}
        ms = {q: ms_per_chip(m, x[0], 1) for q, m in models.items()}
        if deltas["none"] > MAX_FLOAT_DELTA:
            raise LivenessBuildError(f"{source.architecture} float32 TFLite drifts: max |dp| {deltas['none']:.2e}")
        int8 = pick_int8(deltas, ms)
        report = ModelReport(source, len(crops), deltas, int8, ms)
        _LOGGER.info("liveness: %s; int8 file: %s", report.summary(), int8)
        if deltas[int8] > MAX_INT8_DELTA:
            _LOGGER.warning("liveness: %s int8 (%s) misses the |dp| <= %s target: %.4f",
                            source.architecture, int8, MAX_INT8_DELTA, deltas[int8])
        reports.append(report)
        for q in ("none", report.int8):
            kind = "float32" if q == "none" else "int8"
            file = f"{source.model_id}_{kind}.tflite"
            files[file] = models[q]
            entries.append(_entry(source, file, models[q], q, deltas[q], check))
    return LivenessBuild(files, entries, reports)
