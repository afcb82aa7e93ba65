"""Home Assistant discovery over a real broker, and the event payload builders it points at."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest

from edgeface.config import MqttConfig
from edgeface.data import BBox, Decision, LivenessResult
from edgeface.mqtt.discovery import Discovery, DiscoveryBuilder, object_id
from edgeface.mqtt.events import iso_time, presence_payload, recognition_event, state_document, unknown_event
from edgeface.mqtt.link import LinkStats, MqttLink
from edgeface.mqtt.topics import Topics
from tests.conftest import Broker, MqttProbe

PREFIX = "homeassistant"


@pytest.fixture
def link(mosquitto: Broker) -> Iterator[MqttLink]:
    topics = Topics("edgeface", f"ha-{uuid.uuid4().hex[:8]}")
    link = MqttLink(
        MqttConfig(host="127.0.0.1", port=mosquitto.port), topics, "Front door", lambda *a: None, threading.Event()
    )
    link.start()
    link.wait_connected(10)
    yield link
    link.stop()


def _discovery(link: MqttLink) -> tuple[Discovery, DiscoveryBuilder]:
    builder = DiscoveryBuilder(link.topics, PREFIX, "Front door", "0.1.0")
    return Discovery(link, builder), builder


def test_announce_device_and_persons(link: MqttLink, mqtt_probe: MqttProbe) -> None:
    discovery, builder = _discovery(link)
    topics = builder.topics
    discovery.announce([("p1", "Alice"), ("p/2", "Bob")])

    sensor = mqtt_probe.wait_json(f"{PREFIX}/sensor/{topics.device_id}/last_person/config")
    assert sensor["state_topic"] == topics.recognition
    assert sensor["value_template"] == "{{ value_json.name }}"
    assert sensor["availability_topic"] == topics.status
    assert (sensor["payload_available"], sensor["payload_not_available"]) == ("online", "offline")
    assert sensor["device"]["identifiers"] == [f"edgeface_{topics.device_id}"]
    assert sensor["device"]["name"] == "Front door"

    unknown = mqtt_probe.wait_json(f"{PREFIX}/sensor/{topics.device_id}/last_unknown/config")
    assert unknown["state_topic"] == topics.unknown and "snapshot" not in unknown["json_attributes_template"]

    online = mqtt_probe.wait_json(f"{PREFIX}/binary_sensor/{topics.device_id}/online/config")
    assert online["state_topic"] == topics.status and "availability_topic" not in online

    alice = mqtt_probe.wait_json(f"{PREFIX}/binary_sensor/{topics.device_id}/presence_p1/config")
    assert alice["name"] == "Alice" and alice["device_class"] == "presence"
    assert alice["state_topic"] == topics.presence("p1")
    assert (alice["payload_on"], alice["payload_off"]) == ("on", "off")
    bob = mqtt_probe.wait_json(f"{PREFIX}/binary_sensor/{topics.device_id}/presence_p_2/config")
    assert bob["unique_id"] == f"edgeface_{topics.device_id}_presence_p_2"

    # Configs are retained: a Home Assistant starting later still finds them.
    late = MqttProbe(link.port, f"{PREFIX}/binary_sensor/{topics.device_id}/presence_p1/config")
    try:
        assert late.wait_for(f"{PREFIX}/binary_sensor/{topics.device_id}/presence_p1/config").retain
    finally:
        late.close()
    discovery.remove_person("p1")
    discovery.remove_person("p/2")


def test_deleted_person_is_removed(link: MqttLink, mqtt_probe: MqttProbe) -> None:
    discovery, builder = _discovery(link)
    config_topic = builder.person_topic("p1")
    discovery.announce([("p1", "Alice"), ("p2", "Bob")])
    mqtt_probe.wait_for(config_topic)
    discovery.remove_person("p1")
    removal = mqtt_probe.wait_for(config_topic)
    assert removal.payload == b""
    assert mqtt_probe.wait_for(builder.topics.presence("p1")).payload == b""

    # announce() removes persons that disappeared since the last announcement (deleted while offline).
    discovery.announce([("p3", "Carol")])
    assert mqtt_probe.wait_for(builder.person_topic("p2"), predicate=lambda m: m.payload == b"").payload == b""
    discovery.remove_person("p3")


def test_object_id_is_topic_safe() -> None:
    assert object_id("a b/c+#é") == "a_b_c___"


# --- event payloads --------------------------------------------------------------------------------


def _decision(**changes: object) -> Decision:
    values: dict[str, object] = {
        "track_id": 4,
        "status": "known",
        "reason": "matched",
        "person_id": "p1",
        "name": "Alice",
        "similarity": 0.91234567,
        "threshold": 0.8,
        "margin": 0.2,
        "grant": True,
        "bbox": BBox(10.4, 20.6, 110.4, 140.6),
        "frame_index": 99,
        "captured_at": 1234.5,
        "wall_time": 1_700_000_000.25,
        "samples": 3,
        "liveness": LivenessResult(True, 0.97, {"blink": 1.0}),
        "stage_ms": {"detect": 12.34, "embed": 20.0},
    }
    values.update(changes)
    return Decision(**values)  # type: ignore[arg-type]


def test_recognition_event_shape() -> None:
    event = recognition_event(_decision(), "door")
    assert event == {
        "person_id": "p1",
        "name": "Alice",
        "grant": True,
        "track_id": 4,
        "status": "known",
        "reason": "matched",
        "similarity": 0.9123,
        "distance": 0.0877,
        "threshold": 0.8,
        "margin": 0.2,
        "bbox": [10, 21, 100, 120],
        "frame": {"index": 99, "captured_at": "2023-11-14T22:13:20.250+00:00"},
        "liveness": {"live": True, "score": 0.97, "checks": {"blink": 1.0}},
        "samples": 3,
        "stage_ms": {"detect": 12.3, "embed": 20.0},
        "total_ms": 32.3,
        "device": "door",
    }
    assert json.loads(json.dumps(event)) == event
    assert recognition_event(_decision(liveness=None), "door", total_ms=50.06)["total_ms"] == 50.1


def test_unknown_event_shape() -> None:
    stranger = _decision(status="unknown", reason="below_threshold", person_id=None, name=None, unknown_id="u7")
    event = unknown_event(stranger, "door")
    assert event["unknown_id"] == "u7" and event["best_match"] is None and "snapshot" not in event
    uncertain = _decision(status="uncertain", reason="uncertain_band", unknown_id="u8")
    event = unknown_event(uncertain, "door", snapshot=b"\xff\xd8jpeg")
    assert event["best_match"] == {"person_id": "p1", "name": "Alice"}
    assert event["snapshot"] == "/9hqcGVn"


def test_presence_and_state_document() -> None:
    assert (presence_payload(True), presence_payload(False)) == ("on", "off")
    stats = LinkStats(published=5, dropped=1, reconnects=2, queued=0, in_flight=1, connected=True)
    doc = state_document(
        device_id="door",
        version="0.1.0",
        started_at=100.0,
        fps=14.567,
        persons=3,
        broker=stats,
        source={"uri": "0", "connected": True},
        drops={"detect": 2},
        extra={"fps": -1, "liveness": "on"},
        now=160.0,
    )
    assert doc == {
        "device": "door",
        "version": "0.1.0",
        "updated_at": iso_time(160.0),
        "uptime_s": 60.0,
        "fps": 14.57,
        "persons": 3,
        "broker": {"connected": True, "published": 5, "dropped": 1, "reconnects": 2, "queued": 0},
        "source": {"uri": "0", "connected": True},
        "drops": {"detect": 2},
        "db_fallback": False,
        "liveness": "on",
    }
