"""systemd integration: READY/STATUS/WATCHDOG/STOPPING notifications over ``$NOTIFY_SOCKET``.

Without ``NOTIFY_SOCKET`` (a terminal, a container, the tests) every call is a quiet no-op, so the
daemon runs the same code everywhere.
"""

from __future__ import annotations

import logging
import os

import sdnotify

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """Thin wrapper over sdnotify that knows whether systemd is listening and what the watchdog wants."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # systemd recommends pinging at half the interval so one late ping is not fatal.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)
            _LOGGER.debug("sd_notify %s", message.replace("\n", " "))

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
