"""Still-image verbs against a running daemon and a real broker: identify, verify, detect, analyze, reset.

One daemon for the module (its camera replays an empty frame); every test enrolls what it needs
through the ``enroll`` verb and asks about real photos from the samples and, when present, the dev set.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.cli import main
from edgeface.config import DatabaseConfig, VisionConfig, load_settings
from edgeface.data import BBox
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate
from edgeface.service.daemon import Daemon
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.subject import subject_order
from tests.conftest import Broker, MqttProbe

pytestmark = pytest.mark.slow

ROOT = "edgeface/still"


class Commander:
    """Sends a command with a request id and waits for the reply on ``reply/<request_id>``."""

    def __init__(self, probe: MqttProbe) -> None:
        self.probe = probe

    def __call__(self, verb: str, payload: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        request_id = uuid.uuid4().hex[:12]
        self.probe.publish(f"{ROOT}/cmd/{verb}", json.dumps({"request_id": request_id, **(payload or {})}))
        return self.probe.wait_json(f"{ROOT}/reply/{request_id}", timeout=timeout)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, mosquitto: Broker) -> Iterator[None]:
    tmp = tmp_path_factory.mktemp("still")
    replay = tmp / "replay"
    replay.mkdir()
    cv2.imwrite(str(replay / "0.png"), np.full((480, 640, 3), 255, np.uint8))
    settings = load_settings(
        None,
        device={"id": "still", "state_dir": str(tmp / "state")},
        source={"uri": str(replay), "realtime": True, "loop": True, "fps": 5.0},
        mqtt={"host": "127.0.0.1", "port": mosquitto.port},
        service={"reload_on_change": False},
        attributes={"enabled": True},
    )
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
    probe = MqttProbe(mosquitto.port, f"{ROOT}/state")
    thread.start()
    try:
        probe.wait_for(f"{ROOT}/state", timeout=90)
        probe.close()
        # Every thread of the daemon is up before the first test takes its thread inventory.
        deadline = time.monotonic() + 60
        while not any(t.name == "capture:replay" for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the daemon's capture thread did not start"
            stop.wait(0.05)
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def cmd(daemon: None, mqtt_probe: MqttProbe) -> Iterator[Commander]:
    commander = Commander(mqtt_probe)
    # Each test starts from an empty database.
    assert commander("reset", {"confirm": "still"})["ok"] is True
    yield commander


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _photo(path: Path) -> str:
    return _b64(path.read_bytes())


def _enroll(cmd: Commander, name: str, *photos: Path) -> str:
    reply = cmd("enroll", {"name": name, "images": [_photo(p) for p in photos]})
    assert reply["ok"] is True, reply
    return str(reply["person"]["id"])


def test_identify_names_enrolled_person_and_calls_stranger_unknown(cmd: Commander, samples_dir: Path) -> None:
    obama = _enroll(cmd, "Barack Obama", samples_dir / "obama.jpg")
    reply = cmd("identify", {"image": _photo(samples_dir / "obama2.jpg"), "top_k": 2})
    assert reply["ok"] is True, reply
    assert reply["face_detected"] is True and reply["faces"] == 1
    face = reply["results"][0]
    assert face["status"] == "known" and face["reason"] == "matched"
    assert face["best_match"]["person_id"] == obama
    assert face["best_match"]["similarity"] >= reply["threshold"]
    assert face["best_match"]["distance"] == pytest.approx(1 - face["best_match"]["similarity"], abs=1e-3)
    assert len(face["bbox"]) == 4 and face["quality"]["face_px"] > 0
    assert face["quality"]["aligned_by"] == "landmarks"
    assert {"decode", "detect", "align", "embed", "match", "total"} <= set(reply["processing_time_ms"])

    stranger = cmd("identify", {"image": _photo(samples_dir / "biden.jpg")})
    assert stranger["ok"] is True
    (face,) = stranger["results"]
    assert face["status"] == "unknown" and face["best_match"] is None
    assert face["top_matches"][0]["similarity"] < stranger["threshold"]
    assert "unknown_id" not in face  # nothing spooled unless asked
    assert cmd("unknowns")["unknowns"] == []


def test_identify_remember_spools_a_stranger_that_can_be_confirmed(cmd: Commander, samples_dir: Path) -> None:
    _enroll(cmd, "Barack Obama", samples_dir / "obama.jpg")
    reply = cmd("identify", {"image": _photo(samples_dir / "biden.jpg"), "remember": True})
    unknown_id = reply["results"][0]["unknown_id"]
    assert unknown_id in [u["unknown_id"] for u in cmd("unknowns")["unknowns"]]
    confirmed = cmd("confirm", {"unknown_id": unknown_id, "name": "Joe Biden"})
    assert confirmed["ok"] is True, confirmed
    again = cmd("identify", {"image": _photo(samples_dir / "biden.jpg")})
    assert again["results"][0]["best_match"]["name"] == "Joe Biden"


def test_identify_on_dev_persons(cmd: Commander, shared_data: Path) -> None:
    dev = shared_data / "dev"
    miranda = _enroll(cmd, "Lin-Manuel Miranda", *sorted((dev / "lin_manuel_miranda").iterdir())[:1])
    others = sorted((dev / "lin_manuel_miranda").iterdir())[1:]
    for photo in others:
        face = cmd("identify", {"image": _photo(photo)})["results"][0]
        assert face["best_match"] is not None and face["best_match"]["person_id"] == miranda, (photo, face)
    stranger = cmd("identify", {"image": _photo(sorted((dev / "kate_siegel").iterdir())[0])})
    assert stranger["results"][0]["status"] == "unknown"


def test_detect_counts_the_faces_of_group_photos(cmd: Commander, shared_data: Path) -> None:
    group = shared_data / "dev" / "_unlabelled"
    reply = cmd("detect", {"image": _photo(group / "dlib_2008_004176.jpg")})  # seven people in a shop
    assert reply["ok"] is True and reply["faces"] == 7
    # The photo's subject first (the prominent face nearest the centre), then the others larger first.
    image = cv2.imread(str(group / "dlib_2008_004176.jpg"))
    boxes = [BBox(x, y, x + w, y + h) for x, y, w, h in (f["bbox"] for f in reply["results"])]
    assert subject_order(boxes, image.shape[:2], [True] * 7)[0] == 0
    areas = [b.width * b.height for b in boxes]
    assert areas[1:] == sorted(areas[1:], reverse=True) and areas[0] >= 0.5 * max(areas)
    face = reply["results"][0]
    assert set(face["landmarks"]) == {"right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose"}
    assert 0 < face["score"] <= 1 and "embedding" not in face
    assert cmd("detect", {"image": _photo(group / "fr_obama_and_biden.jpg")})["faces"] == 2


def test_verify_same_and_different_on_dev_pairs(cmd: Commander, shared_data: Path) -> None:
    dev = shared_data / "dev"
    pairs = [line.split(",") for line in (dev / "pairs.csv").read_text().splitlines()[1:]]
    same = [p for p in pairs if p[2] == "1"][:3]
    different = [p for p in pairs if p[2] == "0"][:3]
    for a, b, label in same + different:
        reply = cmd("verify", {"image": _photo(dev / a), "image_b": _photo(dev / b)})
        assert reply["ok"] is True, reply
        assert reply["same"] is (label == "1"), (a, b, reply)
        assert reply["threshold"] > 0 and -1 <= reply["similarity"] <= 1


def test_verify_against_an_enrolled_person(cmd: Commander, samples_dir: Path) -> None:
    obama = _enroll(cmd, "Barack Obama", samples_dir / "obama.jpg")
    yes = cmd("verify", {"image": _photo(samples_dir / "obama3.jpg"), "person_id": obama})
    assert yes["same"] is True and yes["reason"] == "matched" and yes["person"]["person_id"] == obama
    no = cmd("verify", {"image": _photo(samples_dir / "biden.jpg"), "person_id": obama})
    assert no["same"] is False and no["reason"] == "below_threshold"
    missing = cmd("verify", {"image": _photo(samples_dir / "biden.jpg"), "person_id": "nobody"})
    assert missing["ok"] is False and missing["error"]["code"] == "not_found"


def test_analyze_returns_seven_emotion_probabilities(cmd: Commander, samples_dir: Path) -> None:
    reply = cmd("analyze", {"image": _photo(samples_dir / "obama.jpg")})
    assert reply["ok"] is True, reply
    (face,) = reply["results"]
    probabilities = face["emotion"]["probabilities"]
    assert list(probabilities) == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert face["emotion"]["dominant"] == max(probabilities, key=probabilities.__getitem__)
    assert face["quality"]["sharpness"] > 0 and "liveness" in face
    assert reply["processing_time_ms"]["emotion"] >= 0


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge size (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_each_bad_input_gets_its_typed_reply_and_changes_nothing(cmd: Commander, samples_dir: Path) -> None:
    obama = _enroll(cmd, "Barack Obama", samples_dir / "obama.jpg")
    blank = cv2.imencode(".png", np.full((240, 320, 3), 200, np.uint8))[1].tobytes()
    gif = b"GIF89a" + bytes(64)
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        ("identify", {}, "bad_request", "image"),
        ("identify", {"image": "not base64!"}, "bad_request", "base64"),
        ("identify", {"image": _b64(b"just some text, not a picture")}, "bad_request", "not an image"),
        ("identify", {"image": _b64(gif)}, "bad_request", "GIF"),
        ("identify", {"image": _b64(_png_header_only(100_000, 100_000))}, "too_large", "pixels"),
        ("identify", {"image": _photo(samples_dir / "obama.jpg"), "top_k": 0}, "bad_request", "top_k"),
        ("identify", {"image": _photo(samples_dir / "obama.jpg"), "top_k": 51}, "bad_request", "top_k"),
        ("verify", {"image": _photo(samples_dir / "obama.jpg"), "person_id": "nobody"}, "not_found", "nobody"),
        ("detect", {"image": _b64(blank)}, "no_face", "no face"),
        ("analyze", {"image": _b64(blank)}, "no_face", "no face"),
        ("reset", {"confirm": "another-device"}, "bad_request", "confirm"),
    ]
    for verb, payload, code, words in cases:
        reply = cmd(verb, payload)
        assert reply["ok"] is False, (verb, payload, reply)
        assert reply["error"]["code"] == code, (verb, reply)
        assert words.lower() in reply["error"]["message"].lower(), (verb, reply)
    no_face = cmd("identify", {"image": _b64(blank)})
    assert no_face["error"]["code"] == "no_face" and no_face["face_detected"] is False and no_face["faces"] == 0
    # Nothing changed and the daemon still answers.
    persons = cmd("list")
    assert [p["id"] for p in persons["persons"]] == [obama]
    assert cmd("unknowns")["unknowns"] == []


def test_reset_empties_the_database_and_keeps_a_backup(cmd: Commander, samples_dir: Path) -> None:
    _enroll(cmd, "Barack Obama", samples_dir / "obama.jpg")
    reply = cmd("reset", {"confirm": "still"})
    assert reply["ok"] is True and reply["persons"] == 0 and reply["backup"] is not None
    assert cmd("list")["total"] == 0
    restored = cmd("restore", {"backup_id": reply["backup"]})
    assert restored["ok"] is True and restored["persons"] == 1


def test_recognition_events_carry_emotion_only_when_enabled(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe
) -> None:
    replay = tmp_path / "replay"
    replay.mkdir()
    for i in range(4):
        (replay / f"{i}.jpg").write_bytes((samples_dir / "obama2.jpg").read_bytes())
    for enabled in (True, False):
        device = f"emotion-{str(enabled).lower()}"
        settings = load_settings(
            None,
            device={"id": device, "state_dir": str(tmp_path / device)},
            source={"uri": str(replay), "realtime": False, "loop": False},
            mqtt={"host": "127.0.0.1", "port": mosquitto.port},
            service={"reload_on_change": False},
            attributes={"enabled": enabled},
        )
        _enroll_offline(settings.db_path, samples_dir / "obama.jpg")
        stop = threading.Event()
        thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
        thread.start()
        try:
            event = mqtt_probe.wait_json(f"edgeface/{device}/recognition", timeout=90)
        finally:
            thread.join(60)  # the finite replay ends the daemon
            stop.set()
        assert not thread.is_alive()
        assert event["name"] == "Barack Obama"
        if enabled:
            assert len(event["emotion"]["probabilities"]) == 7
            assert sum(event["emotion"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
            assert "attributes" in event["stage_ms"]
        else:
            assert "emotion" not in event


def _enroll_offline(db_path: Path, photo: Path) -> None:
    with FaceAnalyzer.from_config(VisionConfig()) as analyzer:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        db = FaceDatabase.open(db_path, analyzer.model_id, analyzer.embedder.dim)
        Enroller(db, analyzer, EnrollmentGate.from_config(DatabaseConfig()), 0.95).from_images(
            "Barack Obama", [photo.read_bytes()]
        )


def test_cmd_cli_sends_a_photo_as_image(
    cmd: Commander, mosquitto: Broker, samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["cmd", "verify", "--image", str(samples_dir / "obama2.jpg"), "--image", str(samples_dir / "obama3.jpg")]
    assert main([*argv, "--port", str(mosquitto.port), "--device", "still", "--timeout", "60"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["verb"] == "verify" and reply["same"] is True


def test_identify_refuses_a_printed_or_replayed_face_by_passive_liveness(cmd: Commander, shared_data: Path) -> None:
    spoof = shared_data / "spoof"
    person = _enroll(cmd, "Live Person", spoof / "real" / "silentface_image_T1.jpg")
    real = cmd("identify", {"image": _photo(spoof / "real" / "silentface_image_T1.jpg")})["results"][0]
    assert (real["status"], real["reason"], real["liveness"]["live"]) == ("known", "matched", True)
    for attack in sorted((spoof / "fake").iterdir()):
        face = cmd("identify", {"image": _photo(attack)})["results"][0]
        assert face["liveness"]["live"] is False
        assert face["top_matches"][0]["person_id"] == person
        # Never "matched": a face that reaches the threshold is named but refused, as a camera recognition would be.
        assert face["reason"] != "matched"
        if face["status"] == "known":
            assert face["reason"] == "liveness_failed"
    analyzed = cmd("analyze", {"image": _photo(spoof / "fake" / "silentface_image_F1.jpg")})["results"][0]
    assert analyzed["liveness"]["live"] is False and 0 <= analyzed["liveness"]["score"] <= 1
