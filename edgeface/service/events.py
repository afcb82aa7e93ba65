"""The pipeline's event sink on the device: MQTT events, retained state, Home Assistant controls, source status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgeface.data import Decision
from edgeface.mqtt.controls import HaControls
from edgeface.mqtt.publisher import EventPublisher
from edgeface.mqtt.retained import RetainedState
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
