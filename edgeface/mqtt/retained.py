"""Everything the device leaves retained on the broker, kept true to the database and to who is in view.

Owned topics: ``presence/<person_id>`` (``on``/``off``), ``person/<person_id>`` (last recognition),
and the Home Assistant discovery configs of this device. The rules:

* Each enrolled person has a presence: ``on`` while in view, else ``off`` -- also before the first
  sighting, so Home Assistant shows ``off``, not ``unknown``. A clean stop turns everyone ``off``.
* On every connection (start, reconnect, a broker that lost its retained store) and on Home
  Assistant's birth message, everything is published again.
* What the broker holds is checked as it arrives: the device subscribes to its own retained topics
  and corrects whatever disagrees -- an ``on`` left by a crash for someone not in view becomes
  ``off``, the presence, last-seen document and discovery configs of a person who is no longer in the
  database are cleared, and so is every discovery config when discovery is turned off. Corrections
  are idempotent, so the device's own messages coming back are harmless.

Thread-safety: one lock guards the tables and orders the publishes that go with them, so a
reconnect republishing everything cannot interleave with a presence change from the decide stage.
``publish`` only appends to the link's outbox, so it is safe under the lock and on paho's thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgeface.data import Decision
from edgeface.mqtt import events
from edgeface.mqtt.discovery import DiscoveryBuilder
from edgeface.mqtt.ha_config import DiscoveryMessage
from edgeface.mqtt.link import MessageCallback

_LOGGER = logging.getLogger(__name__)

# Home Assistant's birth payload on its status topic.
BIRTH_ONLINE = b"online"
# Retained state must not be lost with a connection: QoS 1.
RETAINED_QOS = 1

Persons = Callable[[], Mapping[str, str]]
"""``{person_id: name}`` of the database now."""


class RetainedLink(Protocol):
    """What this module needs of ``MqttLink``."""

    def publish(
        self, topic: str, payload: dict[str, Any] | str, retain: bool = False, qos: int | None = None
    ) -> None: ...

    def subscribe(self, topic_filter: str, on_message: MessageCallback) -> None: ...

    def add_connection_listener(self, listener: Callable[[bool], None]) -> None: ...


class RetainedState:
    """The one owner of the device's retained presence, last-seen and discovery topics."""

    def __init__(
        self,
        link: RetainedLink,
        builder: DiscoveryBuilder,
        persons: Persons,
        *,
        discovery: bool,
        birth_topic: str | None = None,
    ) -> None:
        """``builder`` also names the discovery topics to clear when ``discovery`` is off."""
        self._link = link
        self._builder = builder
        self._topics = builder.topics
        self._persons_of = persons
        self._discovery = discovery
        self._birth_topic = birth_topic
        self._lock = threading.Lock()
        self._persons: dict[str, str] = dict(persons())  # guarded by _lock
        self._present: dict[str, str] = {}  # person_id -> name; guarded by _lock
        self._seen: dict[str, dict[str, Any]] = {}  # person_id -> person document; guarded by _lock
        self._configs: dict[str, DiscoveryMessage] = self._expected(self._persons)  # topic -> config

    def attach(self) -> None:
        """Subscribe to the owned topics and republish on every connection; call before the link connects."""
        t = self._topics
        self._link.subscribe(t.discovery_filter(self._builder.prefix), self._on_discovery)
        self._link.subscribe(t.presence_filter, self._on_presence)
        self._link.subscribe(t.person_filter, self._on_person)
        if self._discovery and self._birth_topic:
            self._link.subscribe(self._birth_topic, self._on_birth)
        self._link.add_connection_listener(self._on_connection)

    # --- what the device changes ----------------------------------------------------------------

    def set_presence(self, person_id: str, name: str, on: bool) -> None:
        """A person came into view (``on``) or timed out; published retained."""
        with self._lock:
            if on:
                self._present[person_id] = name
            else:
                self._present.pop(person_id, None)
            self._send(self._topics.presence(person_id), events.presence_payload(on))

    def recognised(self, decision: Decision) -> None:
        """A live recognition: the person's last-seen document (retained)."""
        if decision.person_id is None or decision.reason != "matched":
            return
        document = events.person_document(decision)
        with self._lock:
            if decision.person_id not in self._persons:
                return  # deleted between the match and now
            self._seen[decision.person_id] = document
            self._send(self._topics.person(decision.person_id), document)

    def persons_changed(self) -> None:
        """The database changed: announce new or renamed persons, clear everything of deleted ones."""
        with self._lock:
            # Read under the lock: the command worker and the file watcher may both report a change.
            current = dict(self._persons_of())
            gone = self._persons.keys() - current.keys()
            added = current.keys() - self._persons.keys()
            self._persons = current
            old_configs, self._configs = self._configs, self._expected(current)
            for person_id in gone:
                self._clear_person(person_id)
            for topic in old_configs.keys() - self._configs.keys():
                self._send(topic, "")
            if self._discovery:
                # Only what changed: a device with hundreds of persons must not flood the outbox per enrollment.
                for topic, message in self._configs.items():
                    if old_configs.get(topic) != message:
                        self._send(topic, message.payload)
            for person_id in added:
                self._send(self._topics.presence(person_id), events.presence_payload(person_id in self._present))

    def stop(self) -> None:
        """Clean stop: everyone still present goes ``off`` (the link delivers it before ``offline``)."""
        with self._lock:
            for person_id in list(self._present):
                self._send(self._topics.presence(person_id), events.presence_payload(False))
            self._present.clear()

    def republish(self) -> None:
        """Publish every owned topic again (a new connection, or Home Assistant came online)."""
        with self._lock:
            if self._discovery:
                for message in self._configs.values():
                    self._send(message.topic, message.payload)
            for person_id in self._persons:
                self._send(self._topics.presence(person_id), events.presence_payload(person_id in self._present))
            for person_id, document in self._seen.items():
                self._send(self._topics.person(person_id), document)

    # --- what the broker holds (paho's thread) --------------------------------------------------

    def _on_connection(self, connected: bool) -> None:
        if connected:
            self.republish()

    def _on_birth(self, _topic: str, payload: bytes, retained: bool) -> None:
        # A retained birth comes with every subscription, i.e. with every connect, which republishes anyway.
        if not retained and payload.strip().lower() == BIRTH_ONLINE:
            _LOGGER.info("Home Assistant came online: announcing the device again")
            self.republish()

    def _on_discovery(self, topic: str, payload: bytes, _retained: bool) -> None:
        if not payload or self._topics.discovery_of(self._builder.prefix, topic) is None:
            return
        with self._lock:
            if self._discovery and topic in self._configs:
                return
            _LOGGER.info("removing stale Home Assistant config %s", topic)
            self._send(topic, "")

    def _on_presence(self, topic: str, payload: bytes, _retained: bool) -> None:
        person_id = self._topics.presence_of(topic)
        if person_id is None or not payload:
            return
        with self._lock:
            if person_id not in self._persons:
                _LOGGER.info("clearing the retained presence of %s: not in the database", person_id)
                self._send(topic, "")
                return
            expected = events.presence_payload(person_id in self._present)
            if payload.decode("utf-8", "replace") != expected:
                _LOGGER.info("retained presence of %s was %r; correcting to %r", person_id, payload[:16], expected)
                self._send(topic, expected)

    def _on_person(self, topic: str, payload: bytes, _retained: bool) -> None:
        person_id = self._topics.person_of(topic)
        if person_id is None or not payload:
            return
        with self._lock:
            if person_id not in self._persons:
                self._send(topic, "")
            elif person_id not in self._seen and isinstance(document := _json_object(payload), dict):
                # Last seen before this start: kept, so a broker that loses it gets it back.
                self._seen[person_id] = document

    # --- internals (lock held) --------------------------------------------------------------------

    def _expected(self, persons: Mapping[str, str]) -> dict[str, DiscoveryMessage]:
        return {message.topic: message for message in self._builder.configs(dict(persons))}

    def _clear_person(self, person_id: str) -> None:
        self._present.pop(person_id, None)
        self._seen.pop(person_id, None)
        self._send(self._topics.presence(person_id), "")
        self._send(self._topics.person(person_id), "")

    def _send(self, topic: str, payload: dict[str, Any] | str) -> None:
        self._link.publish(topic, payload, retain=True, qos=RETAINED_QOS)


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
