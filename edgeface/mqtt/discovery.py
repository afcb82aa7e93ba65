"""Home Assistant MQTT discovery: which entities one device offers, and their config documents.

A person's entities are keyed by person id, never by name, so a rename keeps the entity (and its
history and automations). Every entity except ``online`` is unavailable while ``status`` is
``offline``. Which configs should exist is decided here (``DiscoveryBuilder.configs``) and kept
true on the broker by ``retained.RetainedState``; the shape every config shares is ``ha_config.py``'s.

Device entities (``ha_device.py``): ``online``, ``last_person``, ``last_unknown``; events ``recognition``
(event types ``granted``/``denied``) and ``stranger`` (``unknown``/``uncertain``) with device triggers
for each; binary sensor ``stranger_present``; with snapshots published the ``last_unknown_face`` image;
with controls the ``confirm_name`` text and ``confirm``/``ignore``/``reload`` buttons; diagnostic sensors
from ``state``. Per person: ``presence_<id>``, ``last_seen_<id>``, ``confidence_<id>`` and the device
trigger ``recognised_<id>``. The README lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeface.mqtt import ha_device
from edgeface.mqtt.events import PRESENCE_OFF, PRESENCE_ON
from edgeface.mqtt.ha_config import ConfigFactory, DiscoveryMessage, object_id
from edgeface.mqtt.topics import Topics


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    """What the device offers beyond the always-present entities."""

    snapshots: bool = False  # the last unknown face as an image (unknowns.snapshots and publish_snapshot)
    controls: bool = False  # confirm/ignore/reload from HA (see controls.py for when they are on)
    stranger_off_delay_s: float = 30.0  # the stranger binary sensor turns off this long after the last one


class DiscoveryBuilder(ConfigFactory):
    """Builds the config documents of one device."""

    def __init__(
        self,
        topics: Topics,
        prefix: str,
        device_name: str,
        version: str,
        options: DiscoveryOptions | None = None,
    ) -> None:
        super().__init__(topics, prefix, device_name, version)
        self.options = options or DiscoveryOptions()

    def configs(self, persons: dict[str, str]) -> list[DiscoveryMessage]:
        """Every config that should exist for ``{person_id: name}``: the device's, then each person's."""
        messages = self.device_configs()
        for person_id, name in persons.items():
            messages += self.person_configs(person_id, name)
        return messages

    def person_topics(self, person_id: str) -> list[str]:
        """The config topics of one person's entities (for removing them)."""
        return [message.topic for message in self.person_configs(person_id, person_id)]

    def device_configs(self) -> list[DiscoveryMessage]:
        """The entities of the device itself (not of a person)."""
        options = self.options
        messages = (
            ha_device.recognition_entities(self)
            + ha_device.stranger_entities(self, off_delay_s=options.stranger_off_delay_s, snapshots=options.snapshots)
            + ha_device.diagnostics(self)
        )
        if options.controls:
            messages += ha_device.controls(self)
        return messages

    def person_configs(self, person_id: str, name: str) -> list[DiscoveryMessage]:
        """The entities of one enrolled person: presence, last seen, confidence, and a device trigger."""
        oid = object_id(person_id)
        seen = self.topics.person(person_id)
        return [
            self.entity(
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
            self.entity(
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
            self.entity(
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
            self.trigger(
                f"recognised_{oid}",
                self.topics.recognition,
                "recognised",
                name,
                # A live match only: a photo held up to the camera (liveness_failed) is not the person.
                "{{ value_json.person_id if value_json.reason == 'matched' else '' }}",
                person_id,
            ),
        ]
