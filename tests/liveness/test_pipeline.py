"""Liveness inside every decision, end to end: the real pipeline, models and database.

A photo of an enrolled person with access is held up: he is named, not let in. The Hamilton clip's
speaker, enrolled with access, is let in once his head has moved like a head.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import LivenessConfig, VisionConfig
from edgeface.data import Decision
from edgeface.liveness import motion
from edgeface.liveness.passive import PassiveLiveness
from edgeface.liveness.policy import build_policy
from edgeface.matching.db import FaceDatabase
from edgeface.pipeline.stages import PipelineParts
from edgeface.sources import FolderSource, FrameSource, open_source
from edgeface.vision.analyzer import FaceAnalyzer
from tests.sinks import DecisionLog, offline_pipeline

from .conftest import REPLAY_FPS


@pytest.fixture(scope="module")
def vision() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as analyzer:
        yield analyzer


def run(
    source: FrameSource,
    vision: FaceAnalyzer,
    database: FaceDatabase,
    liveness: LivenessConfig | None = None,
    passive: PassiveLiveness | None = None,
) -> list[Decision]:
    parts = PipelineParts(
        liveness=build_policy(
            liveness or LivenessConfig(mode="any", window_s=3.0), passive.threshold if passive else None
        ),
        passive=passive,
    )
    log = DecisionLog()
    pipeline = offline_pipeline(source, vision, database, log, parts)
    pipeline.start()
    try:
        assert pipeline.drained.wait(120), pipeline.metrics()
    finally:
        pipeline.stop()
        assert pipeline.join(2.0) == []
    return log.decisions


def enroll(database: FaceDatabase, vision: FaceAnalyzer, name: str, paths: list[Path]) -> str:
    vectors = [vision.analyze(np.asarray(cv2.imread(str(p)), dtype=np.uint8))[0].embedding.vector for p in paths]
    return database.add_person(name, {"access": True}, vectors).id


def test_a_photo_of_an_enrolled_person_is_named_but_not_let_in(
    tmp_path: Path, samples_dir: Path, vision: FaceAnalyzer
) -> None:
    database = FaceDatabase.open(tmp_path / "faces.npz", vision.embedder.model_id, vision.embedder.dim)
    obama = enroll(database, vision, "Barack Obama", [samples_dir / "obama.jpg"])
    folder = tmp_path / "door"
    folder.mkdir()
    shutil.copy(samples_dir / "obama2.jpg", folder)  # his print, held still for 4 s
    decisions = run(FolderSource(folder, hold_frames=40, fps=REPLAY_FPS), vision, database)
    assert [(d.status, d.reason, d.person_id, d.name, d.grant) for d in decisions] == [
        ("known", "liveness_failed", obama, "Barack Obama", False)
    ]
    liveness = decisions[0].liveness
    assert liveness is not None and liveness.live is False and liveness.score < 0.1
    assert decisions[0].frame_index >= 3.0 * REPLAY_FPS  # refused once the 3 s window was watched


def test_the_hamilton_speaker_is_let_in_once_his_head_moved(
    shared_data: Path, tmp_path: Path, vision: FaceAnalyzer
) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    database = FaceDatabase.open(tmp_path / "faces.npz", vision.embedder.model_id, vision.embedder.dim)
    photos = sorted(p for p in (shared_data / "dev" / "lin_manuel_miranda").iterdir() if p.suffix in {".jpg", ".png"})
    lin = enroll(database, vision, "Lin-Manuel Miranda", photos)
    decisions = run(open_source(str(clip)), vision, database)
    his = [d for d in decisions if d.person_id == lin]
    assert [(d.status, d.reason, d.grant) for d in his] == [("known", "matched", True)]
    liveness = his[0].liveness
    assert liveness is not None and liveness.live is True
    assert liveness.checks["motion"] >= motion.MOTION_THRESHOLD


def test_with_the_passive_check_a_phone_screen_is_refused_at_once_and_the_person_let_in(
    shared_data: Path, tmp_path: Path, vision: FaceAnalyzer
) -> None:
    spoof = shared_data / "spoof"
    database = FaceDatabase.open(tmp_path / "faces.npz", vision.embedder.model_id, vision.embedder.dim)
    person = enroll(database, vision, "Sample", [spoof / "real" / "silentface_image_T1.jpg"])
    passive = PassiveLiveness(VisionConfig().models_dir)
    config = LivenessConfig(mode="passive", window_s=3.0)
    for name, expected in (
        ("fake/silentface_image_F2.jpg", ("liveness_failed", False)),
        ("real/silentface_image_T1.jpg", ("matched", True)),
    ):
        folder = tmp_path / name.replace("/", "_")
        folder.mkdir()
        shutil.copy(spoof / name, folder)
        decisions = run(FolderSource(folder, hold_frames=20, fps=REPLAY_FPS), vision, database, config, passive)
        assert [(d.status, d.reason, d.person_id, d.grant) for d in decisions] == [
            ("known", *expected[:1], person, expected[1])
        ], name
        liveness = decisions[0].liveness
        assert liveness is not None and liveness.live is expected[1] and set(liveness.checks) == {"passive"}
        # Decided on the first evaluation (three embeddings), not at the end of the window.
        assert decisions[0].frame_index < 1.5 * REPLAY_FPS
