"""What other threads hand to the replicator's thread: one lock, one wake-up, nothing else shared.

Writers are paho's network thread (records, the catch-up marker, acknowledgements, the connection
coming and going) and whichever thread commits to the database (the change listener). Each only
stores a value and wakes the replicator. Records are kept by person, so a burst is coalesced: a
person's newer record replaces one not yet handled, and the mailbox never holds more than one record
per person of the fleet.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from edgeface.matching import store


@dataclass(frozen=True, slots=True)
class Events:
    """Everything but records since the last ``take_events``."""

    latest: store.Contents | None  # the newest database contents, if they changed
    synced: bool  # the catch-up marker arrived
    acked: list[int] = field(default_factory=list)  # acknowledged publication ids
    disconnected: bool = False


class Mailbox:
    """Thread-safe; ``take_*`` and ``wait`` are for the replicator's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._records: dict[str, bytes] = {}
        self._latest: store.Contents | None = None
        self._synced = False
        self._acked: list[int] = []
        self._disconnected = False
        self._connected_at: float | None = None

    # --- writers ----------------------------------------------------------------------------------

    def contents_changed(self, _before: store.Contents, after: store.Contents) -> None:
        """The database listener (called with the database lock held: only note it)."""
        with self._lock:
            self._latest = after
        self._wake.set()

    def record(self, person_id: str, payload: bytes) -> None:
        with self._lock:
            self._records[person_id] = payload
        self._wake.set()

    def synced(self) -> None:
        with self._lock:
            self._synced = True
        self._wake.set()

    def connection(self, connected: bool) -> None:
        with self._lock:
            if connected:
                self._connected_at = time.monotonic()
            else:
                self._disconnected = True
                self._connected_at = None
        self._wake.set()

    def acknowledged(self, mid: int) -> None:
        with self._lock:
            self._acked.append(mid)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # --- the replicator's thread ------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    def take_events(self) -> Events:
        with self._lock:
            events = Events(self._latest, self._synced, self._acked, self._disconnected)
            self._latest, self._synced, self._acked, self._disconnected = None, False, [], False
        return events

    def take_latest(self) -> store.Contents | None:
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def take_records(self, limit: int) -> dict[str, bytes]:
        """Up to ``limit`` records, oldest first; wakes the thread again when more are waiting."""
        with self._lock:
            taken = dict(list(self._records.items())[:limit])
            for person_id in taken:
                del self._records[person_id]
            more = bool(self._records)
        if more:
            self._wake.set()
        return taken

    def waiting(self) -> int:
        with self._lock:
            return len(self._records)

    def connected_longer_than(self, seconds: float) -> bool:
        """Connected for more than ``seconds`` since the connect (or the last ``restart_timer``)."""
        with self._lock:
            return self._connected_at is not None and time.monotonic() - self._connected_at > seconds

    def restart_timer(self) -> None:
        with self._lock:
            if self._connected_at is not None:
                self._connected_at = time.monotonic()
