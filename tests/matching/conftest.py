"""Real analyzers for the matching tests (built once per module: loading the models costs ~0.1 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeface.config import VisionConfig
from edgeface.matching.enroll import enrollment_vision
from edgeface.vision.analyzer import FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    """The enrollment analyzer (full-range detector) with the default embedder."""
    with FaceAnalyzer.from_config(enrollment_vision(VisionConfig())) as built:
        yield built


@pytest.fixture(scope="module")
def live_analyzer() -> Iterator[FaceAnalyzer]:
    """The live pipeline's default analyzer (short-range detector)."""
    with FaceAnalyzer.from_config(VisionConfig()) as built:
        yield built
