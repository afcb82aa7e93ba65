"""The daemon's models: the command thread's full-range detector is loaded at its first request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.config import load_settings
from edgeface.errors import ModelError
from edgeface.service.models import Models, OnDemandDetector
from edgeface.vision.backends import create_detector

from ..vision.support import ImageLoader


def test_command_detector_loads_on_first_request_and_finds_what_the_full_range_model_finds(
    tmp_path: Path, face_image: ImageLoader
) -> None:
    settings = load_settings(environ={}, device={"state_dir": str(tmp_path)})
    models = Models.load(settings)
    try:
        detector = models.enroll_analyzer.detector
        assert isinstance(detector, OnDemandDetector) and not detector.loaded
        assert models.enroll_analyzer.embedder is models.analyzer.embedder  # one copy of the large models
        image = face_image("obama.jpg")
        got = models.enroll_analyzer.detect(image)
        assert detector.loaded
        vision = settings.vision
        eager = create_detector("litert", "full", vision.models_dir, vision.min_detection_score, vision.max_faces)
        want = eager.detect(image)
        assert len(got) == len(want) == 1
        assert np.array_equal(got[0].keypoints, want[0].keypoints) and got[0].bbox == want[0].bbox
        assert models.enroll_analyzer.detect(image)[0].bbox == want[0].bbox  # loaded once, then reused
    finally:
        models.close()
    assert not detector.loaded


def test_a_damaged_full_range_model_still_stops_the_start(tmp_path: Path) -> None:
    source = load_settings(environ={}).vision.models_dir
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    for path in source.iterdir():
        (models_dir / path.name).symlink_to(path)
    damaged = models_dir / "face_detection_full_range_sparse.tflite"
    damaged.unlink()
    damaged.write_bytes((source / damaged.name).read_bytes()[:-16])
    settings = load_settings(environ={}, device={"state_dir": str(tmp_path)}, vision={"models_dir": str(models_dir)})
    with pytest.raises(ModelError, match=str(damaged)):
        Models.load(settings)
