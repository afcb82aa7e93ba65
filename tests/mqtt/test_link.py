"""MqttLink against a real Mosquitto: status/LWT, reconnects, the outbox, auth, callback safety."""

from __future__ import annotations

import getpass
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgeface.config import MqttConfig
from edgeface.errors import BrokerError
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.outbox import MemoryOutbox, OutMessage
from edgeface.mqtt.topics import Topics
from tests.conftest import Broker, MqttProbe, _free_port, _wait_port


def _topics() -> Topics:
    return Topics("edgeface", f"link-{uuid.uuid4().hex[:8]}")


@dataclass
class Harness:
    link: MqttLink
    topics: Topics
    commands: queue.Queue[tuple[str, bytes]]
    connection: queue.Queue[bool]

    def wait_connection(self, state: bool, timeout: float = 15.0) -> None:
        while True:
            if self.connection.get(timeout=timeout) is state:
                return


@contextmanager
def running_link(port: int, on_command: Any = None, **cfg: Any) -> Iterator[Harness]:
    commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
    connection: queue.Queue[bool] = queue.Queue()
    topics = _topics()
    settings = MqttConfig(host="127.0.0.1", port=port, **{"reconnect_max_s": 1, **cfg})
    link = MqttLink(
        settings,
        topics,
        "Test",
        on_command or (lambda verb, payload, _props: commands.put((verb, payload))),
        threading.Event(),
        on_connection=connection.put,
    )
    link.start()
    try:
        yield Harness(link, topics, commands, connection)
    finally:
        link.stop()


# --- status and Last Will ----------------------------------------------------------------------


def test_online_on_connect_and_offline_on_clean_stop(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    with running_link(mosquitto.port) as h:
        h.link.wait_connected(10)
        online = mqtt_probe.wait_for(h.topics.status, predicate=lambda m: m.payload == b"online")
        assert h.link.connected
    offline = mqtt_probe.wait_for(h.topics.status)
    assert offline.payload == b"offline"
    # A clean DISCONNECT: the broker did not fire the Will as well.
    with pytest.raises(AssertionError):
        mqtt_probe.wait_for(h.topics.status, timeout=0.5)
    late = MqttProbe(mosquitto.port, h.topics.status)
    try:
        retained = late.wait_for(h.topics.status)
        assert (retained.payload, retained.retain) == (b"offline", True)
    finally:
        late.close()
    assert online.retain is False  # live delivery; the retained flag shows on late subscribers


_CHILD = """
import sys, threading
from edgeface.config import MqttConfig
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.topics import Topics
link = MqttLink(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), keepalive_s=5),
                Topics("edgeface", sys.argv[2]), "child", lambda *a: None, threading.Event())
link.start()
link.wait_connected(10)
print("ready", flush=True)
threading.Event().wait()
"""


def test_last_will_offline_when_the_process_is_killed(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(mosquitto.port), topics.device_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        mqtt_probe.wait_for(topics.status, timeout=20, predicate=lambda m: m.payload == b"online")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    assert mqtt_probe.wait_for(topics.status, timeout=15).payload == b"offline"


# --- reconnects and the outbox -------------------------------------------------------------------


def test_reconnects_after_broker_restart(broker: Broker) -> None:
    with running_link(broker.port) as h:
        h.wait_connection(True)
        broker.kill()
        h.wait_connection(False)
        assert not h.link.connected
        broker.start()
        h.wait_connection(True)
        h.link.wait_connected(10)  # commands resubscribed
        assert h.link.stats().reconnects == 1
        probe = MqttProbe(broker.port, h.topics.status)
        try:
            assert probe.wait_for(h.topics.status).payload == b"online"
        finally:
            probe.close()


@dataclass
class ConfiguredBroker(Broker):
    """conftest's Broker plus extra config lines, run as the current user.

    Started as root, mosquitto drops to user "mosquitto", which can read neither a password file
    nor a persistence directory inside pytest's private tmp dir; ``user`` keeps the current user
    (the option is ignored when not root).
    """

    extra: tuple[str, ...] = ()

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "log_dest stderr", "log_type error"]
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join([*lines, *self.extra]) + "\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, 10.0)


@dataclass
class SessionProbe:
    """A 3.1.1 subscriber with a persistent session: QoS 1 messages wait for it at the broker."""

    port: int
    topic: str
    messages: queue.Queue[bytes] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg.payload)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe(self.topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def take(self, count: int, timeout: float = 20.0) -> list[int]:
        return [json.loads(self.messages.get(timeout=timeout))["n"] for _ in range(count)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    """Keeps sessions across a graceful restart, so a persistent subscriber misses nothing."""
    b = ConfiguredBroker(tmp_path, extra=("persistence true", f"persistence_location {tmp_path}/"))
    b.start()
    yield b
    b.stop()


def test_outbox_flushes_in_order_after_an_outage(persistent_broker: Broker) -> None:
    with running_link(persistent_broker.port) as h:
        probe = SessionProbe(persistent_broker.port, h.topics.recognition)
        try:
            h.link.wait_connected(10)
            h.link.publish(h.topics.recognition, {"n": 0})
            assert probe.take(1) == [0]
            persistent_broker.stop()
            h.wait_connection(False)
            for n in range(1, 51):
                h.link.publish(h.topics.recognition, {"n": n})
            assert h.link.stats().queued == 50
            persistent_broker.start()
            assert probe.take(50) == list(range(1, 51))
            stats = h.link.stats()
            assert (stats.queued, stats.dropped, stats.reconnects) == (0, 0, 1)
        finally:
            probe.close()


def test_outbox_bound_drops_oldest_while_broker_is_down(
    persistent_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    probe = SessionProbe(persistent_broker.port, "edgeface/+/recognition")
    try:
        persistent_broker.stop()
        with running_link(persistent_broker.port, outbox_size=3) as h:
            for n in range(1, 6):
                h.link.publish(h.topics.recognition, {"n": n})
            stats = h.link.stats()
            assert (stats.queued, stats.dropped, stats.connected) == (3, 2, False)
            persistent_broker.start()
            assert probe.take(3) == [3, 4, 5]
            assert h.link.stats().dropped == 2
        assert any("cannot reach broker" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    finally:
        probe.close()


def test_memory_outbox_contract() -> None:
    outbox = MemoryOutbox(2)
    messages = [OutMessage(f"t/{n}", b"", 1) for n in range(4)]
    for message in messages:
        outbox.put(message)
    assert (len(outbox), outbox.dropped) == (2, 2)
    taken = outbox.take()
    assert taken is messages[2]
    outbox.requeue(taken)
    assert [outbox.take(), outbox.take(), outbox.take()] == [messages[2], messages[3], None]
    with pytest.raises(ValueError, match="outbox size"):
        MemoryOutbox(0)


def test_publish_from_many_threads(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    with running_link(mosquitto.port) as h:
        h.link.wait_connected(10)

        def produce(worker: int) -> None:
            for n in range(50):
                h.link.publish(h.topics.state, {"w": worker, "n": n}, qos=1)

        threads = [threading.Thread(target=produce, args=(w,), name=f"producer-{w}") for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got: dict[int, list[int]] = {w: [] for w in range(4)}
        for _ in range(200):
            doc = json.loads(mqtt_probe.wait_for(h.topics.state).payload)
            got[doc["w"]].append(doc["n"])
        assert all(seq == list(range(50)) for seq in got.values())
    assert h.link.stats().published >= 200


# --- commands in ---------------------------------------------------------------------------------


@pytest.mark.expect_errors
def test_failing_command_callback_does_not_kill_the_loop(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    seen: queue.Queue[str] = queue.Queue()

    def on_command(verb: str, payload: bytes, _props: Any) -> None:
        seen.put(verb)
        if verb == "boom":
            raise RuntimeError("handler bug")

    with running_link(mosquitto.port, on_command=on_command) as h:
        h.link.wait_connected(10)
        mqtt_probe.publish(h.topics.command("boom"), b"{}")
        mqtt_probe.publish(h.topics.command("status"), b"{}")
        assert [seen.get(timeout=10), seen.get(timeout=10)] == ["boom", "status"]
        assert h.link.connected


def test_retained_commands_are_ignored(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    mqtt_probe.publish(topics.command("delete"), b'{"person_id": "p1"}', retain=True)
    commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
    link = MqttLink(
        MqttConfig(host="127.0.0.1", port=mosquitto.port),
        topics,
        "t",
        lambda verb, payload, _p: commands.put((verb, payload)),
        threading.Event(),
    )
    link.start()
    try:
        link.wait_connected(10)
        mqtt_probe.publish(topics.command("status"), b"{}")
        assert commands.get(timeout=10) == ("status", b"{}")
        assert commands.empty()
    finally:
        link.stop()
        mqtt_probe.publish(topics.command("delete"), b"", retain=True)


def test_response_properties_reach_the_callback(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got: queue.Queue[Any] = queue.Queue()
    with running_link(mosquitto.port, on_command=lambda v, p, props: got.put(props)) as h:
        h.link.wait_connected(10)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "app/replies"
        props.CorrelationData = b"42"
        mqtt_probe.publish(h.topics.command("status"), b"{}", properties=props)
        received = got.get(timeout=10)
        assert (received.ResponseTopic, received.CorrelationData) == ("app/replies", b"42")
        h.link.publish("app/replies", {"ok": True}, correlation_data=b"42")
        reply = mqtt_probe.wait_for("app/replies", predicate=lambda m: m.payload == b'{"ok":true}')
        assert reply.properties.CorrelationData == b"42"


# --- authentication ------------------------------------------------------------------------------


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "edge", "s3cret-pass"], check=True, capture_output=True
    )
    passwords.chmod(0o600)
    b = ConfiguredBroker(tmp_path, password_file=passwords)
    b.start()
    yield b
    b.stop()


def test_password_file_authenticates(auth_broker: Broker, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.pass"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o600)
    with running_link(auth_broker.port, username="edge", password_file=secret) as h:
        h.link.wait_connected(10)


@pytest.mark.expect_errors
def test_bad_password_is_a_clear_broker_error(auth_broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    with running_link(auth_broker.port, username="edge", password="wrong") as h:
        with pytest.raises(BrokerError, match=r"refused \(Not authorized\)"):
            h.link.wait_connected(3)
        assert not h.link.connected
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("refused the connection: Not authorized" in m and "username/password" in m for m in errors)


def test_unreachable_broker_times_out_and_stops_cleanly() -> None:
    port = _free_port()
    with running_link(port) as h:
        h.link.publish(h.topics.state, {"n": 1})
        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} not connected within 0.5s"):
            h.link.wait_connected(0.5)
    assert h.link.stats().queued == 1
