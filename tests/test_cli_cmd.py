"""``edgeface cmd``, in-process, against a device answering over a real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeface.cli import main
from edgeface.config import SecurityConfig
from edgeface.mqtt.broker import PROTOCOL, EmbeddedBroker
from edgeface.mqtt.signing import Verifier
from tests.conftest import Broker, _free_port
from tests.memory_device import RunningDevice, running_device

SECRET = "cli-secret-0123456789"


@pytest.fixture
def dev(mosquitto: Broker) -> Iterator[RunningDevice]:
    with running_device(mosquitto.port) as running:
        yield running


def _cli(dev: RunningDevice, port: int, *argv: str) -> int:
    return main(["cmd", *argv, "--port", str(port), "--device", dev.topics.device_id, "--timeout", "10"])


def _out(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_ok_reply_exits_0(dev: RunningDevice, mosquitto: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(dev, mosquitto.port, "status", "--request-id", "cli-1") == 0
    assert _out(capsys) == {"ok": True, "request_id": "cli-1", "verb": "status", "persons": 0, "fps": 0.0}


def test_error_reply_exits_7(dev: RunningDevice, mosquitto: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(dev, mosquitto.port, "get", '{"person_id": "nobody"}') == 7
    assert _out(capsys)["error"]["code"] == "not_found"


def test_enroll_images_and_fields(
    dev: RunningDevice, mosquitto: Broker, samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "enroll",
        "--name",
        "Barack",
        "--metadata",
        '{"access": true}',
        "--image",
        str(samples_dir / "obama.jpg"),
        "--image",
        str(samples_dir / "obama2.jpg"),
    ]
    assert _cli(dev, mosquitto.port, *argv) == 0
    reply = _out(capsys)
    assert reply["samples_added"] == 2 and reply["person"]["metadata"] == {"access": True}
    assert _cli(dev, mosquitto.port, "list", '{"limit": 1}') == 0
    assert _out(capsys)["total"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "{oops"], "Expecting property name"),
        (["list", "[1]"], "must be an object"),
        (["enroll", "--name", "x", "--image", "/nonexistent.jpg"], "cannot read image"),
    ],
)
def test_bad_arguments_exit_2(
    dev: RunningDevice, mosquitto: Broker, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _cli(dev, mosquitto.port, *argv) == 2
    assert message in capsys.readouterr().err


def test_no_broker_exits_6(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cmd", "status", "--port", str(_free_port()), "--timeout", "2"]) == 6
    assert "cannot reach MQTT broker" in capsys.readouterr().err


def test_no_reply_exits_6(mosquitto: Broker, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cmd", "status", "--port", str(mosquitto.port), "--device", "nobody-home", "--timeout", "0.5"]
    assert main(argv) == 6
    assert "no reply from device 'nobody-home' within 0.5s" in capsys.readouterr().err


@pytest.fixture
def signed_dev(mosquitto: Broker, tmp_path: Path) -> Iterator[RunningDevice]:
    keys = tmp_path / "device-keys.json"
    keys.write_text(json.dumps({"ops": SECRET}))
    keys.chmod(0o600)
    security = SecurityConfig(require_signature=True, keys_file=keys)
    with running_device(mosquitto.port, security=security, verifier=Verifier({"ops": SECRET.encode()}, 300)) as d:
        yield d


def test_signed_commands(
    signed_dev: RunningDevice, mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(signed_dev, mosquitto.port, "status") == 7
    assert _out(capsys)["error"]["code"] == "unauthorized"

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"ops": SECRET}))
    keys.chmod(0o600)
    assert _cli(signed_dev, mosquitto.port, "status", "--key-file", str(keys)) == 0
    assert _out(capsys)["ok"] is True

    bare = tmp_path / "ops.key"
    bare.write_text(SECRET + "\n")
    bare.chmod(0o600)
    assert _cli(signed_dev, mosquitto.port, "status", "--key-id", "ops", "--key-file", str(bare)) == 0
    assert _out(capsys)["ok"] is True

    bare.chmod(0o644)
    assert _cli(signed_dev, mosquitto.port, "status", "--key-id", "ops", "--key-file", str(bare)) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_settings_file_supplies_connection(
    dev: RunningDevice, mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text(f'[device]\nid = "{dev.topics.device_id}"\n[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n')
    assert main(["cmd", "status", "--config", str(config), "--timeout", "10"]) == 0
    assert _out(capsys)["verb"] == "status"


def test_falls_back_to_mqtt_311_on_the_embedded_broker(capsys: pytest.CaptureFixture[str]) -> None:
    broker = EmbeddedBroker(port=0)
    broker.start()
    try:
        with running_device(broker.port, protocol=PROTOCOL) as dev:
            assert _cli(dev, broker.port, "status", "--request-id", "amq-1") == 0
            assert _out(capsys)["request_id"] == "amq-1"
    finally:
        broker.stop()
