"""The daemon end to end: real photos replayed through `edgeface run` to a real Mosquitto broker."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.config import DatabaseConfig, Settings, VisionConfig, load_settings
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate
from edgeface.service.daemon import Daemon
from edgeface.vision.analyzer import FaceAnalyzer
from tests.conftest import REPO, Broker, MqttProbe, replay_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as a:
        yield a


def _enroll(state_dir: Path, analyzer: FaceAnalyzer, name: str, photo: Path, metadata: dict[str, object]) -> str:
    db = FaceDatabase.open(state_dir / "faces.npz", analyzer.model_id, analyzer.embedder.dim)
    enroller = Enroller(db, analyzer, EnrollmentGate.from_config(DatabaseConfig()), duplicate_threshold=0.95)
    result = enroller.from_images(name, [photo.read_bytes()], metadata)
    return result.person.id


def _settings(state_dir: Path, port: int, replay: Path, **sections: dict[str, object]) -> Settings:
    base: dict[str, dict[str, object]] = {
        "device": {"id": "door", "state_dir": str(state_dir)},
        "source": {"uri": str(replay), "realtime": False, "loop": False},
        "mqtt": {"host": "127.0.0.1", "port": port},
        "service": {"reload_on_change": False},
    }
    for key, values in sections.items():
        base.setdefault(key, {}).update(values)
    return load_settings(None, **base)


def test_replay_recognises_enrolled_person_and_reports_stranger(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    obama_id = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {"access": True})
    replay = replay_folder(tmp_path, samples_dir, "obama2.jpg", "biden.jpg")
    stop = threading.Event()
    daemon = Daemon(_settings(tmp_path, mosquitto.port, replay), None, stop)
    thread = threading.Thread(target=daemon.run, name="test-daemon")
    thread.start()
    try:
        online = mqtt_probe.wait_for("edgeface/door/status", predicate=lambda m: m.payload == b"online")
        assert online.retain or online.payload == b"online"
        seen = mqtt_probe.wait_json("edgeface/door/recognition", timeout=60)
        assert seen["person_id"] == obama_id
        assert seen["name"] == "Barack Obama"
        assert seen["grant"] is True
        assert seen["reason"] == "matched"
        assert seen["similarity"] >= seen["threshold"]
        assert seen["device"] == "door"
        assert len(seen["bbox"]) == 4
        stranger = mqtt_probe.wait_json("edgeface/door/unknown", timeout=60)
        assert stranger["unknown_id"].startswith("u-")
        assert stranger["best_match"] is None or stranger["similarity"] < seen["threshold"]
        # Announced 'off' at start (enrolled, not seen yet), then 'on'.
        presence = mqtt_probe.wait_for(f"edgeface/door/presence/{obama_id}")
        assert presence.payload == b"off"
        mqtt_probe.wait_for(f"edgeface/door/presence/{obama_id}", predicate=lambda m: m.payload == b"on")
    finally:
        thread.join(60)  # a finite replay ends the daemon by itself
        stop.set()
    assert not thread.is_alive()
    offline = mqtt_probe.wait_for("edgeface/door/status", predicate=lambda m: m.payload == b"offline")
    assert offline.payload == b"offline"


def test_database_edit_on_disk_is_picked_up_without_restart(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    replay = tmp_path / "live"
    replay.mkdir()
    shutil.copy(samples_dir / "biden.jpg", replay / "0.jpg")
    # An empty frame between sightings ends the track, so each loop is a new visit to the door.
    cv2.imwrite(str(replay / "1.png"), np.full((480, 640, 3), 255, np.uint8))
    settings = _settings(
        tmp_path,
        mosquitto.port,
        replay,
        source={"realtime": True, "loop": True, "fps": 10.0},
        service={"reload_on_change": True},
        decision={"cooldown_s": 0.0},
        tracker={"max_age_s": 0.2},
    )
    FaceDatabase.open(settings.db_path, analyzer.model_id, analyzer.embedder.dim)  # empty DB
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
    thread.start()
    try:
        mqtt_probe.wait_json("edgeface/door/unknown", timeout=60)
        biden_id = _enroll(tmp_path, analyzer, "Joe Biden", samples_dir / "biden.jpg", {})
        seen = mqtt_probe.wait_json(
            "edgeface/door/recognition", timeout=60, predicate=lambda e: e["person_id"] == biden_id
        )
        assert seen["name"] == "Joe Biden"
        assert seen["grant"] is False  # no access metadata
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeface", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _config_file(tmp_path: Path, port: int, replay: Path) -> Path:
    path = tmp_path / "edgeface.toml"
    path.write_text(
        f'[device]\nid = "door"\nstate_dir = "{tmp_path}"\n'
        f'[source]\nuri = "{replay}"\nrealtime = true\nloop = true\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        "[service]\nstatus_interval_s = 1.0\n"
    )
    return path


def test_hard_kill_fires_last_will(tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    config = _config_file(tmp_path, mosquitto.port, replay_folder(tmp_path, samples_dir, "obama.jpg"))
    proc = _spawn(["run", "--quiet", "--config", str(config)], dict(os.environ))
    try:
        mqtt_probe.wait_for("edgeface/door/status", timeout=60, predicate=lambda m: m.payload == b"online")
        mqtt_probe.wait_for("edgeface/door/state", timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # keepalive 30 s: the broker notices the dead TCP connection at once (RST), not after keepalive.
        will = mqtt_probe.wait_for("edgeface/door/status", timeout=30, predicate=lambda m: m.payload == b"offline")
        assert will.payload == b"offline"
    finally:
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_systemd_notify_protocol_and_sigterm(tmp_path: Path, samples_dir: Path, mosquitto: Broker) -> None:
    config = _config_file(tmp_path, mosquitto.port, replay_folder(tmp_path, samples_dir, "obama.jpg"))
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="2000000")
    proc = _spawn(["run", "--quiet", "--config", str(config)], env)
    messages: list[str] = []
    try:

        def until(prefix: str) -> str:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                text = sock.recv(4096).decode()
                messages.append(text)
                if text.startswith(prefix):
                    return text
            raise AssertionError(f"no {prefix} in {messages}")

        ready = until("READY=1")
        assert "STATUS=" in ready and "persons" in ready
        until("WATCHDOG=1")
        until("WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        until("STOPPING=1")
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait(10)
        sock.close()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_config_check_reports_every_error_with_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeface.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nport = 70000\nqos = 3\n[decision]\nvotes = 0\nunknown = 1\n[nope]\nx = 1\n")
    assert main(["config", "check", str(bad)]) == 2
    out = capsys.readouterr().out
    for key in ("mqtt.port", "mqtt.qos", "decision.votes", "decision.unknown", "nope"):
        assert f": {key}" in out, out
    good = tmp_path / "good.toml"
    good.write_text('[mqtt]\nhost = "broker.lan"\n')
    assert main(["config", "check", str(good)]) == 0


def test_wrong_config_refuses_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeface.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[source]\nuri = "/nonexistent/video.mp4"\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
        f'[device]\nstate_dir = "{tmp_path}"\n'
    )
    code = main(["run", "--quiet", "--config", str(bad)])
    assert code == 4  # SourceError
    assert "/nonexistent/video.mp4" in capsys.readouterr().err


def test_a_missing_liveness_model_stops_the_start_naming_the_file(
    tmp_path: Path, samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeface.cli import main
    from edgeface.config import VisionConfig

    models = tmp_path / "models"
    shutil.copytree(VisionConfig().models_dir, models)
    (models / "minifasnet_v1se_4p0_float32.tflite").unlink()
    config = tmp_path / "edgeface.toml"
    config.write_text(
        f'[source]\nuri = "{samples_dir}"\n[vision]\nmodels_dir = "{models}"\n[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
        f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    assert main(["run", "--quiet", "--config", str(config)]) == 3  # ModelError
    assert "minifasnet_v1se_4p0_float32.tflite" in capsys.readouterr().err


def test_example_config_documents_every_key() -> None:
    spec = importlib.util.spec_from_file_location("gen_config_example", REPO / "scripts" / "gen_config_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, render = module.OUT, module.render

    assert out.read_text() == render(), "config/edgeface.example.toml is stale: run scripts/gen_config_example.py"
    settings = load_settings(out)
    assert settings == Settings()
    assert json.loads(json.dumps(settings.model_dump(mode="json")))


def test_corrupt_database_falls_back_to_backup_and_says_so(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    _enroll(tmp_path, analyzer, "Joe Biden", samples_dir / "biden.jpg", {})  # the first save is now a backup
    db_file = tmp_path / "faces.npz"
    db_file.write_bytes(db_file.read_bytes()[:100])  # truncated, as after a power cut without our protocol
    replay = replay_folder(tmp_path, samples_dir, "obama2.jpg")
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(_settings(tmp_path, mosquitto.port, replay), None, stop).run)
    thread.start()
    try:
        state = mqtt_probe.wait_json("edgeface/door/state", timeout=60, predicate=lambda d: d.get("db_fallback"))
        assert state["persons"] == 1  # the backup from before Biden's enrollment
    finally:
        thread.join(60)
        stop.set()
    assert not thread.is_alive()


def test_home_assistant_discovery_follows_the_database(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    obama_id = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    replay = replay_folder(tmp_path, samples_dir, "obama2.jpg")
    settings = _settings(
        tmp_path,
        mosquitto.port,
        replay,
        device={"id": "hall"},
        source={"realtime": True, "loop": True},
        mqtt={"discovery": True, "discovery_prefix": "ha-test"},
    )
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
    thread.start()
    try:
        sensor = mqtt_probe.wait_json("ha-test/sensor/hall/last_person/config", timeout=60)
        assert sensor["state_topic"] == "edgeface/hall/recognition"
        assert sensor["availability_topic"] == "edgeface/hall/status"
        presence = mqtt_probe.wait_json(f"ha-test/binary_sensor/hall/presence_{obama_id}/config")
        assert presence["name"] == "Barack Obama"
        assert presence["state_topic"] == f"edgeface/hall/presence/{obama_id}"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
