"""Home Assistant discovery configs: valid for HA's MQTT platforms, stable ids, templates that render what HA needs.

Templates are rendered with Jinja's sandbox (HA's template engine) against the device's real event
payloads, so a template that HA would reject or mis-read fails here.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgeface.data import BBox, Candidate, Decision, LivenessResult
from edgeface.mqtt.discovery import DiscoveryBuilder, DiscoveryOptions
from edgeface.mqtt.events import (
    iso_time,
    person_document,
    presence_payload,
    recognition_event,
    state_document,
    unknown_event,
)
from edgeface.mqtt.ha_config import DiscoveryMessage, object_id
from edgeface.mqtt.link import LinkStats
from edgeface.mqtt.topics import Topics
from tests.mqtt.ha_schema import validate

PREFIX = "homeassistant"
TOPICS = Topics("edgeface", "door")
PERSONS = {"3f9c2a71d0e4": "Alice", "p/2": "Bob"}
ALL_OPTIONS = [
    DiscoveryOptions(),
    DiscoveryOptions(snapshots=True),
    DiscoveryOptions(controls=True),
    DiscoveryOptions(snapshots=True, controls=True, stranger_off_delay_s=12.0),
]
# The diagnostic sensors every device has (with controls, ``sensor/control_result`` joins them).
DIAGNOSTICS = {
    "sensor/fps",
    "sensor/source_state",
    "sensor/persons",
    "sensor/queued",
    "sensor/dropped_events",
    "sensor/dropped_frames",
    "sensor/last_error",
    "binary_sensor/db_fallback",
}


def _builder(options: DiscoveryOptions | None = None) -> DiscoveryBuilder:
    return DiscoveryBuilder(TOPICS, PREFIX, "Front door", "0.1.0", options)


def _component(message: DiscoveryMessage) -> str:
    found = TOPICS.discovery_of(PREFIX, message.topic)
    assert found is not None, message.topic
    return found[0]


def _by_key(messages: list[DiscoveryMessage]) -> dict[str, dict[str, Any]]:
    out = {}
    for message in messages:
        found = TOPICS.discovery_of(PREFIX, message.topic)
        assert found is not None and isinstance(message.payload, dict)
        out[f"{found[0]}/{found[1]}"] = message.payload
    return out


# --- schema -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=["plain", "snapshots", "controls", "all"])
def test_every_config_is_valid_for_home_assistant(options: DiscoveryOptions) -> None:
    messages = _builder(options).configs(PERSONS)
    for message in messages:
        assert isinstance(message.payload, dict)
        validate(_component(message), message.payload)
    entities = [m.payload for m in messages if _component(m) != "device_automation"]
    unique_ids = [p["unique_id"] for p in entities if isinstance(p, dict)]
    assert len(unique_ids) == len(set(unique_ids)), "unique_id reused"
    for payload in entities:
        assert isinstance(payload, dict)
        assert payload["origin"]["name"] == "edgeface"
        assert payload["device"]["identifiers"] == ["edgeface_door"]
        if payload["unique_id"] != "edgeface_door_online":
            assert payload["availability_topic"] == TOPICS.status


def test_schema_mirror_rejects_what_home_assistant_rejects() -> None:
    good = _by_key(_builder().configs({}))
    broken = [
        ("event", {**good["event/recognition"], "event_types": []}),
        ("sensor", {**good["sensor/last_person"], "stat_topic": "x"}),  # misspelt key
        ("sensor", {**good["sensor/fps"], "device_class": "timestamp"}),  # state_class with a timestamp
        ("binary_sensor", {**good["binary_sensor/stranger_present"], "state_topic": "a/#/b"}),
        ("image", {"name": "x", "content_type": "image/jpeg"}),  # no topic
        ("device_automation", {**good["device_automation/granted"], "automation_type": "action"}),
        ("sensor", {**good["sensor/last_person"], "device": {"name": "no identifiers"}}),
    ]
    for component, config in broken:
        with pytest.raises(ValueError):
            validate(component, config)


def test_optional_schema_check_with_home_assistant_itself() -> None:
    """HA's own voluptuous discovery schemas, when ``homeassistant`` is installed."""
    pytest.importorskip("homeassistant")
    for message in _builder(ALL_OPTIONS[-1]).configs(PERSONS):
        component = _component(message)
        if component == "device_automation":
            module = importlib.import_module("homeassistant.components.mqtt.device_trigger")
            module.TRIGGER_DISCOVERY_SCHEMA(message.payload)
        else:
            module = importlib.import_module(f"homeassistant.components.mqtt.{component}")
            module.DISCOVERY_SCHEMA(message.payload)


def test_which_entities_exist() -> None:
    plain = _by_key(_builder().configs({"p1": "Alice"}))
    assert {
        "binary_sensor/online",
        "sensor/last_person",
        "sensor/last_unknown",
        "event/recognition",
        "event/stranger",
        "binary_sensor/stranger_present",
        "device_automation/granted",
        "device_automation/denied",
        "device_automation/unknown",
        "device_automation/uncertain",
        *DIAGNOSTICS,
        "binary_sensor/presence_p1",
        "sensor/last_seen_p1",
        "sensor/confidence_p1",
        "device_automation/recognised_p1",
    } == set(plain)
    # Privacy by default: no face image leaves the device unless snapshots are published.
    assert not any(key.startswith(("image/", "text/", "button/")) for key in plain)
    everything = _by_key(_builder(ALL_OPTIONS[-1]).configs({"p1": "Alice"}))
    assert everything["image/last_unknown_face"]["image_topic"] == TOPICS.unknown_snapshot
    assert everything["image/last_unknown_face"]["content_type"] == "image/jpeg"
    assert everything["text/confirm_name"]["command_topic"] == TOPICS.control("confirm_name")
    for button in ("confirm", "ignore", "reload"):
        assert everything[f"button/{button}"]["command_topic"] == TOPICS.control(button)
    assert everything["binary_sensor/stranger_present"]["off_delay"] == 12
    diagnostic = {k for k, v in everything.items() if v.get("entity_category") == "diagnostic"}
    assert diagnostic == {*DIAGNOSTICS, "sensor/control_result"}


def test_person_entities_keep_their_ids_across_a_rename() -> None:
    before = _builder().person_configs("p/2", "Bob")
    after = _builder().person_configs("p/2", "Robert")
    assert [m.topic for m in before] == [m.topic for m in after]
    assert [m.topic for m in before] == _builder().person_topics("p/2")
    for old, new in zip(before, after, strict=True):
        assert isinstance(old.payload, dict) and isinstance(new.payload, dict)
        assert old.payload.get("unique_id") == new.payload.get("unique_id")
    presence = after[0].payload
    assert isinstance(presence, dict)
    assert presence["name"] == "Robert" and presence["unique_id"] == "edgeface_door_presence_p_2"
    assert presence["state_topic"] == TOPICS.presence("p/2")
    assert (presence["payload_on"], presence["payload_off"]) == ("on", "off")
    trigger = after[3].payload
    assert isinstance(trigger, dict) and trigger["subtype"] == "Robert" and trigger["payload"] == "p/2"


def test_object_id_is_topic_safe() -> None:
    assert object_id("a b/c+#é") == "a_b_c___"


# --- templates against real payloads ------------------------------------------------------------------


def _render(template: str, payload: dict[str, Any]) -> str:
    env = ImmutableSandboxedEnvironment()
    return str(env.from_string(template).render(value_json=payload))


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


def _stranger(**changes: object) -> Decision:
    base: dict[str, object] = {
        "status": "unknown",
        "reason": "below_threshold",
        "person_id": None,
        "name": None,
        "grant": False,
        "unknown_id": "u-1",
        "closest": Candidate("p1", "Alice", 0.51),
    }
    return _decision(**{**base, **changes})


def test_event_templates_give_home_assistant_an_event_type() -> None:
    configs = _by_key(_builder().configs({"p1": "Alice"}))
    recognition = configs["event/recognition"]
    for grant, expected in ((True, "granted"), (False, "denied")):
        event = json.loads(_render(recognition["value_template"], recognition_event(_decision(grant=grant), "door")))
        assert event["event_type"] == expected and expected in recognition["event_types"]
        assert (event["person_id"], event["name"], event["similarity"]) == ("p1", "Alice", 0.9123)
    stranger = configs["event/stranger"]
    for status in ("unknown", "uncertain"):
        event = json.loads(_render(stranger["value_template"], unknown_event(_stranger(status=status), "door")))
        assert event["event_type"] == status and status in stranger["event_types"]
        assert event["best_match"] == {"person_id": "p1", "name": "Alice", "similarity": 0.51}


def test_device_triggers_fire_on_the_right_events() -> None:
    configs = _by_key(_builder().configs({"p1": "Alice", "p2": "Bob"}))

    def fires(key: str, payload: dict[str, Any]) -> bool:
        trigger = configs[f"device_automation/{key}"]
        return _render(trigger["value_template"], payload) == trigger["payload"]

    alice_in = recognition_event(_decision(grant=True), "door")
    alice_denied = recognition_event(_decision(grant=False, reason="liveness_failed"), "door")
    assert fires("granted", alice_in) and not fires("denied", alice_in)
    assert fires("denied", alice_denied) and not fires("granted", alice_denied)
    assert fires("recognised_p1", alice_in) and not fires("recognised_p2", alice_in)
    assert not fires("recognised_p1", alice_denied)  # a photo of Alice is not Alice at the door
    stranger = unknown_event(_stranger(), "door")
    assert fires("unknown", stranger) and not fires("uncertain", stranger)


def test_sensor_templates_render_the_state_document_and_events() -> None:
    configs = _by_key(_builder(ALL_OPTIONS[-1]).configs({"p1": "Alice"}))
    stats = LinkStats(published=5, dropped=2, reconnects=1, queued=7, in_flight=0, connected=True)
    state = state_document(
        device_id="door",
        version="0.1.0",
        started_at=0.0,
        fps=14.567,
        persons=3,
        broker=stats,
        source={"uri": "rtsp://cam", "state": "reconnecting", "detail": "timeout"},
        drops={"detect": 2, "embed": 3},
        db_fallback=True,
        extra={"last_error": {"message": "source lost", "level": "WARNING"}},
        now=60.0,
    )
    expected = {
        "sensor/fps": "14.57",
        "sensor/source_state": "reconnecting",
        "sensor/persons": "3",
        "sensor/queued": "7",
        "sensor/dropped_events": "2",
        "sensor/dropped_frames": "5",
        "sensor/last_error": "source lost",
        "binary_sensor/db_fallback": "ON",
    }
    for key, value in expected.items():
        assert _render(configs[key]["value_template"], state) == value, key
    source = json.loads(_render(configs["sensor/source_state"]["json_attributes_template"], state))
    assert source["detail"] == "timeout"
    healthy = {**state, "last_error": None, "db_fallback": False, "broker": None}
    assert _render(configs["sensor/last_error"]["value_template"], healthy) == "none"
    assert _render(configs["binary_sensor/db_fallback"]["value_template"], healthy) == "OFF"
    assert _render(configs["sensor/queued"]["value_template"], healthy) == "0"

    last_unknown = configs["sensor/last_unknown"]
    assert _render(last_unknown["value_template"], unknown_event(_stranger(), "door")) == "u-1"
    # A face that never passed the gates has no unknown_id: the sensor says why, not "unknown".
    gated = unknown_event(_stranger(status="uncertain", reason="too_small", unknown_id=None, closest=None), "door")
    assert _render(last_unknown["value_template"], gated) == "too_small"
    attributes = json.loads(_render(last_unknown["json_attributes_template"], unknown_event(_stranger(), "door")))
    assert attributes["best_match"]["name"] == "Alice" and "snapshot" not in attributes
    assert _render(configs["binary_sensor/stranger_present"]["value_template"], gated) == "ON"

    seen = person_document(_decision())
    assert _render(configs["sensor/last_seen_p1"]["value_template"], seen) == iso_time(1_700_000_000.25)
    assert _render(configs["sensor/confidence_p1"]["value_template"], seen) == "91.2"
    result = configs["sensor/control_result"]
    refused = {"ok": False, "verb": "confirm", "request_id": "r", "error": {"code": "conflict", "message": "m"}}
    assert _render(result["value_template"], refused) == "conflict"
    assert _render(result["value_template"], {"ok": True, "verb": "reload", "request_id": "r"}) == "ok"
    assert json.loads(_render(result["json_attributes_template"], refused))["message"] == "m"


# --- event payloads ------------------------------------------------------------------------------------


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


def test_unknown_event_names_the_closest_person() -> None:
    event = unknown_event(_stranger(closest=None), "door")
    assert event["unknown_id"] == "u-1" and event["best_match"] is None and "snapshot" not in event
    uncertain = _stranger(status="uncertain", reason="uncertain_band", unknown_id="u8", similarity=0.85)
    event = unknown_event(uncertain, "door", snapshot=b"\xff\xd8jpeg")
    assert event["best_match"] == {"person_id": "p1", "name": "Alice", "similarity": 0.51}
    assert event["snapshot"] == "/9hqcGVn"


def test_person_presence_and_state_documents() -> None:
    assert (presence_payload(True), presence_payload(False)) == ("on", "off")
    assert person_document(_decision(similarity=-0.2))["confidence"] == 0.0
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
