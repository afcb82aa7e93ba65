"""Re-decisions on a database change, end to end: real photos, the real models and database.

A stranger is enrolled from his own track ('enroll {track_id}') while a replay of his photo is still
in front of the camera: the recognition must follow on the same track within a second.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeface.config import VisionConfig
from edgeface.data import Decision
from edgeface.matching.db import FaceDatabase
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.stages import Pipeline
from edgeface.sources import FolderSource
from edgeface.vision.analyzer import FaceAnalyzer
from tests.sinks import offline_pipeline

FPS = 10.0


@pytest.fixture(scope="module")
def vision() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as analyzer:
        yield analyzer


def test_a_stranger_enrolled_while_at_the_door_is_recognised_on_the_same_track(
    tmp_path: Path, samples_dir: Path, vision: FaceAnalyzer
) -> None:
    database = FaceDatabase.open(tmp_path / "faces.npz", vision.embedder.model_id, vision.embedder.dim)
    folder = tmp_path / "door"
    folder.mkdir()
    shutil.copy(samples_dir / "obama2.jpg", folder / "obama2.jpg")
    decisions: list[Decision] = []
    enrolled = threading.Event()
    box: list[Pipeline] = []

    class Door:
        def decision(self, decision: Decision) -> None:
            decisions.append(decision)
            if decision.status == "unknown" and not enrolled.is_set():
                # What the 'enroll {track_id}' command does: the track's own samples become a person.
                # It runs here, on a pipeline thread, so that it lands mid-replay on any machine.
                vectors = [vector for vector, _ in box[0].samples.get(decision.track_id)]
                database.add_person("Barack Obama", {"access": True}, vectors, source="track")
                enrolled.set()

        def presence(self, change: PresenceChange) -> None:
            """Presence is not what this test watches."""

        def source_state(self, state: str, detail: str) -> None:
            """Nor the source's state."""

    pipeline = offline_pipeline(FolderSource(folder, hold_frames=40, fps=FPS), vision, database, Door())
    box.append(pipeline)
    pipeline.start()
    try:
        assert pipeline.drained.wait(60), pipeline.metrics()
    finally:
        pipeline.stop()
        assert pipeline.join(2.0) == []
    assert enrolled.is_set()
    unknown, known = decisions  # nothing else: one stranger, then the same track recognised once
    assert (unknown.status, unknown.reason) == ("unknown", "empty_database")
    assert (known.status, known.name, known.grant, known.track_id) == ("known", "Barack Obama", True, unknown.track_id)
    assert known.similarity >= known.threshold
    # Within a second of media time (measured: 1-2 frames, 0.1-0.2 s -- frames already past the embed
    # stage when the enrollment landed go by, the next one is embedded and matched).
    assert (known.frame_index - unknown.frame_index) / FPS <= 1.0
