"""The Home Assistant entities of the device itself (not of a person), and the templates reading our payloads.

Each template maps one of edgeface's MQTT documents (``recognition``, ``unknown``, ``state``,
``control_result``) onto what HA shows: a state of at most 255 characters, attributes, or an event
with its ``event_type``. ``discovery.py`` decides which of these entities a device offers.
"""

from __future__ import annotations

from typing import Any

from edgeface.mqtt.ha_config import ConfigFactory, DiscoveryMessage
from edgeface.mqtt.link import OFFLINE, ONLINE

# HA keeps at most 255 characters of a sensor state.
_STATE_CHARS = 255

_UNKNOWN_ATTRIBUTES = (
    "{{ {'track_id': value_json.track_id, 'status': value_json.status, 'similarity': value_json.similarity, "
    "'best_match': value_json.best_match, 'reason': value_json.reason, "
    "'captured_at': value_json.frame.captured_at} | tojson }}"
)
# Event payloads: ``event_type`` plus the attributes HA shows on the event entity.
_RECOGNITION_EVENT = (
    "{{ {'event_type': 'granted' if value_json.grant else 'denied', 'person_id': value_json.person_id, "
    "'name': value_json.name, 'similarity': value_json.similarity, 'reason': value_json.reason, "
    "'grant': value_json.grant, 'track_id': value_json.track_id, "
    "'captured_at': value_json.frame.captured_at} | tojson }}"
)
_STRANGER_EVENT = (
    "{{ {'event_type': value_json.status, 'unknown_id': value_json.unknown_id, "
    "'best_match': value_json.best_match, 'similarity': value_json.similarity, 'reason': value_json.reason, "
    "'track_id': value_json.track_id, 'captured_at': value_json.frame.captured_at} | tojson }}"
)
_LAST_ERROR = f"{{{{ (value_json.last_error.message if value_json.last_error else 'none')[:{_STATE_CHARS}] }}}}"
_GRANT = "{{ 'granted' if value_json.grant else 'denied' }}"


def recognition_entities(f: ConfigFactory) -> list[DiscoveryMessage]:
    """Online state, the last recognised person and the granted/denied event with its triggers."""
    t = f.topics
    return [
        f.entity(
            "binary_sensor",
            "online",
            "Online",
            {"state_topic": t.status, "payload_on": ONLINE, "payload_off": OFFLINE, "device_class": "connectivity"},
            available=False,
        ),
        f.entity(
            "sensor",
            "last_person",
            "Last person",
            {
                "state_topic": t.recognition,
                "value_template": "{{ value_json.name }}",
                "json_attributes_topic": t.recognition,
                "icon": "mdi:account-check",
            },
        ),
        f.entity(
            "event",
            "recognition",
            "Recognition",
            {
                "state_topic": t.recognition,
                "value_template": _RECOGNITION_EVENT,
                "event_types": ["granted", "denied"],
                "icon": "mdi:face-recognition",
            },
        ),
        f.trigger("granted", t.recognition, "granted", "Access", _GRANT, "granted"),
        f.trigger("denied", t.recognition, "denied", "Access", _GRANT, "denied"),
    ]


def stranger_entities(f: ConfigFactory, *, off_delay_s: float, snapshots: bool) -> list[DiscoveryMessage]:
    """The last unknown face: sensor, event, presence and triggers; with ``snapshots`` its image too."""
    t = f.topics
    messages = [
        f.entity(
            "sensor",
            "last_unknown",
            "Last unknown",
            {
                "state_topic": t.unknown,
                # A face that never passed the quality gates has no embedding, hence no unknown_id:
                # show why it could not be decided instead of HA's bare "unknown".
                "value_template": "{{ value_json.unknown_id or value_json.reason }}",
                "json_attributes_topic": t.unknown,
                "json_attributes_template": _UNKNOWN_ATTRIBUTES,
                "icon": "mdi:account-question",
            },
        ),
        f.entity(
            "event",
            "stranger",
            "Stranger",
            {
                "state_topic": t.unknown,
                "value_template": _STRANGER_EVENT,
                "event_types": ["unknown", "uncertain"],
                "icon": "mdi:account-alert",
            },
        ),
        f.entity(
            "binary_sensor",
            "stranger_present",
            "Stranger at the door",
            {
                "state_topic": t.unknown,
                "value_template": "{{ 'ON' }}",
                "off_delay": max(1, round(off_delay_s)),
                "device_class": "occupancy",
            },
        ),
        f.trigger("unknown", t.unknown, "seen", "Unknown face", "{{ value_json.status }}", "unknown"),
        f.trigger("uncertain", t.unknown, "seen", "Uncertain face", "{{ value_json.status }}", "uncertain"),
    ]
    if snapshots:
        messages.append(
            f.entity(
                "image",
                "last_unknown_face",
                "Last unknown face",
                {"image_topic": t.unknown_snapshot, "content_type": "image/jpeg"},
            )
        )
    return messages


def diagnostics(f: ConfigFactory) -> list[DiscoveryMessage]:
    """Diagnostic sensors read from the retained ``state`` document."""
    state = f.topics.state

    def sensor(key: str, name: str, template: str, **extra: Any) -> DiscoveryMessage:
        config = {"state_topic": state, "value_template": template, **extra}
        return f.entity("sensor", key, name, config, diagnostic=True)

    return [
        sensor("fps", "Frame rate", "{{ value_json.fps }}", unit_of_measurement="fps", state_class="measurement"),
        sensor(
            "source_state",
            "Camera",
            "{{ value_json.source.state }}",
            json_attributes_topic=state,
            json_attributes_template="{{ value_json.source | tojson }}",
            icon="mdi:cctv",
        ),
        sensor("persons", "Enrolled persons", "{{ value_json.persons }}", state_class="measurement"),
        sensor(
            "queued",
            "Events queued",
            "{{ value_json.broker.queued if value_json.broker else 0 }}",
            state_class="measurement",
        ),
        sensor(
            "dropped_events",
            "Events dropped",
            "{{ value_json.broker.dropped if value_json.broker else 0 }}",
            state_class="total_increasing",
        ),
        sensor(
            "dropped_frames",
            "Frames dropped",
            "{{ value_json.drops.values() | sum }}",
            state_class="total_increasing",
            json_attributes_topic=state,
            json_attributes_template="{{ value_json.drops | tojson }}",
        ),
        sensor(
            "last_error",
            "Last error",
            _LAST_ERROR,
            json_attributes_topic=state,
            json_attributes_template="{{ (value_json.last_error or {}) | tojson }}",
            icon="mdi:alert-circle-outline",
        ),
        f.entity(
            "binary_sensor",
            "db_fallback",
            "Database fallback",
            {
                "state_topic": state,
                "value_template": "{{ 'ON' if value_json.db_fallback else 'OFF' }}",
                "device_class": "problem",
            },
            diagnostic=True,
        ),
    ]


def controls(f: ConfigFactory) -> list[DiscoveryMessage]:
    """Name, enroll or ignore the last unknown face, reload the database, and the last result."""
    t = f.topics
    return [
        f.entity(
            "text",
            "confirm_name",
            "Name for the last unknown",
            {"command_topic": t.control("confirm_name"), "min": 0, "max": 128, "mode": "text"},
        ),
        f.entity(
            "button",
            "confirm",
            "Enroll the last unknown",
            {"command_topic": t.control("confirm"), "payload_press": "PRESS", "icon": "mdi:account-plus"},
        ),
        f.entity(
            "button",
            "ignore",
            "Ignore the last unknown",
            {"command_topic": t.control("ignore"), "payload_press": "PRESS", "icon": "mdi:account-cancel"},
        ),
        f.entity(
            "button",
            "reload",
            "Reload the database",
            {"command_topic": t.control("reload"), "payload_press": "PRESS", "entity_category": "config"},
        ),
        f.entity(
            "sensor",
            "control_result",
            "Last control result",
            {
                "state_topic": t.control_result,
                "value_template": "{{ 'ok' if value_json.ok else value_json.error.code }}",
                "json_attributes_topic": t.control_result,
                "json_attributes_template": (
                    "{{ {'verb': value_json.verb, 'request_id': value_json.request_id, "
                    "'message': value_json.error.message if not value_json.ok else ''} | tojson }}"
                ),
            },
            diagnostic=True,
        ),
    ]
