"""The device's health: the retained ``state`` document, the systemd status line, the stage heartbeats.

``SourceStatus`` is written by the capture thread (connected, reconnecting, ended) and read by the
supervisor and the command worker, so it owns its lock. ``Health`` only reads the components.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from edgeface import __version__
from edgeface.matching.db import FaceDatabase
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt import events
from edgeface.mqtt.link import MqttLink
from edgeface.pipeline.stages import Pipeline


class SourceStatus:
    """The frame source's latest state as reported by the capture thread. Thread-safe."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._state = "starting"
        self._detail = ""

    def update(self, state: str, detail: str) -> None:
        """Record a state change (``streaming``, ``reconnecting``, ``ended``, ...)."""
        with self._lock:
            self._state, self._detail = state, detail

    @property
    def state(self) -> str:
        """The latest state."""
        with self._lock:
            return self._state

    def as_dict(self) -> dict[str, Any]:
        """``{uri, state, detail}``."""
        with self._lock:
            return {"uri": self.uri, "state": self._state, "detail": self._detail}


class Health:
    """Reads the running components into the ``state`` document and the status line."""

    def __init__(
        self,
        device_id: str,
        started_at: float,
        *,
        pipeline: Pipeline,
        db: FaceDatabase,
        spool: UnknownSpool,
        link: MqttLink,
        source: SourceStatus,
        heartbeat_timeout_s: float,
        last_problem: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        """``last_problem`` gives the newest warning or error logged (``logs.LastProblem.last``)."""
        self._device_id = device_id
        self.started_at = started_at
        self._pipeline = pipeline
        self._db = db
        self._spool = spool
        self._link = link
        self.source = source
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._last_problem = last_problem

    def document(self) -> dict[str, Any]:
        """The retained ``state`` document (see ``events.state_document``)."""
        metrics = self._pipeline.metrics()
        return events.state_document(
            device_id=self._device_id,
            version=__version__,
            started_at=self.started_at,
            fps=float(metrics.get("fps", 0.0)),
            persons=self._db.snapshot().persons,
            broker=self._link.stats(),
            source={**self.source.as_dict(), "frames": metrics.get("frames", 0)},
            drops=metrics.get("drops", {}),
            db_fallback=self._db.fallback_from is not None,
            extra={
                "pipeline": metrics,
                "unknowns": len(self._spool.list()),
                "last_error": self._last_problem() if self._last_problem is not None else None,
            },
        )

    def status_line(self) -> str:
        """One line for systemd's ``STATUS=``: fps, persons, broker and source state."""
        metrics = self._pipeline.metrics()
        broker = "connected" if self._link.connected else "disconnected"
        return (
            f"{metrics.get('fps', 0.0):.1f} fps, {self._db.snapshot().persons} persons, broker {broker}, "
            f"source {self.source.state}"
        )

    def stale_stages(self, now: float) -> list[str]:
        """Stages whose heartbeat (monotonic ``now``) is older than the timeout: no watchdog ping then."""
        limit = self._heartbeat_timeout_s
        return sorted(name for name, beat in self._pipeline.heartbeats().items() if now - beat > limit)
