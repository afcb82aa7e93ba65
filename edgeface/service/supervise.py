"""The main thread's loop while one run is up: watchdog pings, status and state updates, spool expiry.

It pings systemd's watchdog only while every stage's heartbeat is fresh (a stuck stage lets systemd
restart the unit), publishes the ``state`` document and the status line every ``status_interval_s``,
and notices a finite replay that drained: the run then ends, with the source's failure if it had one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeface.errors import SourceError
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt.publisher import EventPublisher
from edgeface.pipeline.stages import Pipeline
from edgeface.service.health import Health
from edgeface.service.systemd import Notifier

_LOGGER = logging.getLogger(__name__)

# Supervisor tick: fast enough for a 2 s stop and for watchdog intervals down to a few seconds.
TICK_S = 0.5


def supervise(
    *,
    pipeline: Pipeline,
    health: Health,
    notifier: Notifier,
    spool: UnknownSpool,
    publisher: EventPublisher,
    status_interval_s: float,
    source_uri: str,
    wait: Callable[[float], bool],
) -> SourceError | None:
    """Run until ``wait(TICK_S)`` says stop or the pipeline drained; the source's failure, if it ended on one."""
    next_status = 0.0
    next_ping = 0.0
    ping_every = notifier.watchdog_interval_s or TICK_S
    while not wait(TICK_S):
        now = time.monotonic()
        if pipeline.drained.is_set():
            failure = pipeline.source_failure
            _LOGGER.info("source %s ended; stopping", source_uri)
            return SourceError(f"source {source_uri}: {failure}") if failure is not None else None
        if now >= next_ping:
            stale = health.stale_stages(now)
            if stale:
                _LOGGER.warning("no watchdog ping: stages without progress: %s", ", ".join(stale))
            else:
                notifier.watchdog()
            next_ping = now + ping_every
        if now >= next_status:
            spool.expire(time.time())
            publisher.state(health.document())
            notifier.status(health.status_line())
            next_status = now + status_interval_s
    return None
