"""Two real daemons on two bridged brokers: a person enrolled at door A is recognised at door B."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeface.cli import main
from edgeface.cli.cmd import Target, send_command
from edgeface.config import load_settings
from edgeface.mqtt.topics import Topics
from edgeface.service.daemon import Daemon
from tests.conftest import MqttProbe
from tests.fleet.conftest import Bridged, wait_until

pytestmark = pytest.mark.slow


@contextmanager
def _daemon(root: Path, device_id: str, port: int, key_file: Path, source: dict[str, Any]) -> Iterator[None]:
    settings = load_settings(
        None,
        device={"id": device_id, "state_dir": str(root)},
        source=source,
        mqtt={"host": "127.0.0.1", "port": port, "reconnect_max_s": 1},
        service={"reload_on_change": False},
        fleet={"enabled": True, "id": "site", "key_file": str(key_file)},
    )
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name=f"test-daemon:{device_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def _command(port: int, device_id: str, verb: str, payload: dict[str, Any]) -> dict[str, Any]:
    target = Target("127.0.0.1", port, Topics("edgeface", device_id))
    reply = send_command(target, verb, {"request_id": f"r-{time.monotonic_ns()}", **payload}, 30)
    assert reply is not None and reply["ok"], reply
    return reply


def test_enrolled_at_one_door_recognised_at_the_other(
    bridged: Bridged, tmp_path: Path, key_file: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    photo = shared_data / "dev" / "lin_manuel_miranda" / "fr_lin-manuel-miranda.png"
    if not clip.is_file() or not photo.is_file():
        pytest.skip("hamilton clip or its performer's photo absent")
    idle = tmp_path / "idle"
    idle.mkdir()
    cv2.imwrite(str(idle / "blank.png"), np.full((360, 640, 3), 255, np.uint8))
    probe = MqttProbe(bridged.b.port, "edgeface/door-b/#")
    probe_a = MqttProbe(bridged.a.port, "edgeface/door-a/status")
    a_source = {"uri": str(idle), "realtime": True, "loop": True, "fps": 2.0}
    b_source = {"uri": str(clip), "realtime": True, "loop": True, "fps": 10.0}
    try:
        with (
            _daemon(tmp_path / "a", "door-a", bridged.a.port, key_file, a_source),
            _daemon(tmp_path / "b", "door-b", bridged.b.port, key_file, b_source),
        ):
            probe.wait_for("edgeface/door-b/status", timeout=60, predicate=lambda m: m.payload == b"online")
            probe_a.wait_for("edgeface/door-a/status", timeout=60, predicate=lambda m: m.payload == b"online")
            image = base64.b64encode(photo.read_bytes()).decode()
            enrolled = _command(
                bridged.a.port, "door-a", "enroll", {"name": "Lin-Manuel Miranda", "images": [image], "force": True}
            )
            person_id = enrolled["person"]["id"]
            started = time.monotonic()
            seen = probe.wait_json(
                "edgeface/door-b/recognition", timeout=90, predicate=lambda e: e["person_id"] == person_id
            )
            print(f"recognised at door B {time.monotonic() - started:.1f}s after the enrollment at door A")
            assert seen["name"] == "Lin-Manuel Miranda" and seen["device"] == "door-b"

            # The CLI reads door B's replication state over MQTT.
            code = main(["fleet", "status", "--port", str(bridged.b.port), "--device", "door-b"])
            out = capsys.readouterr().out
            assert code == 0, out
            rows = dict(line.split(None, 1) for line in out.splitlines() if line and not line.startswith("last"))
            assert rows["persons"] == "1" and rows["pending"] == "0" and rows["refused"] == "0", out
            assert "in sync      1" in out, out

            # Edits at door B come back to door A.
            _command(bridged.b.port, "door-b", "rename", {"person_id": person_id, "name": "Lin-Manuel M."})
            wait_until(
                lambda: (
                    _command(bridged.a.port, "door-a", "get", {"person_id": person_id})["person"]["name"]
                    == "Lin-Manuel M."
                ),
                timeout=30,
                what="rename at door A",
            )
            _command(bridged.b.port, "door-b", "delete", {"person_id": person_id})
            wait_until(
                lambda: _command(bridged.a.port, "door-a", "list", {})["total"] == 0, timeout=30, what="delete at A"
            )
            status = _command(bridged.a.port, "door-a", "fleet_status", {})["fleet"]
            assert status["deleted"] == 1 and status["tombstones"] == 1 and status["refused"] == 0
    finally:
        probe.close()
        probe_a.close()
