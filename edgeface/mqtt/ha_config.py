"""What every Home Assistant discovery config of one device shares: its topic, ids, device and availability.

One device (``identifiers: edgeface_<device_id>``) groups every entity; each ``unique_id`` is
``edgeface_<device_id>_<object_id>``. Configs are retained under
``<discovery_prefix>/<component>/<device_id>/<object_id>/config``; an empty retained config removes
the entity. An entity is unavailable while ``status`` is ``offline`` unless it says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgeface.mqtt.link import OFFLINE, ONLINE
from edgeface.mqtt.topics import Topics

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained config message; an empty ``payload`` removes the entity."""

    topic: str
    payload: dict[str, Any] | str


def object_id(text: str) -> str:
    """``text`` made safe for a discovery topic / unique_id (letters, digits, '_' and '-')."""
    return _UNSAFE.sub("_", text)


class ConfigFactory:
    """Makes the config messages of one device's entities and device triggers."""

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

    def _origin(self) -> dict[str, Any]:
        return {"name": "edgeface", "sw_version": self.version}

    def entity(
        self,
        component: str,
        key: str,
        name: str | None,
        extra: dict[str, Any],
        *,
        available: bool = True,
        diagnostic: bool = False,
    ) -> DiscoveryMessage:
        """The config of entity ``key`` of ``component``: ``extra`` over the shared blocks."""
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

    def trigger(self, key: str, topic: str, kind: str, subtype: str, template: str, payload: str) -> DiscoveryMessage:
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
