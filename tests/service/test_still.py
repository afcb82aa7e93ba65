"""The still-image rules on real photos, without a broker: the pipeline's gates, thresholds and negatives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeface.config import DatabaseConfig, DecisionConfig, LivenessConfig, UnknownsConfig, VisionConfig
from edgeface.errors import CommandError
from edgeface.liveness.passive import open_passive
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate, enrollment_vision
from edgeface.matching.unknowns import UnknownSpool
from edgeface.pipeline.rules import Thresholds
from edgeface.service.still import StillImages
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.imageio import decode_image


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(enrollment_vision(VisionConfig())) as a:
        yield a


@pytest.fixture
def db(tmp_path: Path, analyzer: FaceAnalyzer, samples_dir: Path) -> FaceDatabase:
    db = FaceDatabase.open(tmp_path / "faces.npz", analyzer.model_id, analyzer.embedder.dim)
    enroller = Enroller(db, analyzer, EnrollmentGate.from_config(DatabaseConfig()), duplicate_threshold=0.95)
    enroller.from_images("Barack Obama", [(samples_dir / "obama.jpg").read_bytes()])
    return db


def _still(analyzer: FaceAnalyzer, db: FaceDatabase, **decision: object) -> StillImages:
    config = DecisionConfig(**decision)  # type: ignore[arg-type]
    return StillImages(analyzer, db, config, Thresholds.resolve(config, analyzer.embedder.default_threshold))


def test_a_negative_sample_turns_a_match_into_unknown(
    analyzer: FaceAnalyzer, db: FaceDatabase, samples_dir: Path
) -> None:
    still = _still(analyzer, db)
    photo = (samples_dir / "obama2.jpg").read_bytes()
    face = still.identify(photo)["results"][0]
    assert face["status"] == "known"
    obama = face["best_match"]["person_id"]
    (analyzed,) = analyzer.analyze(decode_image(photo))
    db.add_negative(obama, analyzed.embedding.vector)
    after = still.identify(photo)["results"][0]
    assert (after["status"], after["reason"], after["best_match"]) == ("unknown", "negative_match", None)


def test_a_face_failing_a_gate_is_uncertain_and_never_named(
    analyzer: FaceAnalyzer, db: FaceDatabase, samples_dir: Path
) -> None:
    face = _still(analyzer, db, min_face_px=2000).identify((samples_dir / "obama2.jpg").read_bytes())["results"][0]
    assert (face["status"], face["reason"], face["best_match"]) == ("uncertain", "too_small", None)
    assert face["top_matches"][0]["name"] == "Barack Obama"


def test_a_request_threshold_applies_to_that_request_only(
    analyzer: FaceAnalyzer, db: FaceDatabase, samples_dir: Path
) -> None:
    still = _still(analyzer, db)
    photo = (samples_dir / "obama2.jpg").read_bytes()
    strict = still.identify(photo, threshold=0.999)
    assert strict["threshold"] == 0.999 and strict["results"][0]["status"] != "known"
    assert still.identify(photo)["results"][0]["status"] == "known"
    with pytest.raises(CommandError, match="top_k"):
        still.identify(photo, top_k=0)


def test_remember_spools_the_stranger(
    analyzer: FaceAnalyzer, db: FaceDatabase, samples_dir: Path, tmp_path: Path
) -> None:
    spool = UnknownSpool.from_config(
        tmp_path / "spool", UnknownsConfig(), 0.924, analyzer.model_id, keep_snapshots=False
    )
    config = DecisionConfig()
    still = StillImages(
        analyzer, db, config, Thresholds.resolve(config, analyzer.embedder.default_threshold), spool=spool
    )
    photo = (samples_dir / "biden.jpg").read_bytes()
    assert "unknown_id" not in still.identify(photo)["results"][0]
    unknown_id = still.identify(photo, remember=True)["results"][0]["unknown_id"]
    assert [c.id for c in spool.list()] == [unknown_id]


def test_a_matched_face_judged_not_live_is_liveness_failed(
    analyzer: FaceAnalyzer, tmp_path: Path, shared_data: Path
) -> None:
    spoof = shared_data / "spoof"
    db = FaceDatabase.open(tmp_path / "spoof.npz", analyzer.model_id, analyzer.embedder.dim)
    enroller = Enroller(db, analyzer, EnrollmentGate.from_config(DatabaseConfig()), duplicate_threshold=0.95)
    enroller.from_images("Live Person", [(spoof / "real" / "silentface_image_T1.jpg").read_bytes()])
    config = DecisionConfig()
    th = Thresholds.resolve(config, analyzer.embedder.default_threshold)
    passive = open_passive(LivenessConfig(), VisionConfig())
    still = StillImages(analyzer, db, config, th, liveness=passive, liveness_decides=True)
    # A low request threshold makes the print match, so the liveness rule is what refuses it.
    face = still.identify((spoof / "fake" / "silentface_image_F1.jpg").read_bytes(), threshold=0.3)["results"][0]
    assert (face["status"], face["reason"], face["liveness"]["live"]) == ("known", "liveness_failed", False)
    reporting = StillImages(analyzer, db, config, th, liveness=passive, liveness_decides=False)
    face = reporting.identify((spoof / "fake" / "silentface_image_F1.jpg").read_bytes(), threshold=0.3)["results"][0]
    assert (face["reason"], face["liveness"]["live"]) == ("matched", False)  # reported, not deciding


def test_verify_compares_the_photos_subjects_not_a_larger_bystander(
    analyzer: FaceAnalyzer, db: FaceDatabase, shared_data: Path
) -> None:
    # Both photos show Kosuke Kitajima in the middle; the first also shows a larger face cut off by its edge.
    images = shared_data / "lfw" / "images" / "Kosuke_Kitajima"
    photo, other = (
        (images / "Kosuke_Kitajima_0002.jpg").read_bytes(),
        (images / "Kosuke_Kitajima_0001.jpg").read_bytes(),
    )
    reply = _still(analyzer, db).verify(photo, other=other)
    assert reply["same"] is True, reply
    box = reply["bbox"]
    assert abs(box[0] + box[2] / 2 - 125) < 40 and abs(box[1] + box[3] / 2 - 125) < 40
    assert _still(analyzer, db).detect(photo)["results"][0]["bbox"] == box
