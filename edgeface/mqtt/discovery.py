"""Home Assistant MQTT discovery: the config document of every entity of one device.

One device (``identifiers: edgeface_<device_id>``) groups every entity; each ``unique_id`` is
``edgeface_<device_id>_<object_id>`` and a person's entities are keyed by person id, never by name,
so a rename keeps the entity (and its history and automations). Every entity except ``online`` is
unavailable while ``status`` is ``offline``. Configs are retained under
``<discovery_prefix>/<component>/<device_id>/<object_id>/config``; an empty retained config removes
the entity. Which configs should exist is decided here (``DiscoveryBuilder.configs``) and kept true
on the broker by ``retained.RetainedState``.

Device entities: ``online``, ``last_person``, ``last_unknown``; events ``recognition`` (event types
``granted``/``denied``) and ``stranger`` (``unknown``/``uncertain``) with device triggers for each;
binary sensor ``stranger_present``; with snapshots published the ``last_unknown_face`` image; with controls
the ``confirm_name`` text and ``confirm``/``ignore``/``reload`` buttons; diagnostic sensors from
``state``. Per person: ``presence_<id>``, ``last_seen_<id>``, ``confidence_<id>`` and the device
trigger ``recognised_<id>``. The README lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgeface.mqtt.events import PRESENCE_OFF, PRESENCE_ON
from edgeface.mqtt.link import OFFLINE, ONLINE
from edgeface.mqtt.topics import Topics

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
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


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained config message; an empty ``payload`` removes the entity."""

    topic: str
    payload: dict[str, Any] | str


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """What the device offers beyond the always-present entities."""

    snapshots: bool = False  # the last unknown face as an image (unknowns.snapshots and publish_snapshot)
    controls: bool = False  # confirm/ignore/reload from HA (see controls.py for when they are on)
    stranger_off_delay_s: float = 30.0  # the stranger binary sensor turns off this long after the last one


def object_id(text: str) -> str:
    """``text`` made safe for a discovery topic / unique_id (letters, digits, '_' and '-')."""
    return _UNSAFE.sub("_", text)


class DiscoveryBuilder:
    """Builds the config documents of one device."""

    def __init__(
        self,
        topics: Topics,
        prefix: str,
        device_name: str,
        version: str,
        options: DiscoveryOptions | None = None,
    ) -> None:
        self.topics = topics
        self.prefix = prefix
        self.device_name = device_name
        self.version = version
        self.options = options or DiscoveryOptions()

    # --- the whole set ------------------------------------------------------------------------

    def configs(self, persons: dict[str, str]) -> list[DiscoveryMessage]:
        """Every config that should exist for ``{person_id: name}``: the device's, then each person's."""
        messages = self.device_configs()
        for person_id, name in persons.items():
            messages += self.person_configs(person_id, name)
        return messages

    def person_topics(self, person_id: str) -> list[str]:
        """The config topics of one person's entities (for removing them)."""
        return [message.topic for message in self.person_configs(person_id, person_id)]

    # --- building blocks ----------------------------------------------------------------------

    def device(self) -> dict[str, Any]:
        """The ``device`` block shared by every entity, so HA groups them under one device."""
        return {
            "identifiers": [f"edgeface_{self.topics.device_id}"],
            "name": self.device_name,
            "manufacturer": "edgeface",
            "model": "edgeface face recognition",
            "sw_version": self.version,
        }

    def _origin(self) -> dict[str, Any]:
        return {"name": "edgeface", "sw_version": self.version}

    def _entity(
        self,
        component: str,
        key: str,
        name: str | None,
        extra: dict[str, Any],
        *,
        available: bool = True,
        diagnostic: bool = False,
    ) -> DiscoveryMessage:
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"edgeface_{self.topics.device_id}_{key}",
            "device": self.device(),
            "origin": self._origin(),
            **extra,
        }
        if available:
            config.update(
                availability_topic=self.topics.status, payload_available=ONLINE, payload_not_available=OFFLINE
            )
        if diagnostic:
            config["entity_category"] = "diagnostic"
        return DiscoveryMessage(self.topics.discovery(self.prefix, component, key), config)

    def _trigger(self, key: str, topic: str, kind: str, subtype: str, template: str, payload: str) -> DiscoveryMessage:
        """A device trigger: fires on every message on ``topic`` whose ``template`` renders ``payload``.

        HA's editor shows a trigger of a type it does not know as "<subtype> <type>" ("Access granted")."""
        config = {
            "automation_type": "trigger",
            "topic": topic,
            "type": kind,
            "subtype": subtype,
            "value_template": template,
            "payload": payload,
            "qos": 1,
            "device": self.device(),
            "origin": self._origin(),
        }
        return DiscoveryMessage(self.topics.discovery(self.prefix, "device_automation", key), config)

    # --- device entities ----------------------------------------------------------------------

    def device_configs(self) -> list[DiscoveryMessage]:
        """The entities of the device itself (not of a person)."""
        messages = self._recognition_entities() + self._stranger_entities() + self._diagnostics()
        if self.options.controls:
            messages += self._controls()
        return messages

    def _recognition_entities(self) -> list[DiscoveryMessage]:
        t = self.topics
        return [
            self._entity(
                "binary_sensor",
                "online",
                "Online",
                {"state_topic": t.status, "payload_on": ONLINE, "payload_off": OFFLINE, "device_class": "connectivity"},
                available=False,
            ),
            self._entity(
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
            self._entity(
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
            self._trigger("granted", t.recognition, "granted", "Access", _GRANT, "granted"),
            self._trigger("denied", t.recognition, "denied", "Access", _GRANT, "denied"),
        ]

    def _stranger_entities(self) -> list[DiscoveryMessage]:
        t = self.topics
        messages = [
            self._entity(
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
            self._entity(
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
            self._entity(
                "binary_sensor",
                "stranger_present",
                "Stranger at the door",
                {
                    "state_topic": t.unknown,
                    "value_template": "{{ 'ON' }}",
                    "off_delay": max(1, round(self.options.stranger_off_delay_s)),
                    "device_class": "occupancy",
                },
            ),
            self._trigger("unknown", t.unknown, "seen", "Unknown face", "{{ value_json.status }}", "unknown"),
            self._trigger("uncertain", t.unknown, "seen", "Uncertain face", "{{ value_json.status }}", "uncertain"),
        ]
        if self.options.snapshots:
            messages.append(
                self._entity(
                    "image",
                    "last_unknown_face",
                    "Last unknown face",
                    {"image_topic": t.unknown_snapshot, "content_type": "image/jpeg"},
                )
            )
        return messages

    def _diagnostics(self) -> list[DiscoveryMessage]:
        state = self.topics.state

        def sensor(key: str, name: str, template: str, **extra: Any) -> DiscoveryMessage:
            config = {"state_topic": state, "value_template": template, **extra}
            return self._entity("sensor", key, name, config, diagnostic=True)

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
                "{{ (value_json.last_error.message if value_json.last_error else 'none')[:"
                + str(_STATE_CHARS)
                + "] }}",
                json_attributes_topic=state,
                json_attributes_template="{{ (value_json.last_error or {}) | tojson }}",
                icon="mdi:alert-circle-outline",
            ),
            self._entity(
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

    def _controls(self) -> list[DiscoveryMessage]:
        t = self.topics
        return [
            self._entity(
                "text",
                "confirm_name",
                "Name for the last unknown",
                {"command_topic": t.control("confirm_name"), "min": 0, "max": 128, "mode": "text"},
            ),
            self._entity(
                "button",
                "confirm",
                "Enroll the last unknown",
                {"command_topic": t.control("confirm"), "payload_press": "PRESS", "icon": "mdi:account-plus"},
            ),
            self._entity(
                "button",
                "ignore",
                "Ignore the last unknown",
                {"command_topic": t.control("ignore"), "payload_press": "PRESS", "icon": "mdi:account-cancel"},
            ),
            self._entity(
                "button",
                "reload",
                "Reload the database",
                {"command_topic": t.control("reload"), "payload_press": "PRESS", "entity_category": "config"},
            ),
            self._entity(
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

    # --- per person -----------------------------------------------------------------------------

    def person_configs(self, person_id: str, name: str) -> list[DiscoveryMessage]:
        """The entities of one enrolled person: presence, last seen, confidence, and a device trigger."""
        oid = object_id(person_id)
        seen = self.topics.person(person_id)
        return [
            self._entity(
                "binary_sensor",
                f"presence_{oid}",
                name,
                {
                    "state_topic": self.topics.presence(person_id),
                    "payload_on": PRESENCE_ON,
                    "payload_off": PRESENCE_OFF,
                    "device_class": "presence",
                },
            ),
            self._entity(
                "sensor",
                f"last_seen_{oid}",
                f"{name} last seen",
                {
                    "state_topic": seen,
                    "value_template": "{{ value_json.last_seen }}",
                    "device_class": "timestamp",
                    "json_attributes_topic": seen,
                },
            ),
            self._entity(
                "sensor",
                f"confidence_{oid}",
                f"{name} confidence",
                {
                    "state_topic": seen,
                    "value_template": "{{ value_json.confidence }}",
                    "unit_of_measurement": "%",
                    "state_class": "measurement",
                    "icon": "mdi:face-recognition",
                },
            ),
            self._trigger(
                f"recognised_{oid}",
                self.topics.recognition,
                "recognised",
                name,
                # A live match only: a photo held up to the camera (liveness_failed) is not the person.
                "{{ value_json.person_id if value_json.reason == 'matched' else '' }}",
                person_id,
            ),
        ]
