"""Commands against a running daemon: the verbs act on the real database, spool and live tracks."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.config import load_settings
from edgeface.service.daemon import Daemon
from tests.conftest import Broker, MqttProbe

pytestmark = pytest.mark.slow

ROOT = "edgeface/gate"


class Commander:
    """Sends commands with a request id and waits for the reply on ``reply/<request_id>``."""

    def __init__(self, probe: MqttProbe) -> None:
        self.probe = probe

    def __call__(self, verb: str, payload: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        request_id = uuid.uuid4().hex[:12]
        body = {"request_id": request_id, **(payload or {})}
        self.probe.publish(f"{ROOT}/cmd/{verb}", json.dumps(body))
        return self.probe.wait_json(f"{ROOT}/reply/{request_id}", timeout=timeout)


@pytest.fixture
def gate(tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe) -> Iterator[Commander]:
    """A daemon replaying Biden (a stranger) then an empty frame, in a loop, so his track recurs."""
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copy(samples_dir / "biden.jpg", replay / "0.jpg")
    cv2.imwrite(str(replay / "1.png"), np.full((480, 640, 3), 255, np.uint8))
    settings = load_settings(
        None,
        device={"id": "gate", "state_dir": str(tmp_path / "state")},
        source={"uri": str(replay), "realtime": True, "loop": True, "fps": 10.0},
        mqtt={"host": "127.0.0.1", "port": mosquitto.port},
        decision={"cooldown_s": 0.0},
        tracker={"max_age_s": 0.2},
        service={"reload_on_change": False},
    )
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
    thread.start()
    try:
        mqtt_probe.wait_for(f"{ROOT}/status", timeout=60, predicate=lambda m: m.payload == b"online")
        yield Commander(mqtt_probe)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_enroll_list_rename_delete_over_mqtt(gate: Commander, samples_dir: Path) -> None:
    reply = gate(
        "enroll", {"name": "Barack Obama", "metadata": {"access": True}, "images": [_b64(samples_dir / "obama.jpg")]}
    )
    assert reply["ok"] is True, reply
    person = reply["person"]
    assert person["name"] == "Barack Obama"
    assert person["metadata"] == {"access": True}

    listed = gate("list", {"skip": 0, "limit": 10})
    assert listed["ok"] and listed["total"] == 1
    assert [p["id"] for p in listed["persons"]] == [person["id"]]

    renamed = gate("rename", {"person_id": person["id"], "name": "President Obama"})
    assert renamed["ok"] and renamed["person"]["name"] == "President Obama"

    duplicate = gate("enroll", {"name": "Someone Else", "images": [_b64(samples_dir / "obama2.jpg")]})
    assert duplicate["ok"] is False and duplicate["error"]["code"] == "conflict", duplicate

    deleted = gate("delete", {"person_id": person["id"]})
    assert deleted["ok"], deleted
    missing = gate("get", {"person_id": person["id"]})
    assert missing["ok"] is False and missing["error"]["code"] == "not_found"


def test_bad_images_are_refused_with_typed_errors(gate: Commander, samples_dir: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((400, 400, 3), 200, np.uint8))
    no_face = gate("enroll", {"name": "Nobody", "images": [_b64(blank)]})
    assert no_face["error"]["code"] == "no_face", no_face
    garbage = gate("enroll", {"name": "Nobody", "images": [base64.b64encode(b"\xff\xd8\xff not a jpeg").decode()]})
    assert garbage["error"]["code"] == "bad_request", garbage
    listed = gate("list")
    assert listed["total"] == 0  # nothing half-enrolled


def test_confirm_unknown_then_recognised(gate: Commander, mqtt_probe: MqttProbe) -> None:
    stranger = mqtt_probe.wait_json(f"{ROOT}/unknown", timeout=60)
    unknowns = gate("unknowns")
    assert stranger["unknown_id"] in [u["unknown_id"] for u in unknowns["unknowns"]]

    confirmed = gate("confirm", {"unknown_id": stranger["unknown_id"], "name": "Joe Biden"})
    assert confirmed["ok"], confirmed
    biden_id = confirmed["person"]["id"]

    seen = mqtt_probe.wait_json(f"{ROOT}/recognition", timeout=60, predicate=lambda e: e["person_id"] == biden_id)
    assert seen["name"] == "Joe Biden"
    again = gate("confirm", {"unknown_id": stranger["unknown_id"], "name": "Joe Biden"})
    assert again["ok"] is False and again["error"]["code"] == "not_found"


def test_reject_stores_a_negative_sample(gate: Commander, mqtt_probe: MqttProbe, samples_dir: Path) -> None:
    enrolled = gate("enroll", {"name": "Barack Obama", "images": [_b64(samples_dir / "obama.jpg")]})
    stranger = mqtt_probe.wait_json(f"{ROOT}/unknown", timeout=60)
    rejected = gate("reject", {"person_id": enrolled["person"]["id"], "unknown_id": stranger["unknown_id"]})
    assert rejected["ok"], rejected
    person = gate("get", {"person_id": enrolled["person"]["id"]})["person"]
    kinds = sorted(s["kind"] for s in person["samples"])
    assert kinds == ["negative", "positive"]


def test_status_reports_pipeline_and_broker(gate: Commander) -> None:
    status = gate("status")
    assert status["ok"] is True
    assert status["device"] == "gate"
    assert status["broker"]["connected"] is True
    assert status["source"]["state"] == "streaming"
    assert status["persons"] == 0


def test_liveness_over_mqtt_judges_every_face_and_types_bad_images(gate: Commander, shared_data: Path) -> None:
    spoof = shared_data / "spoof"
    files = [spoof / "real" / "silentface_image_T1.jpg", spoof / "fake" / "silentface_image_F1.jpg"]
    reply = gate("liveness", {"images": [_b64(f) for f in files]})
    assert reply["ok"] is True, reply
    live, printed = reply["images"]
    assert [f["live"] for f in live["faces"]] == [True]
    assert [f["live"] for f in printed["faces"]] == [False]
    assert live["faces"][0]["score"] >= reply["threshold"] > printed["faces"][0]["score"]
    assert len(live["faces"][0]["bbox"]) == 4

    blank = base64.b64encode(cv2.imencode(".png", np.full((120, 160, 3), 255, np.uint8))[1].tobytes()).decode()
    assert gate("liveness", {"images": [blank]})["images"] == [{"faces": []}]
    bad = gate("liveness", {"images": [base64.b64encode(b"\xff\xd8\xff not a jpeg").decode()]})
    assert bad["ok"] is False and bad["error"]["code"] == "bad_request", bad
    assert gate("liveness", {"images": ["%%%"]})["error"]["code"] == "bad_request"
