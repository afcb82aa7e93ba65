"""The numbers of the ``fleet status`` document: written by the replicator thread, read by commands.

One lock guards them (the replicator's own bookkeeping is ``ledger.py``, which no other thread reads).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

# Every counter the document shows, 0 until it first counts.
COUNTERS = (
    "published",
    "applied",
    "deleted",
    "refused",
    "invalid",
    "other_model",
    "too_large",
    "failed",
    "sync_retries",
)


class FleetStatus:
    """Counters, the last summary of the thread's step, and the last record applied."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._summary: dict[str, Any] = {"in_sync": 0, "pending": 0, "tombstones": 0}
        self._last_applied: dict[str, Any] | None = None

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to counter ``what`` (a name of ``COUNTERS``, or a ``RecordRefusedError`` reason)."""
        with self._lock:
            self._counts[what] += n

    def applied(self, person_id: str, name: str | None, change: str, origin: str, at: str) -> None:
        """Note the last record stored: an ``update`` or a ``delete`` made by device ``origin``."""
        entry = {"person_id": person_id, "name": name, "change": change, "origin": origin, "at": at}
        with self._lock:
            self._last_applied = entry

    def summarise(self, *, synced: bool, in_sync: int, pending: int, tombstones: int) -> None:
        """The replication state after the thread's latest step."""
        summary = {"synced": synced, "in_sync": in_sync, "pending": pending, "tombstones": tombstones}
        with self._lock:
            self._summary = summary

    def document(self, *, fleet_id: str, device: str, key_id: str, connected: bool, persons: int) -> dict[str, Any]:
        """The ``fleet status`` document."""
        with self._lock:
            counts = dict(self._counts)
            summary = dict(self._summary)
            last = None if self._last_applied is None else dict(self._last_applied)
        return {
            "enabled": True,
            "fleet_id": fleet_id,
            "device": device,
            "key_id": key_id,
            "connected": connected,
            "synced": summary.pop("synced", False),
            "persons": persons,
            **summary,
            **{what: counts.get(what, 0) for what in COUNTERS},
            "last_applied": last,
        }
