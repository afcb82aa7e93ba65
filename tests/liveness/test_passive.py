"""The passive anti-spoofing check on real images: decisions, not just scores."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.data import BBox, ImageArray
from edgeface.errors import ModelError
from edgeface.liveness.passive import DEFAULT_MODELS, MIN_FACE_PX, PassiveLiveness, crop_box
from edgeface.vision.analyzer import FaceAnalyzer

MODELS = VisionConfig().models_dir
INT8 = ("minifasnet_v2_2p7_int8", "minifasnet_v1se_4p0_int8")
# The int8 files hold learned-rounding int8 weights and compute in float32 (docs/models.md). The build checks
# them against the PyTorch rebuild on 559 held-out real crops of dev/ and LFW View 1: max |dp| 0.0153 (2.7x) and
# 0.0159 (4.0x), within the 0.02 target; float32 is within 3e-6 of PyTorch, so the target bounds the int8 file's
# drift from the float32 file on those crops, each model's and the fused score's.
INT8_HELD_OUT_DRIFT = 0.02
# On photos the build never saw (the spoof samples, the registry portraits): the same bound.
INT8_FUSED_DRIFT = 0.02


@pytest.fixture(scope="module")
def passive() -> PassiveLiveness:
    return PassiveLiveness(MODELS)


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as vision:
        yield vision


def _face(analyzer: FaceAnalyzer, path: Path) -> tuple[ImageArray, BBox]:
    image = np.asarray(cv2.imread(str(path)), dtype=np.uint8)
    faces = analyzer.locate(image)
    assert faces, path
    return image, max(faces, key=lambda f: f.detection.bbox.width).detection.bbox


def test_the_live_sample_passes_and_both_fakes_fail(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    spoof = shared_data / "spoof"
    live = passive.check(*_face(analyzer, spoof / "real" / "silentface_image_T1.jpg"), fill=None)
    assert live.live is True and live.score is not None and live.score > 0.9 and live.reason is None
    for name in ("silentface_image_F1.jpg", "silentface_image_F2.jpg"):  # a print, a phone screen
        fake = passive.check(*_face(analyzer, spoof / "fake" / name), fill=None)
        assert fake.live is False and fake.score is not None and fake.score < passive.threshold, name


def test_dev_photos_of_people_pass(shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer) -> None:
    for path in sorted((shared_data / "dev" / "barack_obama").glob("*.jpg"))[:2]:
        assert passive.check(*_face(analyzer, path), fill=None).live is True, path


def test_at_most_five_percent_of_the_dev_photos_faces_are_refused(
    shared_data: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    # The bona fide rejection target at the default threshold, on every face of every dev/ photo
    # (76 faces; 3 are refused at 0.35, docs/liveness.md).
    scores = []
    for path in sorted(p for p in (shared_data / "dev").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = np.asarray(cv2.imread(str(path)), dtype=np.uint8)
        for face in analyzer.locate(image):
            scores.append(passive.score(image, face.detection.bbox))
    judged = [s for s in scores if s is not None]
    refused = [s for s in judged if s < passive.threshold]
    assert len(judged) >= 70 and len(refused) <= 0.05 * len(judged), (len(judged), refused)


def test_a_face_too_small_for_the_crop_is_not_judged(passive: PassiveLiveness, samples_dir: Path) -> None:
    image = np.asarray(cv2.imread(str(samples_dir / "obama.jpg")), dtype=np.uint8)
    tiny = BBox(100.0, 100.0, 100.0 + MIN_FACE_PX - 1, 100.0 + MIN_FACE_PX - 1)
    result = passive.check(image, tiny, fill=None)
    assert (result.live, result.score, result.reason) == (None, None, "too_small")


def test_crops_stay_inside_the_image_and_shrink_when_it_cannot_hold_them() -> None:
    assert crop_box(640, 480, BBox(0, 0, 100, 100), 2.7) == (0, 0, 270, 270)
    x0, y0, x1, y1 = crop_box(640, 480, BBox(500, 350, 620, 470), 2.7)
    assert x0 >= 0 and y0 >= 0 and x1 <= 639 and y1 <= 479
    # A face filling the frame: the 4x crop is cut down to the whole image.
    assert crop_box(320, 240, BBox(40, 20, 280, 220), 4.0) == (16, 0, 303, 239)


def test_int8_models_agree_with_float32_on_real_faces(
    shared_data: Path, samples_dir: Path, passive: PassiveLiveness, analyzer: FaceAnalyzer
) -> None:
    int8 = PassiveLiveness(MODELS, INT8)
    paths = sorted((shared_data / "spoof").rglob("*.jpg")) + [samples_dir / n for n in ("obama.jpg", "biden.jpg")]
    for path in paths:
        image, box = _face(analyzer, path)
        a, b = passive.score(image, box), int8.score(image, box)
        assert a is not None and b is not None and abs(a - b) <= INT8_FUSED_DRIFT, (path, a, b)


def test_int8_models_agree_with_float32_on_held_out_real_crops(shared_data: Path, analyzer: FaceAnalyzer) -> None:
    # The dev/ photos the model build checks on and never calibrates with (every second one, sorted:
    # scripts/liveness_crops.py); each model's live probability, int8 file against float32 file.
    photos = sorted(p for p in (shared_data / "dev").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    faces = []
    for path in photos[1::2]:
        image = np.asarray(cv2.imread(str(path)), dtype=np.uint8)
        faces += [(image, f.detection.bbox) for f in analyzer.locate(image) if f.detection.bbox.width >= MIN_FACE_PX]
    assert len(faces) >= 30
    fused = np.zeros((len(faces), 2))
    for col, (float_id, int8_id) in enumerate(zip(DEFAULT_MODELS, INT8, strict=True)):
        pair = PassiveLiveness(MODELS, (float_id,)), PassiveLiveness(MODELS, (int8_id,))
        scores = np.array([[m.score(image, box) for m in pair] for image, box in faces], dtype=np.float64)
        drift = np.abs(scores[:, 0] - scores[:, 1])
        assert drift.max() <= INT8_HELD_OUT_DRIFT, (int8_id, drift.max())
        fused[:, col] = scores[:, 0] - scores[:, 1]
    assert np.abs(fused.mean(axis=1)).max() <= INT8_HELD_OUT_DRIFT


def test_int8_files_keep_int8_weights_and_compute_in_float32() -> None:
    # The shape that keeps the int8 files within 0.02 (docs/models.md): each convolution and matrix reads its
    # int8 weights through a DEQUANTIZE op, none through a hybrid kernel that would quantize its input to int8
    # on every invoke; depthwise filters are float32.
    from ai_edge_litert.interpreter import Interpreter

    for model_id in INT8:
        interpreter = Interpreter(model_path=str(MODELS / f"{model_id}.tflite"))
        ops = interpreter._get_ops_details()  # the only view of the graph that LiteRT's Python API offers
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        dequantized = {op["outputs"][0] for op in ops if op["op_name"] == "DEQUANTIZE"
                       and tensors[op["inputs"][0]]["dtype"] == np.int8}
        weighted = [op for op in ops if op["op_name"] in {"CONV_2D", "FULLY_CONNECTED"}]
        assert len(weighted) >= 20
        for i in (op["inputs"][1] for op in weighted):
            # weight tensors under 1,024 values the converter leaves in float32 (scripts/adaround.py)
            small = tensors[i]["dtype"] == np.float32 and int(np.prod(tensors[i]["shape"])) < 1024
            assert i in dequantized or small, (model_id, tensors[i]["name"])
        assert len(dequantized) >= 20, model_id
        depthwise = [op["inputs"][1] for op in ops if op["op_name"] == "DEPTHWISE_CONV_2D"]
        assert depthwise and all(tensors[i]["dtype"] == np.float32 and i not in dequantized for i in depthwise)


def test_missing_or_mismatched_model_files_are_named(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    (models / f"{DEFAULT_MODELS[1]}.tflite").unlink()
    with pytest.raises(ModelError, match=f"{DEFAULT_MODELS[1]}.tflite"):
        PassiveLiveness(models)
    shutil.copy(MODELS / f"{DEFAULT_MODELS[0]}.tflite", models / f"{DEFAULT_MODELS[1]}.tflite")
    with pytest.raises(ModelError, match=f"{DEFAULT_MODELS[1]}.tflite"):
        PassiveLiveness(models)


def test_a_model_that_is_not_a_liveness_model_is_refused(tmp_path: Path) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    ids = [m["id"] for m in manifest["models"] if m["role"] == "embedder"]
    with pytest.raises(ModelError, match="not a liveness model"):
        PassiveLiveness(MODELS, (ids[0],))
