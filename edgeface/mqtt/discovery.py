"""Home Assistant MQTT discovery: the device, its sensors and one presence sensor per person.

Entities (all retained under ``<discovery_prefix>/<component>/<device_id>/<object_id>/config``,
all unavailable while ``status`` is ``offline``):

* ``binary_sensor`` ``online`` -- connectivity, from ``status`` itself (always available)
* ``sensor`` ``last_person``   -- name from ``recognition``, the event as attributes
* ``sensor`` ``last_unknown``  -- unknown_id from ``unknown`` (snapshot left out of the attributes)
* ``binary_sensor`` ``presence_<person>`` -- ``presence/<person_id>`` on/off, device class presence

A deleted person's entity is removed by publishing an empty retained config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeface.mqtt.events import PRESENCE_OFF, PRESENCE_ON
from edgeface.mqtt.link import OFFLINE, ONLINE
from edgeface.mqtt.topics import Topics

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

_UNKNOWN_ATTRIBUTES = (
    "{{ {'track_id': value_json.track_id, 'similarity': value_json.similarity, "
    "'best_match': value_json.best_match, 'reason': value_json.reason, "
    "'captured_at': value_json.frame.captured_at} | tojson }}"
)


class Publisher(Protocol):
    def publish(
        self, topic: str, payload: dict[str, Any] | str, retain: bool = False, qos: int | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained config message; an empty ``payload`` removes the entity."""

    topic: str
    payload: dict[str, Any] | str


def object_id(text: str) -> str:
    """``text`` made safe for a discovery topic / unique_id (letters, digits, '_' and '-')."""
    return _UNSAFE.sub("_", text)


class DiscoveryBuilder:
    """Builds the config documents of one device."""

    def __init__(self, topics: Topics, prefix: str, device_name: str, version: str) -> None:
        self.topics = topics
        self.prefix = prefix
        self.device_name = device_name
        self.version = version

    def device(self) -> dict[str, Any]:
        """The ``device`` block shared by every entity, so HA groups them under one device."""
        return {
            "identifiers": [f"edgeface_{self.topics.device_id}"],
            "name": self.device_name,
            "manufacturer": "edgeface",
            "model": "edgeface face recognition",
            "sw_version": self.version,
        }

    def _entity(self, key: str, name: str | None, extra: dict[str, Any], *, available: bool = True) -> dict[str, Any]:
        config: dict[str, Any] = {
            "name": name,
            "unique_id": f"edgeface_{self.topics.device_id}_{key}",
            "device": self.device(),
            "origin": {"name": "edgeface", "sw_version": self.version},
            **extra,
        }
        if available:
            config.update(
                availability_topic=self.topics.status, payload_available=ONLINE, payload_not_available=OFFLINE
            )
        return config

    def device_configs(self) -> list[DiscoveryMessage]:
        """The entities every device has."""
        topics = self.topics
        online = self._entity(
            "online",
            "Online",
            {
                "state_topic": topics.status,
                "payload_on": ONLINE,
                "payload_off": OFFLINE,
                "device_class": "connectivity",
            },
            available=False,
        )
        last_person = self._entity(
            "last_person",
            "Last person",
            {
                "state_topic": topics.recognition,
                "value_template": "{{ value_json.name }}",
                "json_attributes_topic": topics.recognition,
                "icon": "mdi:account-check",
            },
        )
        last_unknown = self._entity(
            "last_unknown",
            "Last unknown",
            {
                "state_topic": topics.unknown,
                "value_template": "{{ value_json.unknown_id }}",
                "json_attributes_topic": topics.unknown,
                "json_attributes_template": _UNKNOWN_ATTRIBUTES,
                "icon": "mdi:account-question",
            },
        )
        return [
            DiscoveryMessage(topics.discovery(self.prefix, "binary_sensor", "online"), online),
            DiscoveryMessage(topics.discovery(self.prefix, "sensor", "last_person"), last_person),
            DiscoveryMessage(topics.discovery(self.prefix, "sensor", "last_unknown"), last_unknown),
        ]

    def person_topic(self, person_id: str) -> str:
        return self.topics.discovery(self.prefix, "binary_sensor", f"presence_{object_id(person_id)}")

    def person_config(self, person_id: str, name: str) -> DiscoveryMessage:
        """The presence binary_sensor of one enrolled person."""
        config = self._entity(
            f"presence_{object_id(person_id)}",
            name,
            {
                "state_topic": self.topics.presence(person_id),
                "payload_on": PRESENCE_ON,
                "payload_off": PRESENCE_OFF,
                "device_class": "presence",
            },
        )
        return DiscoveryMessage(self.person_topic(person_id), config)

    def person_removal(self, person_id: str) -> DiscoveryMessage:
        """The empty retained config that makes HA delete the person's entity."""
        return DiscoveryMessage(self.person_topic(person_id), "")


class Discovery:
    """Publishes discovery configs and keeps the per-person entities in step with the database."""

    def __init__(self, publisher: Publisher, builder: DiscoveryBuilder) -> None:
        self._publisher = publisher
        self._builder = builder
        self._announced: set[str] = set()

    def announce(self, persons: Iterable[tuple[str, str]]) -> None:
        """Publish every config for ``(person_id, name)`` pairs; remove persons announced before but gone."""
        current = dict(persons)
        for message in self._builder.device_configs():
            self._send(message)
        for person_id, name in current.items():
            self._send(self._builder.person_config(person_id, name))
        for gone in self._announced - current.keys():
            self._send(self._builder.person_removal(gone))
        self._announced = set(current)

    def add_person(self, person_id: str, name: str) -> None:
        """Announce (or rename) one person's presence sensor."""
        self._send(self._builder.person_config(person_id, name))
        self._announced.add(person_id)

    def remove_person(self, person_id: str) -> None:
        """Remove a deleted person's presence sensor (and clear its retained presence state)."""
        self._send(self._builder.person_removal(person_id))
        self._publisher.publish(self._builder.topics.presence(person_id), "", retain=True)
        self._announced.discard(person_id)

    def _send(self, message: DiscoveryMessage) -> None:
        # QoS 1: a lost config leaves HA without the entity until the next restart.
        self._publisher.publish(message.topic, message.payload, retain=True, qos=1)
