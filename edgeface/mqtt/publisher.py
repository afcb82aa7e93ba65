"""The event publisher: decisions, presence and state documents onto their topics, through the link's outbox.

The one place that turns what the pipeline decided into the public payloads of ``events`` and picks
their topics and retain flags. Every ``recognition`` and ``unknown`` event gets an ``event_id``
(random, 32 hex digits): the outbox delivers at least once, so after a crash a consumer may see an
event twice and drops the second by its id. The daemon and ``edgeface bench`` both publish through it, so the
bench measures exactly what a door controller receives.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from edgeface.data import Decision
from edgeface.mqtt import events
from edgeface.mqtt.link import Payload, encode_payload
from edgeface.mqtt.topics import Topics


class Sink(Protocol):
    """Where messages go (``MqttLink`` is one): queued, never blocking."""

    def publish(self, topic: str, payload: Payload, retain: bool = False) -> None: ...


SnapshotLookup = Callable[[str], bytes | None]
"""``snapshot(unknown_id)``: the JPEG of a spooled stranger, or None."""
PresenceOwner = Callable[[str, str, bool], None]
"""``set_presence(person_id, name, on)`` of whoever owns the retained presence (``retained.RetainedState``)."""


class EventPublisher:
    """Publishes one device's events; thread-safe as far as ``sink`` is (the link is)."""

    def __init__(
        self,
        sink: Sink,
        topics: Topics,
        device_id: str,
        *,
        snapshot: SnapshotLookup | None = None,
        echo: Callable[[str], None] | None = None,
        presence: PresenceOwner | None = None,
    ) -> None:
        """``snapshot`` adds the stranger's face to ``unknown`` events and publishes it raw on
        ``unknown/snapshot`` (None: never); ``echo`` receives ``"<topic> <payload>"`` of each event and
        presence change (the CLI prints them); ``presence`` publishes presence changes (None: published here)."""
        self._sink = sink
        self.topics = topics
        self._device_id = device_id
        self._snapshot = snapshot
        self._echo = echo
        self._presence = presence

    def decision(self, decision: Decision) -> None:
        """A ``recognition`` event for a known track, an ``unknown`` event otherwise."""
        total_ms = (time.monotonic() - decision.captured_at) * 1000.0
        if decision.status == "known":
            payload = events.recognition_event(decision, self._device_id, total_ms=total_ms)
            self._publish(self.topics.recognition, {"event_id": _event_id(), **payload})
            return
        snapshot = None
        if self._snapshot is not None and decision.unknown_id is not None:
            snapshot = self._snapshot(decision.unknown_id)
        payload = events.unknown_event(decision, self._device_id, snapshot=snapshot, total_ms=total_ms)
        self._publish(self.topics.unknown, {"event_id": _event_id(), **payload})
        if snapshot is not None:
            self._sink.publish(self.topics.unknown_snapshot, snapshot)  # raw JPEG for Home Assistant's image entity

    def presence(self, person_id: str, name: str, on: bool) -> None:
        """The retained ``presence/<person_id>``; the signature is the pipeline's ``on_presence``."""
        if self._presence is None:
            self._publish(self.topics.presence(person_id), events.presence_payload(on), retain=True)
            return
        self._presence(person_id, name, on)
        if self._echo is not None:
            self._echo(f"{self.topics.presence(person_id)} {events.presence_payload(on)}")

    def state(self, document: dict[str, Any]) -> None:
        """The retained ``state`` health document (not echoed: it is periodic, not an event)."""
        self._sink.publish(self.topics.state, document, retain=True)

    def _publish(self, topic: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        self._sink.publish(topic, payload, retain=retain)
        if self._echo is not None:
            self._echo(f"{topic} {encode_payload(payload).decode()}")


def _event_id() -> str:
    return uuid.uuid4().hex
