"""Retained presence, last-seen and discovery state reconciled against a real Mosquitto.

Each test first leaves on the broker what an earlier run (or a crash) would have left, then starts
a real ``MqttLink`` with ``RetainedState`` and watches the broker converge.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import MqttConfig
from edgeface.mqtt.broker import PROTOCOL, EmbeddedBroker
from edgeface.mqtt.discovery import DiscoveryBuilder, DiscoveryOptions
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.retained import RetainedState
from edgeface.mqtt.topics import Topics
from tests.conftest import Broker, MqttProbe
from tests.mqtt.test_discovery import _decision

PREFIX = "ha-retained"
BIRTH = f"{PREFIX}/status"


@dataclass
class Running:
    link: MqttLink
    retained: RetainedState
    builder: DiscoveryBuilder
    topics: Topics
    persons: dict[str, str]


def _topics() -> Topics:
    return Topics("edgeface", f"ret-{uuid.uuid4().hex[:8]}")


@contextmanager
def running(
    port: int,
    topics: Topics,
    persons: dict[str, str],
    *,
    discovery: bool = True,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
) -> Iterator[Running]:
    builder = DiscoveryBuilder(topics, PREFIX, "Door", "0.1.0", DiscoveryOptions())
    cfg = MqttConfig(host="127.0.0.1", port=port, reconnect_max_s=1)
    link = MqttLink(cfg, topics, "Door", lambda *a: None, threading.Event(), protocol=protocol)
    retained = RetainedState(link, builder, lambda: persons, discovery=discovery, birth_topic=BIRTH)
    retained.attach()
    link.start()
    try:
        link.wait_connected(10)
        yield Running(link, retained, builder, topics, persons)
    finally:
        link.stop()


def _leave_behind(probe: MqttProbe, topics: Topics, person_id: str, presence: bytes = b"on") -> list[str]:
    """What a crashed run of a device with ``person_id`` enrolled leaves retained; returns the config topics."""
    builder = DiscoveryBuilder(topics, PREFIX, "Door", "0.0.9")
    configs = builder.configs({person_id: "Somebody"})
    for message in configs:
        assert isinstance(message.payload, dict)
        probe.publish(message.topic, json.dumps(message.payload), retain=True)
    probe.publish(topics.presence(person_id), presence, retain=True)
    probe.publish(topics.person(person_id), b'{"last_seen": "2026-01-01T00:00:00+00:00"}', retain=True)
    return [m.topic for m in builder.person_configs(person_id, "Somebody")]


def _drain(probe: MqttProbe) -> None:
    """Forget what the probe received so far: the next ``wait_for`` needs a new message."""
    probe.seen.clear()
    while not probe.messages.empty():
        probe.messages.get_nowait()


def _retained_now(port: int, topic: str) -> bytes | None:
    """What a client subscribing now gets for ``topic`` (None: nothing retained)."""
    probe = MqttProbe(port, topic)
    try:
        return probe.wait_for(topic, timeout=2).payload
    except AssertionError:
        return None
    finally:
        probe.close()


def test_presence_left_on_by_a_crash_is_turned_off_at_start(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    _leave_behind(mqtt_probe, topics, "p1", b"on")
    with running(mosquitto.port, topics, {"p1": "Alice"}):
        mqtt_probe.wait_for(topics.presence("p1"), predicate=lambda m: m.payload == b"off")
        assert _retained_now(mosquitto.port, topics.presence("p1")) == b"off"


def test_a_person_deleted_while_stopped_loses_every_retained_topic(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    gone_configs = _leave_behind(mqtt_probe, topics, "gone", b"on")
    with running(mosquitto.port, topics, {"p1": "Alice"}) as run:
        for topic in [*gone_configs, topics.presence("gone"), topics.person("gone")]:
            mqtt_probe.wait_for(topic, predicate=lambda m: m.payload == b"")
        # The persons still enrolled keep theirs, with presence off until first seen.
        for message in run.builder.person_configs("p1", "Alice"):
            mqtt_probe.wait_for(message.topic, predicate=lambda m: m.payload != b"")
        assert _retained_now(mosquitto.port, topics.presence("p1")) == b"off"
        for topic in [*gone_configs, topics.presence("gone"), topics.person("gone")]:
            assert _retained_now(mosquitto.port, topic) is None, topic


def test_discovery_turned_off_removes_every_entity(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    _leave_behind(mqtt_probe, topics, "p1", b"off")
    left = DiscoveryBuilder(topics, PREFIX, "Door", "0.0.9").configs({"p1": "Alice"})
    with running(mosquitto.port, topics, {"p1": "Alice"}, discovery=False):
        for message in left:
            mqtt_probe.wait_for(message.topic, predicate=lambda m: m.payload == b"")
    assert _retained_now(mosquitto.port, left[0].topic) is None
    # Presence is not a Home Assistant topic: it stays, true.
    assert _retained_now(mosquitto.port, topics.presence("p1")) == b"off"


def test_broker_restart_without_persistence_gets_everything_again(broker: Broker) -> None:
    topics = _topics()
    earlier = MqttProbe(broker.port, "unused/#")
    try:  # Bob was last seen before this start
        earlier.publish(
            topics.person("p2"), b'{"person_id": "p2", "last_seen": "2026-01-01T00:00:00+00:00"}', retain=True
        )
    finally:
        earlier.close()
    with running(broker.port, topics, {"p1": "Alice", "p2": "Bob"}) as run:
        config = run.builder.person_configs("p1", "Alice")[0].topic
        run.retained.set_presence("p1", "Alice", True)
        run.retained.recognised(_decision(person_id="p1"))
        probe = MqttProbe(broker.port, "#")
        try:
            probe.wait_for(topics.presence("p1"), predicate=lambda m: m.payload == b"on")
            probe.wait_for(topics.person("p1"))
        finally:
            probe.close()
        broker.restart()  # persistence false: every retained message is gone
        probe = MqttProbe(broker.port, "#")
        try:
            probe.wait_for(config, timeout=30, predicate=lambda m: m.payload != b"")
            probe.wait_for(topics.presence("p1"), timeout=30, predicate=lambda m: m.payload == b"on")
            probe.wait_for(topics.person("p1"), timeout=30)
            bob = probe.wait_json(topics.person("p2"), timeout=30)
            assert bob["last_seen"] == "2026-01-01T00:00:00+00:00"
            probe.wait_for(topics.status, timeout=30, predicate=lambda m: m.payload == b"online")
        finally:
            probe.close()


def test_home_assistant_birth_message_makes_the_device_announce_again(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    with running(mosquitto.port, topics, {"p1": "Alice"}) as run:
        config = run.builder.device_configs()[0].topic
        mqtt_probe.wait_for(config)
        _drain(mqtt_probe)  # the next message on ``config`` must be a new one
        mqtt_probe.publish(BIRTH, b"offline")
        mqtt_probe.publish(BIRTH, b"online")
        again = mqtt_probe.wait_for(config, timeout=10)
        assert again.payload != b""


def test_clean_stop_and_database_changes(mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = _topics()
    persons = {"p1": "Alice"}
    with running(mosquitto.port, topics, persons) as run:
        run.retained.set_presence("p1", "Alice", True)
        mqtt_probe.wait_for(topics.presence("p1"), predicate=lambda m: m.payload == b"on")
        # Enrolled while running: announced, presence off until first seen.
        persons["p2"] = "Bob"
        run.retained.persons_changed()
        mqtt_probe.wait_for(run.builder.person_configs("p2", "Bob")[0].topic)
        mqtt_probe.wait_for(topics.presence("p2"), predicate=lambda m: m.payload == b"off")
        # Renamed: same entity (topic, unique_id), new name.
        persons["p1"] = "Alicia"
        run.retained.persons_changed()
        renamed = mqtt_probe.wait_json(
            run.builder.person_configs("p1", "Alicia")[0].topic, predicate=lambda c: c.get("name") == "Alicia"
        )
        assert renamed["unique_id"].endswith("_presence_p1")
        # Deleted while running: every retained topic of the person cleared.
        run.retained.recognised(_decision(person_id="p2", name="Bob"))
        mqtt_probe.wait_for(topics.person("p2"))
        del persons["p2"]
        run.retained.persons_changed()
        for topic in [*run.builder.person_topics("p2"), topics.presence("p2"), topics.person("p2")]:
            mqtt_probe.wait_for(topic, predicate=lambda m: m.payload == b"")
        _drain(mqtt_probe)  # p1's 'off' from the connection must not count as the one of the stop
        run.retained.stop()
        mqtt_probe.wait_for(topics.presence("p1"), predicate=lambda m: m.payload == b"off")
    assert _retained_now(mosquitto.port, topics.presence("p1")) == b"off"


def test_the_embedded_broker_is_reconciled_too() -> None:
    """The demo's amqtt broker speaks MQTT 3.1.1: the same subscriptions and corrections work there."""
    broker = EmbeddedBroker(port=0)
    broker.start()
    try:
        topics = _topics()
        probe = MqttProbe(broker.port, "#", protocol=PROTOCOL)
        try:
            gone = _leave_behind(probe, topics, "gone", b"on")
            probe.publish(topics.presence("p1"), b"on", retain=True)
            with running(broker.port, topics, {"p1": "Alice"}, protocol=PROTOCOL):
                probe.wait_for(topics.presence("p1"), timeout=20, predicate=lambda m: m.payload == b"off")
                for topic in [*gone, topics.presence("gone")]:
                    probe.wait_for(topic, timeout=20, predicate=lambda m: m.payload == b"")
        finally:
            probe.close()
    finally:
        broker.stop()
