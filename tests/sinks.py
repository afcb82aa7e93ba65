"""Event sinks for pipeline tests: second implementations of ``pipeline.settings.EventSink``."""

from __future__ import annotations

import threading

from edgeface.data import Decision
from edgeface.pipeline.presence import PresenceChange


class DecisionLog:
    """Keeps the decisions (from any pipeline thread); presence and source state are not watched."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self._lock = threading.Lock()

    def decision(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def presence(self, change: PresenceChange) -> None:
        """Not watched by the tests using this sink."""

    def source_state(self, state: str, detail: str) -> None:
        """Not watched by the tests using this sink."""
