"""The nonce window of signed commands: each (key_id, nonce) is accepted once while its timestamp is valid.

``MemoryNonces`` forgets on restart; ``SqliteNonces`` keeps the window in the device's state file
(``store``), so a command captured before a restart or a config reload is still refused after it.
Both fail closed: when the window is full, or cannot be written, a command is refused rather than
a live nonce forgotten.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from edgeface.errors import CommandError
from edgeface.mqtt.store import connect, storage_message


class WindowFullError(CommandError):
    """More signed commands within the window than it holds."""

    def __init__(self) -> None:
        super().__init__("unauthorized", "too many signed commands within max_skew_s; retry later")


class NonceStore(Protocol):
    """Remembers used nonces until they expire. Implementations are thread-safe."""

    def remember(self, key_id: str, nonce: str, expires_at: float, now: float) -> bool:
        """Record a nonce; False when it is already recorded and not expired (a replay).

        Raises ``WindowFullError`` when ``capacity`` live nonces are recorded, ``CommandError("storage")``
        when it cannot be written.
        """
        ...


class MemoryNonces:
    """The window in memory, ordered by expiry so pruning pops from the front. Caller holds a lock."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, str], float] = OrderedDict()

    def remember(self, key_id: str, nonce: str, expires_at: float, now: float) -> bool:
        while self._items and next(iter(self._items.values())) <= now:
            self._items.popitem(last=False)
        if (key_id, nonce) in self._items:
            return False
        if len(self._items) >= self._capacity:
            raise WindowFullError()
        self._items[(key_id, nonce)] = expires_at
        return True


class SqliteNonces:
    """The window in the SQLite state file; one committed transaction per accepted command."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self._capacity = capacity
        self._conn = connect(path)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS nonces (key_id TEXT NOT NULL, nonce TEXT NOT NULL, "
            "expires_at REAL NOT NULL, PRIMARY KEY (key_id, nonce))"
        )

    def remember(self, key_id: str, nonce: str, expires_at: float, now: float) -> bool:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,))
                seen = self._conn.execute(
                    "SELECT 1 FROM nonces WHERE key_id = ? AND nonce = ?", (key_id, nonce)
                ).fetchone()
                if seen is None:
                    (count,) = self._conn.execute("SELECT COUNT(*) FROM nonces").fetchone()
                    if count >= self._capacity:
                        raise WindowFullError()
                    self._conn.execute("INSERT INTO nonces VALUES (?, ?, ?)", (key_id, nonce, expires_at))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise CommandError("storage", f"cannot record the nonce: {storage_message(exc, self.path)}") from exc
        return seen is None

    def live(self, now: float) -> int:
        """Nonces recorded and not expired at ``now``."""
        (count,) = self._conn.execute("SELECT COUNT(*) FROM nonces WHERE expires_at > ?", (now,)).fetchone()
        return int(count)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()
