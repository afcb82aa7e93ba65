"""Enrollment on real photos with the real models: gates, duplicates, all-or-nothing, import, rebuild."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import DatabaseConfig, VisionConfig
from edgeface.data import Quality
from edgeface.errors import CommandError, DatabaseError
from edgeface.matching import store
from edgeface.matching.bulk import import_folder, person_folders, rebuild
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate, enrollment_vision
from edgeface.matching.matcher import match
from edgeface.vision.analyzer import FaceAnalyzer

LoadImage = Callable[[str], np.ndarray]
GATE = EnrollmentGate.from_config(DatabaseConfig())  # 80 px, sharpness 30, yaw 30 degrees


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = left.shape[0]
    return np.hstack([left, cv2.resize(right, (round(right.shape[1] * h / right.shape[0]), h))])


@pytest.fixture
def db(tmp_path: Path, analyzer: FaceAnalyzer) -> FaceDatabase:
    return FaceDatabase.open(
        tmp_path / "faces.npz", analyzer.model_id, analyzer.embedder.dim, backups=3, keep_images=True
    )


@pytest.fixture
def enroller(db: FaceDatabase, analyzer: FaceAnalyzer) -> Enroller:
    return Enroller(db, analyzer, GATE, analyzer.embedder.default_threshold)


def refused(call: Callable[[], object], code: str) -> str:
    with pytest.raises(CommandError) as err:
        call()
    assert err.value.code == code, err.value.message
    return err.value.message


def test_enroll_then_add_by_name_and_by_id(
    enroller: Enroller, db: FaceDatabase, samples_dir: Path, face_image: LoadImage
) -> None:
    first = enroller.from_images("Barack", [(samples_dir / "obama.jpg").read_bytes()], {"access": True})
    assert first.created and len(first.sample_ids) == 1
    sample = first.person.samples[0]
    assert sample.source == "image" and sample.has_chip and sample.quality is not None
    assert sample.quality.face_px > 200 and abs(sample.quality.yaw) < 10
    chip = cv2.imdecode(np.frombuffer(db.chip(sample.id) or b"", np.uint8), cv2.IMREAD_COLOR)
    size = enroller.analyzer.aligner.size  # the default embedder's chip (192 px for the fused one)
    assert chip.shape == (size, size, 3)

    # the same name (any case) grows the same person, merging metadata
    second = enroller.from_images("barack", [face_image("obama2.jpg")], {"badge": 1})
    assert not second.created and second.person.id == first.person.id
    assert second.person.positives == 2 and second.person.metadata == {"access": True, "badge": 1}
    third = enroller.from_images(None, [face_image("obama3.jpg")], person_id=first.person.id)
    assert third.person.positives == 3 and db.list()[0] == 1
    assert third.to_json()["person"]["name"] == "Barack"
    message = refused(lambda: enroller.from_images("Barack", [face_image("obama3.jpg")]), "conflict")
    assert message.startswith("image 0 is already enrolled for 'Barack' (similarity 1.000)")

    refused(
        lambda: enroller.from_images("Michelle", [face_image("obama3.jpg")], person_id=first.person.id), "bad_request"
    )
    refused(lambda: enroller.from_images(None, [face_image("obama3.jpg")], person_id="nope"), "not_found")
    refused(lambda: enroller.from_images(None, [face_image("obama3.jpg")]), "bad_request")
    refused(lambda: enroller.from_images("Barack", []), "bad_request")

    joe = enroller.from_images("Joe", [face_image("biden.jpg")])  # biden vs obama ~0.81, far below the threshold
    assert joe.created
    best = match(db.snapshot(), enroller.analyzer.analyze(face_image("obama2.jpg"))[0].embedding.vector, 2)[0]
    assert best.best is not None and best.best.name == "Barack" and best.candidates[1].name == "Joe"


def test_a_face_of_another_person_is_a_conflict_unless_forced(
    enroller: Enroller, db: FaceDatabase, face_image: LoadImage
) -> None:
    barack = enroller.from_images("Barack", [face_image("obama.jpg")]).person
    message = refused(lambda: enroller.from_images("Impostor", [face_image("obama2.jpg")]), "conflict")
    assert "Barack" in message and barack.id in message and "image 0" in message and "force" in message
    assert db.list()[0] == 1
    forced = enroller.from_images("Impostor", [face_image("obama2.jpg")], force=True)
    assert forced.created and db.list()[0] == 2


def test_two_people_in_one_photo_are_refused(enroller: Enroller, db: FaceDatabase, face_image: LoadImage) -> None:
    pair = side_by_side(face_image("obama.jpg"), face_image("biden.jpg"))
    message = refused(lambda: enroller.from_images("Barack", [face_image("obama2.jpg"), pair]), "multiple_faces")
    assert message.startswith("image 1: 2 faces")
    assert db.list()[0] == 0 and db.generation == 1  # all or nothing: image 0 was fine but is not stored


def test_the_short_range_detector_would_miss_the_second_face(
    live_analyzer: FaceAnalyzer, face_image: LoadImage
) -> None:
    """Why enrollment analyses photos with the full-range detector (enroll.enrollment_vision)."""
    pair = side_by_side(face_image("obama.jpg"), face_image("biden.jpg"))
    assert len(live_analyzer.analyze(pair)) == 1
    assert enrollment_vision(VisionConfig()).detector == "full"


def test_a_photo_without_a_face_is_refused(enroller: Enroller, face_image: LoadImage) -> None:
    suit = face_image("obama.jpg")[650:, :]  # the lower half of a real photo: suit and hands, no face
    assert refused(lambda: enroller.from_images("Barack", [suit]), "no_face") == "image 0: no face found"


def test_blurred_small_and_turned_faces_are_low_quality(enroller: Enroller, face_image: LoadImage) -> None:
    obama = face_image("obama.jpg")
    blurred = cv2.GaussianBlur(obama, (0, 0), 8)
    message = refused(lambda: enroller.from_images("Barack", [obama, blurred]), "low_quality")
    assert message.startswith("image 1: sharpness is") and "below the 30.0 minimum" in message
    small = cv2.resize(obama, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    message = refused(lambda: enroller.from_images("Barack", [small]), "low_quality")
    assert "px, below the 80 px minimum" in message
    # No sample photo is turned past 30 degrees, so the yaw rule is checked on a measured Quality.
    turned = Quality(face_px=200, sharpness=100, yaw=-42.0, pitch=0)
    with pytest.raises(CommandError, match="turned 42 degrees, beyond the 30 degree limit"):
        GATE.check(turned, "image 3")


def test_partial_face_is_accepted(enroller: Enroller, face_image: LoadImage) -> None:
    """obama_partial_face.jpg cuts the photo at his cheek, but the detector and FaceMesh still find the
    whole face (about 210 px, frontal, sharp), and its embedding is ~0.98 similar to obama.jpg's; it is
    a good reference sample, so the gates accept it -- and it is recognised as the same person."""
    first = enroller.from_images("Barack", [face_image("obama_partial_face.jpg")])
    quality = first.person.samples[0].quality
    assert quality is not None and quality.face_px > 150 and abs(quality.yaw) < 15
    again = enroller.from_images("Barack", [face_image("obama.jpg")])
    assert again.person.id == first.person.id


def test_undecodable_and_oversized_images(enroller: Enroller) -> None:
    assert "image 0:" in refused(lambda: enroller.from_images("X", [b"not an image"]), "bad_request")
    # a PNG header announcing 100000 x 100000 pixels is refused before decoding
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    refused(lambda: enroller.from_images("X", [header]), "too_large")


def test_from_vectors_for_tracks_and_confirmed_unknowns(
    enroller: Enroller, db: FaceDatabase, face_image: LoadImage
) -> None:
    vectors = np.stack(
        [enroller.analyzer.analyze(face_image(n))[0].embedding.vector for n in ("obama.jpg", "obama2.jpg")]
    )
    result = enroller.from_vectors("Barack", vectors, {"via": "confirm"}, source="unknown")
    assert result.created and [s.source for s in result.person.samples] == ["unknown", "unknown"]
    assert result.person.samples[0].quality is None and not result.person.samples[0].has_chip
    message = refused(lambda: enroller.from_vectors("Other", vectors[:1]), "conflict")
    assert message.startswith("sample 0 matches 'Barack'")
    refused(lambda: enroller.from_vectors("Other", np.zeros((0, 128), np.float32)), "bad_request")
    refused(lambda: enroller.from_vectors("Other", np.ones((1, 64), np.float32)), "bad_request")


def test_an_analyzer_of_another_model_is_refused(tmp_path: Path, analyzer: FaceAnalyzer, face_image: LoadImage) -> None:
    other = FaceDatabase.open(tmp_path / "other.npz", "another_model", 128)
    enroller = Enroller(other, analyzer, GATE, 0.9)
    with pytest.raises(DatabaseError, match="another_model"):
        enroller.from_images("Barack", [face_image("obama.jpg")])


def test_import_folder(
    tmp_path: Path, enroller: Enroller, db: FaceDatabase, samples_dir: Path, face_image: LoadImage
) -> None:
    root = tmp_path / "people"
    (root / "Barack").mkdir(parents=True)
    (root / "Joe").mkdir()
    (root / ".hidden").mkdir()
    for name in ("obama.jpg", "obama2.jpg"):
        (root / "Barack" / name).write_bytes((samples_dir / name).read_bytes())
    (root / "Barack" / "notes.txt").write_text("not an image")
    (root / "Barack" / "suit.jpg").write_bytes(jpeg(face_image("obama.jpg")[650:, :]))
    (root / "Joe" / "biden.jpg").write_bytes((samples_dir / "biden.jpg").read_bytes())
    (root / "Joe" / "two.jpg").write_bytes(jpeg(side_by_side(face_image("biden.jpg"), face_image("obama.jpg"))))
    (root / "obama3.jpg").write_bytes((samples_dir / "obama3.jpg").read_bytes())  # a loose file: person "obama3"
    assert [(n, len(p)) for n, p in person_folders(root)] == [("Barack", 3), ("Joe", 2), ("obama3", 1)]

    progress: list[tuple[int, int, str]] = []
    summary = import_folder(enroller, root, lambda *a: progress.append(a))
    assert [p[0] for p in progress] == list(range(1, 7)) and all(p[1] == 6 for p in progress)
    assert summary.images == 6 and summary.faces_added == 3
    assert summary.persons_created == ("Barack", "Joe") and summary.persons_updated == ()
    codes = sorted((r.code, r.item) for r in summary.rejected)
    assert codes == [("conflict", "obama3"), ("multiple_faces", "Joe/two.jpg"), ("no_face", "Barack/suit.jpg")]
    assert summary.to_json()["rejected"][0]["reason"]
    assert db.find_by_name("Barack").positives == 2  # type: ignore[union-attr]
    assert all(s.source == "import" for s in db.find_by_name("Joe").samples)  # type: ignore[union-attr]

    again = import_folder(enroller, root)  # a second run finds every photo already enrolled
    assert again.faces_added == 0 and again.persons_updated == ()
    assert sum("already enrolled" in r.reason for r in again.rejected) == 3
    forced = import_folder(enroller, root, force=True)  # force stores duplicates and the look-alike
    assert forced.persons_updated == ("Barack", "Joe") and forced.persons_created == ("obama3",)
    refused(lambda: import_folder(enroller, tmp_path / "missing"), "bad_request")


def test_rebuild_re_embeds_stored_chips_for_a_new_model(
    tmp_path: Path, enroller: Enroller, db: FaceDatabase, face_image: LoadImage
) -> None:
    barack = enroller.from_images("Barack", [face_image("obama.jpg"), face_image("obama2.jpg")]).person
    joe = enroller.from_images("Joe", [face_image("biden.jpg")]).person
    db.add_negative(barack.id, enroller.analyzer.analyze(face_image("biden.jpg"))[0].embedding.vector)
    ghost = db.add_person("Ghost", None, np.eye(db.dim, dtype=np.float32)[:1])  # no chip: cannot be re-embedded

    with FaceAnalyzer.from_config(enrollment_vision(VisionConfig(embedder="dlib_resnet_v1_float32"))) as float32:
        seen: list[int] = []
        summary = rebuild(db.path, float32, float32.model_id, 128, progress_cb=lambda d, t, _: seen.append(d))
        probe = float32.analyze(face_image("obama3.jpg"))[0].embedding.vector
    assert seen == [1, 2, 3, 4, 5]
    assert summary.model_id == "dlib_resnet_v1_float32" and summary.persons == 2 and summary.samples == 3
    assert summary.lost_persons == ("Ghost",) and len(summary.lost_samples) == 2  # the negative and Ghost's

    with pytest.raises(DatabaseError, match="db rebuild"):
        FaceDatabase.open(db.path, "dlib_resnet_v1_int8", 128)
    rebuilt = FaceDatabase.open(db.path, "dlib_resnet_v1_float32", 128)
    assert [p.id for p in rebuilt.list()[1]] == [barack.id, joe.id]  # ids survive, so clients' references do
    assert [s.id for s in rebuilt.get(barack.id).samples] == [s.id for s in barack.samples]
    result = match(rebuilt.snapshot(), probe, 2)[0]
    assert result.best is not None and result.best.name == "Barack" and result.best.similarity > 0.9
    assert rebuilt.backups()[0].model_id == VisionConfig().embedder  # the old database stays restorable
    assert store.read_chip(db.path, barack.samples[0].id) is not None
    with pytest.raises(CommandError):
        rebuilt.get(ghost.id)


def test_rebuild_turns_a_dlib_database_into_the_default_fused_one(
    tmp_path: Path, analyzer: FaceAnalyzer, face_image: LoadImage
) -> None:
    """Databases of earlier releases hold 150 px dlib chips; the fused default derives its chip from them."""
    dlib_vision = enrollment_vision(VisionConfig(embedder="dlib_resnet_v1_int8"))
    with FaceAnalyzer.from_config(dlib_vision) as dlib:
        old = FaceDatabase.open(tmp_path / "faces.npz", dlib.model_id, 128, backups=3, keep_images=True)
        dlib_enroller = Enroller(old, dlib, GATE, dlib.embedder.default_threshold)
        barack = dlib_enroller.from_images("Barack", [face_image("obama.jpg"), face_image("obama2.jpg")]).person
        dlib_enroller.from_images("Joe", [face_image("biden.jpg")])
    assert analyzer.model_id == VisionConfig().embedder != "dlib_resnet_v1_int8"
    with pytest.raises(DatabaseError, match=r"faces\.npz holds dlib_resnet_v1_int8 .*edgeface db rebuild"):
        FaceDatabase.open(old.path, analyzer.model_id, analyzer.embedder.dim)

    summary = rebuild(old.path, analyzer, analyzer.model_id, analyzer.embedder.dim)
    assert (summary.persons, summary.samples, summary.lost_samples) == (2, 3, ())
    rebuilt = FaceDatabase.open(old.path, analyzer.model_id, analyzer.embedder.dim)
    probe = analyzer.analyze(face_image("obama3.jpg"))[0].embedding.vector
    fresh = analyzer.analyze(face_image("obama.jpg"))[0].embedding.vector
    result = match(rebuilt.snapshot(), probe, 2)[0]
    threshold = analyzer.embedder.default_threshold
    assert result.best is not None and result.best.person_id == barack.id and result.best.similarity > threshold
    assert len(result.candidates) == 2 and result.candidates[1].similarity < threshold
    # The chip derived from dlib's lacks SFace's forehead rows; it still lands close to a fresh enrollment.
    assert match(rebuilt.snapshot(), fresh, 1)[0].candidates[0].similarity > 0.9
