"""The embedded amqtt broker with paho 2.x clients and with MqttLink (MQTT 3.1.1)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from edgeface.errors import BrokerError
from edgeface.mqtt.broker import PROTOCOL, EmbeddedBroker
from tests.conftest import MqttProbe
from tests.memory_device import running_device


@pytest.fixture
def embedded() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port=0)
    broker.start()
    yield broker
    broker.stop()


def probe311(port: int, topic_filter: str) -> MqttProbe:
    """The shared probe speaking MQTT 3.1.1 (amqtt refuses MQTT v5)."""
    return MqttProbe(port, topic_filter, protocol=mqtt.MQTTv311)


def test_port_zero_picks_a_free_port_and_stop_joins() -> None:
    broker = EmbeddedBroker(port=0)
    broker.start()
    try:
        assert broker.port > 0
        probe311(broker.port, "t/#").close()
    finally:
        broker.stop()
    assert not any(t.name == "mqtt-broker" for t in threading.enumerate())
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), timeout=2):
        pass


def test_busy_port_is_a_broker_error(embedded: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=f"cannot listen on 127.0.0.1:{embedded.port}"):
        EmbeddedBroker(port=embedded.port).start()


def test_publish_subscribe_and_retained(embedded: EmbeddedBroker) -> None:
    live = probe311(embedded.port, "t/#")
    try:
        live.publish("t/event", b"1")
        assert live.wait_for("t/event").payload == b"1"
        live.publish("t/state", b"retained", retain=True)
        late = probe311(embedded.port, "t/state")
        try:
            msg = late.wait_for("t/state")
            assert (msg.payload, msg.retain) == (b"retained", True)
        finally:
            late.close()
    finally:
        live.close()


def test_mqtt_v5_is_refused() -> None:
    broker = EmbeddedBroker(port=0)
    broker.start()
    reasons: queue.Queue[object] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda _c, _u, _f, reason, _p: reasons.put(reason)
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        assert str(reasons.get(timeout=10)) == "Unsupported protocol version"
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()


_CHILD = """
import sys, threading
from edgeface.config import MqttConfig
from edgeface.mqtt.broker import PROTOCOL
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.topics import Topics
link = MqttLink(MqttConfig(embedded_port=int(sys.argv[1])), Topics("edgeface", sys.argv[2]), "child",
                lambda *a: None, threading.Event(), protocol=PROTOCOL)
link.start()
link.wait_connected(10)
threading.Event().wait()
"""


def test_link_status_and_last_will(embedded: EmbeddedBroker) -> None:
    device = f"amqtt-{uuid.uuid4().hex[:6]}"
    status = f"edgeface/{device}/status"
    probe = probe311(embedded.port, status)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(embedded.port), device], stderr=subprocess.DEVNULL)
    try:
        probe.wait_for(status, 20, lambda m: m.payload == b"online")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    try:
        probe.wait_for(status, 15, lambda m: m.payload == b"offline")
        late = probe311(embedded.port, status)
        try:
            assert late.wait_for(status).retain is True
        finally:
            late.close()
    finally:
        probe.close()


def test_commands_over_the_embedded_broker(embedded: EmbeddedBroker) -> None:
    probe = probe311(embedded.port, "edgeface/#")
    try:
        with running_device(embedded.port, protocol=PROTOCOL) as dev:
            probe.wait_for(dev.topics.status, 10, lambda m: m.payload == b"online")
            probe.publish(dev.topics.command("status"), json.dumps({"request_id": "a1"}).encode())
            reply = json.loads(probe.wait_for(dev.topics.reply("a1")).payload)
            assert reply == {"ok": True, "request_id": "a1", "verb": "status", "persons": 0, "fps": 0.0}
            for n in range(20):
                dev.link.publish(dev.topics.recognition, {"n": n})
            got = [json.loads(probe.wait_for(dev.topics.recognition).payload)["n"] for _ in range(20)]
            assert got == list(range(20))
        assert probe.wait_for(dev.topics.status, 10, lambda m: m.payload == b"offline").payload == b"offline"
    finally:
        probe.close()
