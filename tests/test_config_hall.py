"""config/hall.example.toml: the shipped settings for a hall or stage camera load and stay consistent."""

from __future__ import annotations

from pathlib import Path

from edgeface.config import DecisionConfig, Settings, VisionConfig, load_settings
from edgeface.vision.manifest import load_manifest

HALL = Path(__file__).resolve().parent.parent / "config" / "hall.example.toml"


def test_the_hall_example_loads_and_changes_only_detection_and_decision() -> None:
    settings = load_settings(HALL)
    assert settings.vision == VisionConfig(detector="full")
    assert settings.decision == DecisionConfig(min_face_px=40, match_threshold=0.756)
    door = Settings()
    assert settings.model_copy(update={"vision": door.vision, "decision": door.decision}) == door


def test_the_hall_threshold_is_stricter_than_the_embedders_default() -> None:
    # Measured for faces down to min_face_px; a recalibrated default above it makes the file stale.
    settings = load_settings(HALL)
    default = load_manifest(settings.vision.models_dir).embedder(settings.vision.embedder).default_threshold
    assert default is not None and settings.decision.match_threshold is not None
    assert settings.decision.match_threshold > default
    assert settings.decision.min_face_px < Settings().decision.min_face_px
