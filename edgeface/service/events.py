"""The device's outward events: the retained state and publisher, and the pipeline's event sink over them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgeface import __version__
from edgeface.config import Settings
from edgeface.data import Decision
from edgeface.matching.db import FaceDatabase
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt.controls import HaControls, controls_enabled
from edgeface.mqtt.discovery import DiscoveryBuilder, DiscoveryOptions
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.publisher import EventPublisher
from edgeface.mqtt.retained import RetainedState
from edgeface.mqtt.topics import Topics
from edgeface.pipeline.presence import PresenceChange
from edgeface.service.health import SourceStatus

_LOGGER = logging.getLogger(__name__)


class DeviceEvents:
    """``pipeline.settings.EventSink`` over the device's publisher; called from the pipeline's threads.

    ``controls`` and ``document`` are read per event: the controls and the health document are built
    after the pipeline (they need it), before its first frame.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        retained: RetainedState,
        source: SourceStatus,
        *,
        controls: Callable[[], HaControls | None],
        document: Callable[[], dict[str, Any]],
    ) -> None:
        self._publisher = publisher
        self._retained = retained
        self._source = source
        self._controls = controls
        self._document = document

    def decision(self, decision: Decision) -> None:
        # "The last unknown" first: whoever reads the event may press a button at once.
        controls = self._controls()
        if controls is not None and decision.unknown_id is not None:
            controls.unknown_seen(decision.unknown_id)
        self._publisher.decision(decision)
        if decision.status == "known":
            self._retained.recognised(decision)

    def presence(self, change: PresenceChange) -> None:
        self._publisher.presence(change.person_id, change.name, change.on)

    def source_state(self, state: str, detail: str) -> None:
        self._source.update(state, detail)
        _LOGGER.info("source %s: %s %s", self._source.uri, state, detail)
        self._publisher.state(self._document())


def open_retained(
    settings: Settings,
    link: MqttLink,
    topics: Topics,
    db: FaceDatabase,
    spool: UnknownSpool,
    echo: Callable[[str], None] | None,
) -> tuple[RetainedState, EventPublisher]:
    """Retained presence, last seen and discovery (attached to the link), and the event publisher feeding them."""
    s = settings
    options = DiscoveryOptions(
        # A snapshot exists only when the spool keeps it, and leaves the device only when published.
        snapshots=s.unknowns.snapshots and s.unknowns.publish_snapshot,
        controls=controls_enabled(s.mqtt, s.security),
        stranger_off_delay_s=s.decision.presence_timeout_s,
    )
    builder = DiscoveryBuilder(topics, s.mqtt.discovery_prefix, s.device.name, __version__, options)
    retained = RetainedState(
        link,
        builder,
        lambda: {p.id: p.name for p in db.list()[1]},
        discovery=s.mqtt.discovery,
        birth_topic=s.mqtt.ha_birth_topic,
    )
    retained.attach()
    snapshot = spool.snapshot if s.unknowns.publish_snapshot else None
    publisher = EventPublisher(link, topics, s.device.id, snapshot=snapshot, echo=echo, presence=retained.set_presence)
    return retained, publisher
