"""``edgeface eval --face-px``: the same photos shrunk to a face size the size gate compares against."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.cli import main
from edgeface.config import VisionConfig
from edgeface.tools.encoders import EdgefaceEncoder, SmallFaceEncoder
from edgeface.vision.quality import face_size

INT8 = "dlib_resnet_v1_int8"


@pytest.fixture(scope="module")
def encoder() -> EdgefaceEncoder:
    return EdgefaceEncoder(VisionConfig(detector="full"), INT8)


def _largest_face_px(encoder: EdgefaceEncoder, image: np.ndarray) -> float:
    detections = encoder.analyzer.detect(image)
    return face_size(max(detections, key=lambda d: d.bbox.width * d.bbox.height))


@pytest.mark.parametrize("face_px", [40, 64])
def test_a_photo_is_shrunk_to_the_face_size(
    encoder: EdgefaceEncoder, face_image: Callable[[str], np.ndarray], face_px: int
) -> None:
    image = face_image("obama.jpg")
    assert _largest_face_px(encoder, image) > 2 * face_px
    small = SmallFaceEncoder(encoder, face_px).shrink(image)
    assert small.shape[0] < image.shape[0] and small.shape[1] < image.shape[1]
    # Detected again on the small image, the face is the asked size (the detector's box moves by a pixel or two).
    assert abs(_largest_face_px(encoder, small) - face_px) <= 0.1 * face_px
    faces = SmallFaceEncoder(encoder, face_px).encode(image)
    assert any(f.vector is not None for f in faces)


def test_a_smaller_face_or_no_face_is_left_as_it_is(
    encoder: EdgefaceEncoder, face_image: Callable[[str], np.ndarray]
) -> None:
    image = face_image("obama.jpg")
    assert SmallFaceEncoder(encoder, 2000).shrink(image) is image  # never enlarged
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert SmallFaceEncoder(encoder, 40).shrink(blank) is blank
    assert SmallFaceEncoder(encoder, 40).fingerprint != SmallFaceEncoder(encoder, 44).fingerprint != encoder.fingerprint


def test_eval_face_px_runs_the_pipeline_on_small_faces(persons_dir: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "small.json"
    argv = ["eval", str(persons_dir), "--models", INT8, "--cache", str(cache), "--quiet", "--json", str(out)]
    assert main(argv) == 0
    # The vectors of the full-size photos are not reused for the small ones, but the small ones are.
    for cached in (0, 4):
        assert main([*argv, "--face-px", "48"]) == 0
        (model,) = json.loads(out.read_text())["models"]
        assert model["cached_images"] == cached
        assert model["images"] == 4 and model["with_face"] == 4


def test_eval_face_px_refuses_what_it_cannot_measure(persons_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(persons_dir), "--models", INT8, "--face-px", "4", "--quiet"]) == 2
    assert "--face-px must be 8..2000" in capsys.readouterr().err
    assert main(["eval", str(persons_dir), "--models", f"{INT8},dlib", "--face-px", "40", "--quiet"]) == 3
    assert "drop dlib from --models" in capsys.readouterr().err


def test_shrinking_uses_the_capture_threads_interpolation(
    encoder: EdgefaceEncoder, face_image: Callable[[str], np.ndarray]
) -> None:
    image = face_image("biden.jpg")
    small = SmallFaceEncoder(encoder, 48).shrink(image)
    expected = cv2.resize(image, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.array_equal(small, expected)
