"""Vision fixtures: the shipped models, a shared analyzer, real photos and real multi-face scenes.

Everything heavy is session-scoped so the whole directory stays well under a minute on two cores.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.manifest import MANIFEST_NAME, load_manifest

from .support import INT8, MODELS, PARTIAL, PORTRAITS, DlibFace, ImageLoader


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The repository's models/ with its manifest (the real, shipped files)."""
    if not (MODELS / MANIFEST_NAME).is_file():
        pytest.skip("models/manifest.json is missing; run scripts/build_models.py")
    return MODELS


@pytest.fixture(scope="session")
def analyzer(models_dir: Path) -> Iterator[FaceAnalyzer]:
    """The default LiteRT chain (short-range detector, int8 embedder)."""
    with FaceAnalyzer.from_config(VisionConfig(models_dir=models_dir, embedder=INT8)) as shared:
        yield shared


@pytest.fixture(scope="session")
def two_faces(face_image: ImageLoader) -> np.ndarray:
    """A real two-person scene: Obama (larger) and Biden (smaller) side by side on one canvas."""
    left = face_image("obama.jpg")
    right = face_image("biden.jpg")[:1000]  # his head and shoulders; the full photo is mostly suit
    height = 480
    left = cv2.resize(left, (round(left.shape[1] * height / left.shape[0]), height), interpolation=cv2.INTER_AREA)
    small = 300
    right = cv2.resize(right, (round(right.shape[1] * small / right.shape[0]), small), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, left.shape[1] + right.shape[1], 3), 128, dtype=np.uint8)
    canvas[:, : left.shape[1]] = left
    canvas[90 : 90 + small, left.shape[1] :] = right
    return canvas


@pytest.fixture(scope="session")
def flat_image() -> np.ndarray:
    """A uniform grey frame: nothing to find."""
    return np.full((480, 640, 3), 127, dtype=np.uint8)


@pytest.fixture
def models_copy(models_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """Copy the manifest and the named models' files to a private directory a test may corrupt."""

    def copy(*model_ids: str) -> Path:
        dst = tmp_path / "models"
        dst.mkdir(exist_ok=True)
        shutil.copy2(models_dir / MANIFEST_NAME, dst / MANIFEST_NAME)
        manifest = load_manifest(models_dir)
        for model_id in model_ids:
            name = manifest.get(model_id).file
            shutil.copy2(models_dir / name, dst / name)
        return dst

    return copy


@pytest.fixture(scope="session")
def dlib_faces(face_image: ImageLoader) -> dict[str, DlibFace]:
    """dlib's HOG + 5-point + get_face_chip + ResNet on every sample photo (the reference pipeline)."""
    dlib = pytest.importorskip("dlib")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("face_recognition_models is not installed (extra 'reference')")
    data = Path(next(iter(spec.submodule_search_locations))) / "models"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(data / "shape_predictor_5_face_landmarks.dat"))
    resnet = dlib.face_recognition_model_v1(str(data / "dlib_face_recognition_resnet_model_v1.dat"))
    out = {}
    for name in (*PORTRAITS, *PARTIAL):
        rgb = np.ascontiguousarray(face_image(name)[..., ::-1])
        (rect,) = detector(rgb, 0)  # one large face each: no upsampling needed, which keeps this fast
        shape = predictor(rgb, rect)
        descriptor = np.asarray(resnet.compute_face_descriptor(rgb, shape), dtype=np.float64)
        out[name] = DlibFace(
            points=np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32),
            chip=np.ascontiguousarray(dlib.get_face_chip(rgb, shape, size=150, padding=0.25)[..., ::-1]),
            descriptor=descriptor / np.linalg.norm(descriptor),
        )
    return out
