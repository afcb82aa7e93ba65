"""The durable ``Outbox``: messages wait in SQLite, so a restart or a crash during an outage loses none.

One table holds every waiting message in publish order (``seq``). Two kinds share it:

* **events** (not retained): kept until the broker acknowledges them, bounded by count, bytes and
  age; when a bound is hit the oldest event is dropped and the drop is counted (persisted, so a
  restart keeps the count).
* **retained** messages (``state``, ``presence/<id>``, discovery): latest value per topic -- a new
  value replaces a waiting one -- and outside the bounds, so a periodic ``state`` never pushes
  an event out. Their number is bounded by the number of topics.

When the disk refuses a write (full, read-only), messages spill into a bounded in-memory queue
behind the table, in order, so that command replies and events still go out while the device
runs; they are the only ones a restart can lose then, and the ``state`` document says so
(``spilled``).

A ``put`` commits before it returns (one transaction with its drops); acknowledgements are deleted
in batches of up to ``ACK_BATCH`` and at once when nothing is left in flight. A crash between an
acknowledgement and its batch commit re-sends those few messages after the restart: delivery is
at least once, and every event carries an ``event_id`` so that a consumer can drop the duplicate.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edgeface.mqtt.outbox import OutboxStats, OutMessage
from edgeface.mqtt.store import connect, storage_message

_LOGGER = logging.getLogger(__name__)

# Acks committed together while a backlog drains (the in-flight window is 10): one fsync per batch.
ACK_BATCH = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    correlation BLOB,
    queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_retained ON outbox (topic) WHERE retain = 1;
CREATE TABLE IF NOT EXISTS outbox_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class DurableOutbox:
    """``Outbox`` on SQLite (see the module docstring). Not thread-safe: the link calls it under its lock."""

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_*`` bound the waiting events (retained messages are not counted); ``clock`` is unix seconds."""
        if max_messages < 1 or max_bytes < 1 or max_age_s <= 0:
            raise ValueError("outbox bounds must be positive")
        self.path = path
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._conn = connect(path)
        self._conn.executescript(_SCHEMA)
        self._in_flight: set[int] = set()
        self._acked: list[int] = []
        self._failing = False
        self._spill: deque[OutMessage] = deque()
        self._spilled = 0
        self._dropped = self._counter("dropped")
        self._delivered = self._counter("delivered")
        self._events = self._retained = self._bytes = 0
        self._reload_sizes()
        if self._events or self._retained:
            _LOGGER.info(
                "MQTT outbox %s: %d events and %d retained messages waiting from before the restart",
                path,
                self._events,
                self._retained,
            )

    # --- Outbox ---------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._dropped

    def put(self, message: OutMessage) -> None:
        now = self._clock()
        if self._spill:
            # Behind messages already spilled: keep the order until they are sent.
            self._spill_put(message, now)
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                replaced = 0
                if message.retain:
                    replaced = self._conn.execute(
                        "DELETE FROM outbox WHERE retain = 1 AND topic = ? AND seq NOT IN "
                        f"({','.join('?' * len(self._taken()))})",
                        (message.topic, *self._taken()),
                    ).rowcount
                else:
                    self._make_room(len(message.payload), now)
                self._conn.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, correlation, queued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (message.topic, message.payload, message.qos, int(message.retain), message.correlation_data, now),
                )
                self._flush_acks()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # Disk full or read-only: keep the message in memory, tell once, keep running.
            self._reload_sizes()
            if not self._failing:
                _LOGGER.warning(
                    "MQTT outbox cannot write %s; holding messages in memory", storage_message(exc, self.path)
                )
                self._failing = True
            self._spill_put(message, now)
            return
        self._failing = False
        if message.retain:
            self._retained += 1 - replaced
        else:
            self._events += 1
            self._bytes += len(message.payload)

    def _spill_put(self, message: OutMessage, now: float) -> None:
        events = sum(1 for m in self._spill if not m.retain)
        if not message.retain and events >= self._max_messages:
            oldest = next(i for i, m in enumerate(self._spill) if not m.retain)
            del self._spill[oldest]
            self._dropped += 1
        self._spill.append(OutMessage(*_fields(message), queued_at=now))
        self._spilled += 1

    def take(self) -> OutMessage | None:
        self._expire(self._clock())
        taken = self._taken()
        row = self._conn.execute(
            "SELECT seq, topic, payload, qos, retain, correlation FROM outbox "
            f"WHERE seq NOT IN ({','.join('?' * len(taken))}) ORDER BY seq LIMIT 1",
            taken,
        ).fetchone()
        if row is None:
            return self._spill.popleft() if self._spill else None
        seq, topic, payload, qos, retain, correlation = row
        self._in_flight.add(seq)
        return OutMessage(topic, bytes(payload), qos, bool(retain), correlation, seq=seq)

    def requeue(self, message: OutMessage) -> None:
        # Its row never left the table: it is simply taken again, in its place.
        if message.seq is not None:
            self._in_flight.discard(message.seq)
        else:
            self._spill.appendleft(message)

    def done(self, message: OutMessage) -> None:
        if message.seq is None:
            self._delivered += 1  # a spilled message
            return
        if message.seq not in self._in_flight:
            return
        self._in_flight.discard(message.seq)
        self._acked.append(message.seq)
        self._delivered += 1
        if len(self._acked) >= ACK_BATCH or not self._in_flight:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._flush_acks()
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # Still in the table: it is sent again after a restart (a duplicate, not a loss).
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._reload_sizes()
                _LOGGER.warning("MQTT outbox cannot record deliveries (%s)", storage_message(exc, self.path))

    def __len__(self) -> int:
        # Waiting = every row but those taken (in flight) and those acknowledged but not yet deleted.
        return self._events + self._retained - len(self._in_flight) - len(self._acked) + len(self._spill)

    def stats(self) -> OutboxStats:
        row = self._conn.execute("SELECT MIN(queued_at) FROM outbox").fetchone()
        first = row[0] if row[0] is not None else (self._spill[0].queued_at if self._spill else None)
        oldest = None if first is None else max(0.0, self._clock() - float(first))
        return OutboxStats(
            queued=len(self),
            bytes=self._bytes,
            delivered=self._delivered,
            dropped=self._dropped,
            oldest_age_s=oldest,
            durable=True,
            spilled=self._spilled,
        )

    def close(self) -> None:
        """Commit pending acknowledgements and close the file."""
        try:
            if self._acked:
                self._conn.execute("BEGIN IMMEDIATE")
                self._flush_acks()
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _LOGGER.warning("MQTT outbox: closing %s: %s", self.path, storage_message(exc, self.path))
        finally:
            self._conn.close()

    # --- internals (inside a transaction) ---------------------------------------------------------

    def _taken(self) -> tuple[int, ...]:
        """Rows not to hand out or drop: in flight, or acknowledged and waiting for their batch delete."""
        return (*self._in_flight, *self._acked)

    def _counter(self, name: str) -> int:
        row = self._conn.execute("SELECT value FROM outbox_counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def _save_counters(self) -> None:
        self._conn.executemany(
            "INSERT INTO outbox_counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (("dropped", self._dropped), ("delivered", self._delivered)),
        )

    def _flush_acks(self) -> None:
        if not self._acked:
            return
        marks = ",".join("?" * len(self._acked))
        row = self._conn.execute(
            "SELECT COALESCE(SUM(retain = 0), 0), COALESCE(SUM(retain), 0), "
            f"COALESCE(SUM(LENGTH(payload) * (retain = 0)), 0) FROM outbox WHERE seq IN ({marks})",
            tuple(self._acked),
        ).fetchone()
        self._conn.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", tuple(self._acked))
        self._events -= int(row[0])
        self._retained -= int(row[1])
        self._bytes -= int(row[2])
        self._acked.clear()
        self._save_counters()

    def _make_room(self, size: int, now: float) -> None:
        """Drop the oldest waiting events until one of ``size`` bytes fits the bounds."""
        self._drop_where("queued_at < ?", (now - self._max_age_s,), "older than the age bound")
        while self._events and (self._events >= self._max_messages or self._bytes + size > self._max_bytes):
            if not self._drop_oldest():
                break
        self._save_counters()

    def _drop_oldest(self) -> bool:
        taken = self._taken()
        marks = ",".join("?" * len(taken))
        row = self._conn.execute(
            f"SELECT seq, LENGTH(payload) FROM outbox WHERE retain = 0 AND seq NOT IN ({marks}) ORDER BY seq LIMIT 1",
            taken,
        ).fetchone()
        if row is None:
            return False  # only in-flight events left: they are the broker's now
        self._conn.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
        self._events -= 1
        self._bytes -= int(row[1])
        self._dropped += 1
        return True

    def _drop_where(self, condition: str, args: tuple[float, ...], why: str) -> None:
        busy = self._taken()
        taken = ",".join("?" * len(busy))
        row = self._conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
            f"WHERE retain = 0 AND {condition} AND seq NOT IN ({taken})",
            (*args, *busy),
        ).fetchone()
        if not row[0]:
            return
        self._conn.execute(
            f"DELETE FROM outbox WHERE retain = 0 AND {condition} AND seq NOT IN ({taken})", (*args, *busy)
        )
        self._events -= int(row[0])
        self._bytes -= int(row[1])
        self._dropped += int(row[0])
        _LOGGER.warning("MQTT outbox: dropped %d events %s", row[0], why)

    def _expire(self, now: float) -> None:
        """Age bound on the way out too: an event older than ``max_age_s`` is no longer worth sending."""
        oldest = self._conn.execute("SELECT MIN(queued_at) FROM outbox WHERE retain = 0").fetchone()[0]
        if oldest is None or oldest >= now - self._max_age_s:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._drop_where("queued_at < ?", (now - self._max_age_s,), "older than the age bound")
            self._save_counters()
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self._reload_sizes()
            _LOGGER.warning("MQTT outbox cannot expire old events (%s)", storage_message(exc, self.path))

    def _reload_sizes(self) -> None:
        """Read the cached sizes from the table (at open, and after a rolled-back transaction).

        Acknowledged rows not yet deleted stay counted (they are still in the table), so ``_acked``
        keeps matching; ``delivered`` stays the in-memory count, which includes them.
        """
        row = self._conn.execute(
            "SELECT COALESCE(SUM(retain = 0), 0), COALESCE(SUM(retain), 0), "
            "COALESCE(SUM(LENGTH(payload) * (retain = 0)), 0) FROM outbox"
        ).fetchone()
        self._events, self._retained, self._bytes = int(row[0]), int(row[1]), int(row[2])
        self._dropped = self._counter("dropped")


def _fields(message: OutMessage) -> tuple[str, bytes, int, bool, bytes | None]:
    return message.topic, message.payload, message.qos, message.retain, message.correlation_data
