"""The daemon and Home Assistant over a real Mosquitto: retained state stays true across crashes, deletions and
broker restarts; unknown events name the closest person."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeface.cli import main
from edgeface.config import Settings, VisionConfig
from edgeface.service.daemon import Daemon
from edgeface.vision.analyzer import FaceAnalyzer
from tests.conftest import Broker, MqttProbe, replay_folder
from tests.mqtt.ha_schema import validate
from tests.mqtt.test_retained import _drain, _retained_now
from tests.service.test_daemon import _config_file, _enroll, _settings, _spawn

pytestmark = pytest.mark.slow

PREFIX = "ha-daemon"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer.from_config(VisionConfig()) as a:
        yield a


class Running:
    """An in-process daemon on its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=Daemon(settings, None, self.stop).run, name="test-daemon")

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def _ha(port: int, tmp_path: Path, replay: Path, *, device: str, discovery: bool = True, **sections: dict) -> Settings:  # type: ignore[type-arg]
    """A looping replay (the daemon runs until the test stops it) with discovery under ``PREFIX``."""
    mqtt = {"discovery": discovery, "discovery_prefix": PREFIX, **sections.pop("mqtt", {})}
    source = {"realtime": True, "loop": True, **sections.pop("source", {})}
    return _settings(tmp_path, port, replay, device={"id": device}, mqtt=mqtt, source=source, **sections)


def test_crash_while_present_leaves_nothing_stuck(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    obama = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    presence = f"edgeface/door/presence/{obama}"
    config = _config_file(tmp_path, mosquitto.port, replay_folder(tmp_path, samples_dir, "obama2.jpg"))
    proc = _spawn(["run", "--quiet", "--config", str(config)], dict(os.environ))
    try:
        mqtt_probe.wait_for(presence, timeout=90, predicate=lambda m: m.payload == b"on")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()
    assert _retained_now(mosquitto.port, presence) == b"on"  # what the crash left
    _drain(mqtt_probe)  # the first run's own 'off' (before it saw him) must not count
    # Restarted where he never appears (a finite replay of someone else): he is not present.
    (tmp_path / "other").mkdir()
    replay = replay_folder(tmp_path / "other", samples_dir, "biden.jpg")
    with Running(_ha(mosquitto.port, tmp_path, replay, device="door", discovery=False)):
        mqtt_probe.wait_for(presence, timeout=60, predicate=lambda m: m.payload == b"off")
    assert _retained_now(mosquitto.port, presence) == b"off"


def test_clean_stop_turns_presence_off_and_unknowns_name_the_closest_person(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    obama = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    presence = f"edgeface/porch/presence/{obama}"
    replay = replay_folder(tmp_path, samples_dir, "biden.jpg", "obama2.jpg")
    settings = _ha(mosquitto.port, tmp_path, replay, device="porch")
    with Running(settings):
        config = mqtt_probe.wait_json(f"{PREFIX}/binary_sensor/porch/presence_{obama}/config", timeout=60)
        validate("binary_sensor", config)
        # Enrolled but not seen yet: off, not HA's "unknown".
        mqtt_probe.wait_for(presence, timeout=60, predicate=lambda m: m.payload == b"off")
        stranger = mqtt_probe.wait_json("edgeface/porch/unknown", timeout=60)
        assert stranger["best_match"]["person_id"] == obama
        assert stranger["best_match"]["name"] == "Barack Obama"
        assert stranger["unknown_id"].startswith("u-")
        mqtt_probe.wait_for(presence, timeout=60, predicate=lambda m: m.payload == b"on")
        seen = mqtt_probe.wait_json(f"edgeface/porch/person/{obama}", timeout=30)
        assert seen["name"] == "Barack Obama" and 0 < seen["confidence"] <= 100
    assert _retained_now(mosquitto.port, presence) == b"off"


def test_person_deleted_while_stopped_and_discovery_turned_off(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    obama = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    biden = _enroll(tmp_path, analyzer, "Joe Biden", samples_dir / "biden.jpg", {})
    replay = replay_folder(tmp_path, samples_dir, "obama2.jpg")
    biden_config = f"{PREFIX}/binary_sensor/hall/presence_{biden}/config"
    obama_config = f"{PREFIX}/binary_sensor/hall/presence_{obama}/config"
    device_config = f"{PREFIX}/sensor/hall/last_person/config"
    with Running(_ha(mosquitto.port, tmp_path, replay, device="hall")):
        mqtt_probe.wait_for(biden_config, timeout=60)
    assert main(["db", "delete", biden, "--config", str(_toml(tmp_path))]) == 0
    with Running(_ha(mosquitto.port, tmp_path, replay, device="hall")):
        mqtt_probe.wait_for(biden_config, timeout=60, predicate=lambda m: m.payload == b"")
        mqtt_probe.wait_for(f"edgeface/hall/presence/{biden}", timeout=30, predicate=lambda m: m.payload == b"")
    assert _retained_now(mosquitto.port, biden_config) is None
    assert _retained_now(mosquitto.port, obama_config) is not None
    with Running(_ha(mosquitto.port, tmp_path, replay, device="hall", discovery=False)):
        for topic in (obama_config, device_config):
            mqtt_probe.wait_for(topic, timeout=60, predicate=lambda m: m.payload == b"")
    assert _retained_now(mosquitto.port, obama_config) is None
    assert _retained_now(mosquitto.port, device_config) is None


def test_broker_restart_without_persistence_and_home_assistant_birth(
    tmp_path: Path, samples_dir: Path, broker: Broker, analyzer: FaceAnalyzer
) -> None:
    obama = _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    replay = replay_folder(tmp_path, samples_dir, "biden.jpg")
    config = f"{PREFIX}/binary_sensor/gate/presence_{obama}/config"
    settings = _ha(broker.port, tmp_path, replay, device="gate", mqtt={"reconnect_max_s": 1})
    with Running(settings):
        probe = MqttProbe(broker.port)
        try:
            probe.wait_for(config, timeout=60)
        finally:
            probe.close()
        broker.restart()  # persistence false: the broker forgot every retained config
        probe = MqttProbe(broker.port)
        try:
            probe.wait_for(config, timeout=60, predicate=lambda m: m.payload != b"")
            probe.wait_for(f"edgeface/gate/presence/{obama}", timeout=30, predicate=lambda m: m.payload == b"off")
            probe.wait_for("edgeface/gate/status", timeout=30, predicate=lambda m: m.payload == b"online")
            _drain(probe)
            # Home Assistant restarting announces itself: the device answers with its configs.
            probe.publish(f"{PREFIX}/status", "online")
            probe.wait_for(config, timeout=30, predicate=lambda m: m.payload != b"")
        finally:
            probe.close()


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "db.toml"
    path.write_text(f'[device]\nstate_dir = "{tmp_path}"\n')
    return path


def test_stranger_confirmed_from_home_assistant_is_recognised(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, analyzer: FaceAnalyzer
) -> None:
    _enroll(tmp_path, analyzer, "Barack Obama", samples_dir / "obama.jpg", {})
    replay = replay_folder(tmp_path, samples_dir, "biden.jpg")
    settings = _ha(
        mosquitto.port,
        tmp_path,
        replay,
        device="lobby",
        unknowns={"snapshots": True, "publish_snapshot": True},
        decision={"cooldown_s": 0.0},
    )
    with Running(settings):
        for component, key in (("text", "confirm_name"), ("button", "confirm"), ("image", "last_unknown_face")):
            validate(component, mqtt_probe.wait_json(f"{PREFIX}/{component}/lobby/{key}/config", timeout=60))
        stranger = mqtt_probe.wait_json("edgeface/lobby/unknown", timeout=60)
        face = mqtt_probe.wait_for("edgeface/lobby/unknown/snapshot", timeout=30)
        assert face.payload.startswith(b"\xff\xd8")  # raw JPEG for the image entity
        mqtt_probe.publish("edgeface/lobby/ha/confirm_name", "Joe Biden")
        mqtt_probe.publish("edgeface/lobby/ha/confirm", "PRESS")
        result = mqtt_probe.wait_json("edgeface/lobby/control_result", timeout=30)
        assert result["ok"], result
        assert result["verb"] == "confirm" and result["person"]["name"] == "Joe Biden"
        seen = mqtt_probe.wait_json("edgeface/lobby/recognition", timeout=60)
        assert seen["name"] == "Joe Biden"
        biden = seen["person_id"]
        # The new person's entities appear at once.
        mqtt_probe.wait_for(f"{PREFIX}/binary_sensor/lobby/presence_{biden}/config", timeout=30)
        assert stranger["unknown_id"].startswith("u-")
