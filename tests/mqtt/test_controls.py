"""Home Assistant controls over a real broker: text and button presses become ordinary, answered commands."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgeface.config import MqttConfig, SecurityConfig
from edgeface.errors import ConfigError
from edgeface.mqtt.controls import HaControls, controls_enabled, controls_key
from edgeface.mqtt.signing import Verifier
from tests.conftest import Broker, MqttProbe
from tests.memory_device import RunningDevice, running_device

KEY_ID = "home-assistant"
SECRET = b"0123456789abcdef-ha-secret"


def _controls(dev: RunningDevice, key: tuple[str, bytes] | None = None) -> HaControls:
    controls = HaControls(dev.link, dev.topics, dev.dispatcher, key)
    controls.attach()
    return controls


@pytest.fixture
def dev(mosquitto: Broker) -> Iterator[RunningDevice]:
    with running_device(mosquitto.port) as running:
        yield running


def _press(probe: MqttProbe, dev: RunningDevice, control: str, payload: str = "PRESS") -> dict[str, Any]:
    probe.publish(dev.topics.control(control), payload)
    # Match the verb: a reply to an earlier reload press may still be on its way.
    return probe.wait_json(dev.topics.control_result, timeout=10, predicate=lambda r: r["verb"] == control)


def _wait_subscribed(probe: MqttProbe, dev: RunningDevice) -> None:
    # The link subscribes to ha/+ asynchronously; a reload press is harmless and proves it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe.publish(dev.topics.control("reload"), "PRESS")
        try:
            probe.wait_json(dev.topics.control_result, timeout=1)
            return
        except AssertionError:
            continue
    raise AssertionError("controls never answered")


def test_confirm_the_last_unknown_under_a_typed_name(dev: RunningDevice, mqtt_probe: MqttProbe) -> None:
    controls = _controls(dev)
    _wait_subscribed(mqtt_probe, dev)
    assert _press(mqtt_probe, dev, "confirm")["error"]["code"] == "not_found"  # no stranger yet
    dev.device.unknowns_spool["u-7"] = {"samples": 3}
    controls.unknown_seen("u-7")
    refused = _press(mqtt_probe, dev, "confirm")
    assert (refused["ok"], refused["error"]["code"]) == (False, "bad_request")  # no name typed
    mqtt_probe.publish(dev.topics.control("confirm_name"), "  Carol ")
    reply = _press(mqtt_probe, dev, "confirm")
    assert reply["ok"] and reply["verb"] == "confirm" and reply["request_id"].startswith("ha-")
    assert [p["name"] for p in dev.device.persons.values()] == ["Carol"]
    assert "u-7" not in dev.device.unknowns_spool
    # Used once: a second press has nothing to confirm.
    assert _press(mqtt_probe, dev, "confirm")["error"]["code"] == "not_found"


def test_ignore_and_reload(dev: RunningDevice, mqtt_probe: MqttProbe) -> None:
    controls = HaControls(dev.link, dev.topics, dev.dispatcher)
    dev.device.unknowns_spool["u-8"] = {"samples": 1}
    controls.unknown_seen("u-8")
    # A press left retained on the broker would fire at every reconnect: it is not acted on.
    mqtt_probe.publish(dev.topics.control("ignore"), "PRESS", retain=True)
    try:
        controls.attach()
        _wait_subscribed(mqtt_probe, dev)
        assert "ignored" not in dev.device.unknowns_spool["u-8"]
    finally:
        mqtt_probe.publish(dev.topics.control("ignore"), "", retain=True)
    reloads = dev.device.reloads
    assert _press(mqtt_probe, dev, "reload")["ok"]
    assert dev.device.reloads == reloads + 1
    assert _press(mqtt_probe, dev, "ignore")["ok"]
    assert dev.device.unknowns_spool["u-8"]["ignored"] is True


def test_signed_mode_signs_controls_with_their_own_key(
    mosquitto: Broker, mqtt_probe: MqttProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFACE_COMMAND_KEYS", '{"home-assistant": "0123456789abcdef-ha-secret"}')
    security = SecurityConfig(require_signature=True, max_skew_s=60)
    verifier = Verifier({KEY_ID: SECRET}, 60)
    with running_device(mosquitto.port, security=security, verifier=verifier) as dev:
        # Without the key a press is refused like any unsigned command.
        unsigned = HaControls(dev.link, dev.topics, dev.dispatcher, None)
        unsigned.attach()
        _wait_subscribed(mqtt_probe, dev)
        assert _press(mqtt_probe, dev, "reload")["error"]["code"] == "unauthorized"
        assert dev.device.reloads == 0
    with running_device(mosquitto.port, security=security, verifier=verifier) as dev:
        _controls(dev, (KEY_ID, SECRET))
        _wait_subscribed(mqtt_probe, dev)
        assert _press(mqtt_probe, dev, "reload")["ok"]


def test_when_controls_are_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFACE_COMMAND_KEYS", '{"k": "0123456789abcdef"}')
    plain, signed = SecurityConfig(), SecurityConfig(require_signature=True)
    assert controls_enabled(MqttConfig(discovery=True), plain)
    assert not controls_enabled(MqttConfig(discovery=False), plain)
    assert not controls_enabled(MqttConfig(discovery=True, controls=False), plain)
    assert not controls_enabled(MqttConfig(discovery=True), signed)
    assert controls_enabled(MqttConfig(discovery=True, controls_key_id="k"), signed)
    assert controls_key(MqttConfig(controls_key_id="k"), {"k": b"s" * 16}) == ("k", b"s" * 16)
    assert controls_key(MqttConfig(), {"k": b"s" * 16}) is None
    with pytest.raises(ConfigError, match="controls_key_id 'x'"):
        controls_key(MqttConfig(controls_key_id="x"), {"k": b"s" * 16})
