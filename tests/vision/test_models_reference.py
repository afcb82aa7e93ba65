"""The shipped models against their sources: manifest checksums, and the rebuilt embedders against dlib itself.

Chips are aligned by dlib from the real sample photos and fed to the real TFLite files through LiteRT,
normalised exactly as ``models/manifest.json`` says; dlib's own ResNet is the oracle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from ai_edge_litert.interpreter import Interpreter

Array = npt.NDArray[Any]  # element types vary (uint8 chips, float32 tensors); shapes are in the docstrings

MODELS = Path(__file__).resolve().parents[2] / "models"
# Photos with one large face each; dlib's detector needs no upsampling on them, which keeps this fast.
PHOTOS = ("biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "32bit.png")
MIN_COSINE = {"dlib_resnet_v1_float32": 0.999, "dlib_resnet_v1_int8": 0.99}


def _manifest() -> dict[str, Any]:
    return json.loads((MODELS / "manifest.json").read_text())  # type: ignore[no-any-return]


def _entry(model_id: str) -> dict[str, Any]:
    (entry,) = [m for m in _manifest()["models"] if m["id"] == model_id]
    return dict(entry)


def test_every_manifest_file_exists_with_its_sha256() -> None:
    manifest = _manifest()
    assert manifest["schema"] == 1
    ids = [m["id"] for m in manifest["models"]]
    assert len(ids) == len(set(ids))
    assert set(MIN_COSINE) | {"blazeface_short", "blazeface_full", "facemesh"} <= set(ids)
    for model in manifest["models"]:
        if "components" in model:  # a fused embedder: its components are the files
            assert {c["id"] for c in model["components"]} <= set(ids)
            continue
        data = (MODELS / model["file"]).read_bytes()
        assert len(data) == model["bytes"], model["file"]
        assert hashlib.sha256(data).hexdigest() == model["sha256"], model["file"]


@pytest.mark.parametrize("model_id", sorted(MIN_COSINE))
def test_embedder_entry_describes_the_model(model_id: str) -> None:
    entry = _entry(model_id)
    interpreter = Interpreter(model_path=str(MODELS / entry["file"]))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    spec = entry["input"]
    assert list(inp["shape"][1:]) == [spec["height"], spec["width"], spec["channels"]]
    assert inp["dtype"].__name__ == spec["dtype"]
    assert out["shape"][-1] == entry["output"]["size"]
    assert np.asarray(entry["alignment"]["template"]).shape == (5, 2)
    assert entry["quantization"] in ("int8-full", "dynamic-range", "none")


def _reference_file(name: str) -> Path:
    # Located without importing face_recognition_models: its __init__ pulls in pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face-recognition-models is not installed (extra 'reference')")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


@pytest.fixture(scope="module")
def dlib_chips(samples_dir: Path) -> tuple[Array, Array]:
    """Chips dlib aligned from the sample photos and dlib's descriptors of them."""
    dlib = pytest.importorskip("dlib")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(_reference_file("shape_predictor_5_face_landmarks.dat")))
    recogniser = dlib.face_recognition_model_v1(str(_reference_file("dlib_face_recognition_resnet_model_v1.dat")))
    chips = []
    for name in PHOTOS:
        image = dlib.load_rgb_image(str(samples_dir / name))
        (rect,) = detector(image, 0)
        chips.append(np.asarray(dlib.get_face_chip(image, predictor(image, rect), size=150, padding=0.25)))
    stack = np.stack(chips)
    return stack, np.array([recogniser.compute_face_descriptor(chip) for chip in stack])


def _embed(model_id: str, chips: Array) -> Array:
    entry = _entry(model_id)
    interpreter = Interpreter(model_path=str(MODELS / entry["file"]), num_threads=2)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    spec = entry["input"]
    assert spec["color"] == "rgb"
    normalised = ((chips.astype(np.float32) - np.float32(spec["mean"])) * np.float32(spec["scale"])).astype(np.float32)
    result = []
    for chip in normalised:
        interpreter.set_tensor(inp["index"], chip[None])
        interpreter.invoke()
        result.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.array(result)


@pytest.mark.reference
@pytest.mark.parametrize("model_id", sorted(MIN_COSINE))
def test_embedder_matches_dlib_on_real_faces(model_id: str, dlib_chips: tuple[Array, Array]) -> None:
    chips, reference = dlib_chips
    ours = _embed(model_id, chips)
    cosine = np.sum(ours * reference, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    assert cosine.min() >= MIN_COSINE[model_id], cosine


@pytest.mark.reference
def test_int8_embedder_keeps_identities_apart(dlib_chips: tuple[Array, Array]) -> None:
    """Obama's photos stay above the manifest's threshold against each other and Biden's below it."""
    chips, _ = dlib_chips
    vectors = _embed("dlib_resnet_v1_int8", chips)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    threshold = _entry("dlib_resnet_v1_int8")["default_threshold"]
    similarity = vectors @ vectors.T
    biden, obamas = 0, [1, 2, 3]  # PHOTOS order; 32bit.png is Obama too but a copy of obama2 in another format
    assert all(similarity[biden, j] < threshold for j in obamas)
    assert all(similarity[i, j] >= threshold for i in obamas for j in obamas)
