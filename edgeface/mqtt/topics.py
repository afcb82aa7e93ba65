"""Every MQTT topic the daemon uses, built in one place.

Layout under ``<base>/<device_id>/``:

* ``status``                  retained ``online`` / ``offline`` (the Last Will)
* ``state``                   retained JSON health: fps, persons, broker/source state, drops
* ``recognition``             one JSON event per decided known track
* ``unknown``                 one JSON event per unknown track
* ``presence/<person_id>``    retained ``on`` / ``off``
* ``cmd/<verb>``              commands in (JSON)
* ``reply/<request_id>``      replies out when the command gave no MQTT v5 response topic

and, for Home Assistant, ``<discovery_prefix>/<component>/<device_id>/<object_id>/config``.
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

    def verb_of(self, topic: str) -> str | None:
        """The verb of a command topic, or None if ``topic`` is not one of ours."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix):
            return None
        verb = topic[len(prefix) :]
        return verb if verb and "/" not in verb else None
