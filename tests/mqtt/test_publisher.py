"""EventPublisher: each kind of event on its topic with its retain flag, through a real link and broker."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator

import pytest

from edgeface.config import MqttConfig
from edgeface.data import BBox, Decision
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.publisher import EventPublisher
from edgeface.mqtt.topics import Topics
from tests.conftest import Broker, MqttProbe


@pytest.fixture
def link(mosquitto: Broker) -> Iterator[MqttLink]:
    topics = Topics("edgeface", f"pub-{uuid.uuid4().hex[:8]}")
    link = MqttLink(
        MqttConfig(host="127.0.0.1", port=mosquitto.port), topics, "Front door", lambda *a: None, threading.Event()
    )
    link.start()
    link.wait_connected(10)
    yield link
    link.stop()


def _decision(status: str, **changes: object) -> Decision:
    values: dict[str, object] = {
        "track_id": 7,
        "status": status,
        "reason": "matched" if status == "known" else "no_match",
        "person_id": "p1" if status == "known" else None,
        "name": "Alice" if status == "known" else None,
        "similarity": 0.9 if status == "known" else 0.2,
        "threshold": 0.8,
        "margin": 0.2,
        "grant": status == "known",
        "bbox": BBox(1, 2, 30, 40),
        "frame_index": 5,
        "captured_at": 0.0,
        "wall_time": 1_700_000_000.0,
        "samples": 2,
        "liveness": None,
        "stage_ms": {"detect": 1.0},
        "unknown_id": None if status == "known" else "u-1",
    }
    values.update(changes)
    return Decision(**values)  # type: ignore[arg-type]


def test_decisions_presence_and_state_go_to_their_topics(link: MqttLink, mqtt_probe: MqttProbe) -> None:
    echoed: list[str] = []
    topics = link.topics
    publisher = EventPublisher(
        link, topics, topics.device_id, snapshot=lambda uid: b"jpeg-of-" + uid.encode(), echo=echoed.append
    )
    publisher.decision(_decision("known"))
    publisher.decision(_decision("unknown"))
    publisher.presence("p1", "Alice", True)
    publisher.state({"device": topics.device_id, "fps": 1.0})

    known = mqtt_probe.wait_json(topics.recognition)
    assert (known["person_id"], known["track_id"], known["device"]) == ("p1", 7, topics.device_id)
    stranger = mqtt_probe.wait_json(topics.unknown)
    assert stranger["unknown_id"] == "u-1"
    assert base64.b64decode(stranger["snapshot"]) == b"jpeg-of-u-1"
    # The same face as raw bytes for Home Assistant's image entity, not retained.
    raw = mqtt_probe.wait_for(topics.unknown_snapshot)
    assert raw.payload == b"jpeg-of-u-1" and raw.retain is False
    presence = mqtt_probe.wait_for(topics.presence("p1"))
    assert presence.payload == b"on" and presence.retain is False  # live delivery of a retained message
    state = mqtt_probe.wait_json(topics.state)
    assert state == {"device": topics.device_id, "fps": 1.0}
    # Events and presence are echoed for the CLI; the periodic state document is not.
    assert [line.split(" ", 1)[0] for line in echoed] == [topics.recognition, topics.unknown, topics.presence("p1")]
    assert json.loads(echoed[0].split(" ", 1)[1])["person_id"] == "p1"


def test_presence_and_state_are_retained(link: MqttLink, mosquitto: Broker, mqtt_probe: MqttProbe) -> None:
    topics = link.topics
    publisher = EventPublisher(link, topics, topics.device_id)
    publisher.presence("p2", "Bob", False)
    publisher.state({"device": topics.device_id})
    publisher.decision(_decision("unknown"))
    assert "snapshot" not in mqtt_probe.wait_json(topics.unknown)  # no snapshot lookup given
    late = MqttProbe(mosquitto.port, f"{topics.root}/#")
    try:
        # A subscriber that arrives later still gets the retained values, and no event.
        assert late.wait_for(topics.presence("p2")).payload == b"off"
        assert late.wait_for(topics.state).retain is True
        with pytest.raises(AssertionError):
            late.wait_for(topics.unknown, timeout=1.0)
    finally:
        late.close()


def test_presence_goes_through_its_owner_when_one_is_given(link: MqttLink) -> None:
    owned: list[tuple[str, str, bool]] = []
    echoed: list[str] = []
    topics = link.topics
    publisher = EventPublisher(
        link, topics, topics.device_id, echo=echoed.append, presence=lambda *change: owned.append(change)
    )
    publisher.presence("p1", "Alice", True)
    assert owned == [("p1", "Alice", True)]
    assert echoed == [f"{topics.presence('p1')} on"]
