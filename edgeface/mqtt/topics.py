"""Every MQTT topic the daemon uses, built in one place.

Layout under ``<base>/<device_id>/``:

* ``status``                  retained ``online`` / ``offline`` (the Last Will)
* ``state``                   retained JSON health: fps, persons, broker/source state, drops
* ``recognition``             one JSON event per decided known track
* ``unknown``                 one JSON event per unknown track
* ``presence/<person_id>``    retained ``on`` / ``off``
* ``person/<person_id>``      retained JSON of the person's last recognition (last seen, similarity)
* ``unknown/snapshot``        raw JPEG of the last unknown face (only with ``unknowns.publish_snapshot``)
* ``ha/<control>``            Home Assistant controls in (text and buttons, see ``controls``)
* ``control_result``          the reply to the last Home Assistant control
* ``cmd/<verb>``              commands in (JSON)
* ``reply/<request_id>``      replies out when the command gave no MQTT v5 response topic

fleet replication, shared by every device of fleet ``<fleet_id>`` (not under a device):

* ``<base>/fleet/<fleet_id>/persons/<person_id>``   retained signed person record or tombstone
* ``<base>/fleet/<fleet_id>/sync/<device_id>``      a device's own catch-up marker (not retained)

and, for Home Assistant, ``<discovery_prefix>/<component>/<device_id>/<object_id>/config``.

Everything retained here is state the device owns: ``retained.RetainedState`` reconciles it with the
database on every connection, so each ``*_filter`` below has a matching ``*_of`` parser.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    base: str
    device_id: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.device_id}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        return f"{self.root}/state"

    @property
    def recognition(self) -> str:
        return f"{self.root}/recognition"

    @property
    def unknown(self) -> str:
        return f"{self.root}/unknown"

    def presence(self, person_id: str) -> str:
        return f"{self.root}/presence/{person_id}"

    @property
    def presence_filter(self) -> str:
        return f"{self.root}/presence/+"

    def presence_of(self, topic: str) -> str | None:
        """The person id of a presence topic, or None."""
        return _last_level(topic, f"{self.root}/presence/")

    def person(self, person_id: str) -> str:
        return f"{self.root}/person/{person_id}"

    @property
    def person_filter(self) -> str:
        return f"{self.root}/person/+"

    def person_of(self, topic: str) -> str | None:
        """The person id of a ``person/<id>`` topic, or None."""
        return _last_level(topic, f"{self.root}/person/")

    @property
    def unknown_snapshot(self) -> str:
        return f"{self.root}/unknown/snapshot"

    def control(self, name: str) -> str:
        """Where Home Assistant publishes one control (a text value or a button press)."""
        return f"{self.root}/ha/{name}"

    @property
    def control_result(self) -> str:
        """Replies to Home Assistant controls (the ``control_result`` sensor)."""
        return f"{self.root}/control_result"

    @property
    def control_filter(self) -> str:
        return f"{self.root}/ha/+"

    def control_of(self, topic: str) -> str | None:
        """The control name of a ``ha/<name>`` topic, or None."""
        return _last_level(topic, f"{self.root}/ha/")

    @property
    def command_filter(self) -> str:
        return f"{self.root}/cmd/+"

    def command(self, verb: str) -> str:
        return f"{self.root}/cmd/{verb}"

    def reply(self, request_id: str) -> str:
        return f"{self.root}/reply/{request_id}"

    @property
    def reply_filter(self) -> str:
        return f"{self.root}/reply/+"

    def discovery(self, prefix: str, component: str, object_id: str) -> str:
        """Home Assistant discovery config topic of one entity of this device (node id = device id)."""
        return f"{prefix}/{component}/{self.device_id}/{object_id}/config"

    def fleet_person(self, fleet_id: str, person_id: str) -> str:
        """The retained record topic of one person of a fleet."""
        return f"{self.base}/fleet/{fleet_id}/persons/{person_id}"

    def fleet_persons_filter(self, fleet_id: str) -> str:
        return f"{self.base}/fleet/{fleet_id}/persons/+"

    def fleet_sync(self, fleet_id: str) -> str:
        """This device's catch-up marker: it arrives after every retained record the broker held."""
        return f"{self.base}/fleet/{fleet_id}/sync/{self.device_id}"

    def fleet_person_of(self, fleet_id: str, topic: str) -> str | None:
        """The person id of a fleet record topic, or None if ``topic`` is not one."""
        prefix = f"{self.base}/fleet/{fleet_id}/persons/"
        if not topic.startswith(prefix):
            return None
        person_id = topic[len(prefix) :]
        return person_id if person_id and "/" not in person_id else None

    def discovery_filter(self, prefix: str) -> str:
        """Every discovery config of this device, whatever the component."""
        return f"{prefix}/+/{self.device_id}/+/config"

    def discovery_of(self, prefix: str, topic: str) -> tuple[str, str] | None:
        """``(component, object_id)`` of one of this device's discovery topics, or None."""
        parts = topic.split("/")
        head = prefix.split("/")
        if len(parts) != len(head) + 4 or parts[: len(head)] != head:
            return None
        component, node, object_id, last = parts[len(head) :]
        if node != self.device_id or last != "config" or not component or not object_id:
            return None
        return component, object_id

    def verb_of(self, topic: str) -> str | None:
        """The verb of a command topic, or None if ``topic`` is not one of ours."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix):
            return None
        verb = topic[len(prefix) :]
        return verb if verb and "/" not in verb else None


def _last_level(topic: str, prefix: str) -> str | None:
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    return rest if rest and "/" not in rest else None
