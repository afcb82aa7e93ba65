"""Flip augmentation (manifest ``flip``): a chip and its mirror described together, on the real models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.errors import ModelError
from edgeface.tools.encoders import EdgefaceEncoder
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.embed import Embedder
from edgeface.vision.fused import FusedEmbedder, create_embedder
from edgeface.vision.manifest import MANIFEST_NAME, FusedSpec, load_manifest

from .support import INT8, PORTRAITS, ImageLoader

SFACE_INT8 = "sface_2021dec_int8"
FUSED = "fused_dlib_sface_int8"


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def _mirror(chip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chip[:, ::-1])


@pytest.fixture(scope="module")
def portrait_chips(models_dir: Path, face_image: ImageLoader) -> dict[str, list[np.ndarray]]:
    """Per single embedder, its own chips of the portraits (aligned with its template)."""
    out = {}
    for model_id in (INT8, SFACE_INT8):
        with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=model_id)) as analyzer:
            out[model_id] = [analyzer.analyze(face_image(name))[0].chip for name in PORTRAITS]
    return out


@pytest.mark.parametrize("model_id", [INT8, SFACE_INT8])
def test_flip_vector_is_the_normalised_sum_of_the_chip_and_its_mirror(
    models_dir: Path, portrait_chips: dict[str, list[np.ndarray]], model_id: str
) -> None:
    chips = portrait_chips[model_id]
    plain = Embedder(models_dir, model_id, flip=False)
    flipped = Embedder(models_dir, model_id, flip=True)
    assert flipped.flip and not plain.flip
    expected = _unit(plain.embed(chips) + plain.embed([_mirror(c) for c in chips]))
    got = flipped.embed(chips)
    assert got.shape == (len(chips), plain.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # The mirror really is a second view: the plain vectors of a face and of its mirror differ.
    assert float(np.min(np.sum(plain.embed(chips) * got, axis=1))) < 0.9999


@pytest.mark.parametrize("model_id", [INT8, SFACE_INT8])
def test_flip_vector_is_the_same_for_a_face_and_its_mirror(
    models_dir: Path, portrait_chips: dict[str, list[np.ndarray]], model_id: str
) -> None:
    flipped = Embedder(models_dir, model_id, flip=True)
    chips = portrait_chips[model_id]
    np.testing.assert_allclose(flipped.embed(chips), flipped.embed([_mirror(c) for c in chips]), atol=2e-5)


def test_flip_comes_from_the_manifest_unless_given(models_dir: Path) -> None:
    spec = load_manifest(models_dir).get(INT8)
    assert Embedder(models_dir, INT8).flip is spec.flip
    assert Embedder(models_dir, INT8, flip=not spec.flip).flip is not spec.flip


def test_fused_components_flip_as_the_fused_entry_says(models_dir: Path, face_image: ImageLoader) -> None:
    spec = load_manifest(models_dir).embedder(FUSED)
    assert isinstance(spec, FusedSpec)
    fused = create_embedder(models_dir, FUSED)
    assert isinstance(fused, FusedEmbedder)
    assert fused.flip == any(c.flip for c in spec.components)
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=FUSED)) as analyzer:
        chips = [analyzer.analyze(face_image(name))[0].chip for name in PORTRAITS]
    parts = fused.component_chips(chips)
    expected = np.concatenate(
        [
            c.weight * Embedder(models_dir, c.id, flip=c.flip).embed(part)
            for c, part in zip(spec.components, parts, strict=True)
        ],
        axis=1,
    )
    np.testing.assert_allclose(fused.embed(chips), _unit(expected), atol=2e-5)


def test_flip_on_a_model_that_is_not_an_embedder_is_refused(models_copy: Callable[..., Path]) -> None:
    models = models_copy()
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    (entry,) = [m for m in manifest["models"] if m["id"] == "facemesh"]
    entry["flip"] = True
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    message = r"manifest\.json is invalid(?s:.*)model facemesh: flip applies to embedders only, this is a landmarker"
    with pytest.raises(ModelError, match=message):
        load_manifest(models)


def test_eval_cache_key_changes_with_flip(models_dir: Path, models_copy: Callable[..., Path]) -> None:
    stages = [m.id for m in load_manifest(models_dir).models if m.role in ("detector", "landmarker")]
    models = models_copy(*stages, INT8)
    before = EdgefaceEncoder(VisionConfig(models_dir=models), INT8).fingerprint
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    (entry,) = [m for m in manifest["models"] if m["id"] == INT8]
    entry["flip"] = not entry.get("flip", False)
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert EdgefaceEncoder(VisionConfig(models_dir=models), INT8).fingerprint != before


def test_eval_cache_key_of_a_fused_entry_follows_its_components_flip_not_its_calibration(
    models_dir: Path, models_copy: Callable[..., Path]
) -> None:
    stages = [m.id for m in load_manifest(models_dir).models if m.role in ("detector", "landmarker")]
    models = models_copy(*stages, INT8, SFACE_INT8)
    before = EdgefaceEncoder(VisionConfig(models_dir=models), FUSED).fingerprint
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    (entry,) = [m for m in manifest["models"] if m["id"] == FUSED]
    entry.update(default_threshold=0.8, uncertain_band=0.05, margin=0.05, threshold_source="recalibrated")
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert EdgefaceEncoder(VisionConfig(models_dir=models), FUSED).fingerprint == before
    entry["components"][1]["flip"] = not entry["components"][1].get("flip", False)
    (models / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert EdgefaceEncoder(VisionConfig(models_dir=models), FUSED).fingerprint != before
