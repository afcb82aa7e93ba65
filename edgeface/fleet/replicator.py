"""Fleet replication: publish every committed change of a person, apply the other devices' changes.

One thread (``fleet:<device>``) owns all replication state; it wakes when

* the database changed (``FaceDatabase`` listener: a command, ``edgeface db ...`` in another process
  picked up by the daemon's reload, or this replicator's own apply) -- it diffs the new contents
  against the last ones it saw: a person changed by anything but the fleet is a local change
  (origin = this device, marked dirty), a person gone is a local deletion (a tombstone);
* records arrived (paho's thread drops them into the ``Mailbox``, keyed by person, so a burst of 10,000
  retained records on joining is coalesced and applied in batches of one database save each);
* the connection came, went, or caught up (``FleetClient``).

Dirty persons are published (retained, QoS 1) once the device has caught up, so a restarted device
first learns what the fleet did meanwhile. A record is verified, decoded and resolved by merge.py,
then stored through ``FaceDatabase.apply_remote`` (atomic, locked, backed up like every save).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeface.errors import EdgefaceError
from edgeface.fleet.client import FleetClient
from edgeface.fleet.local import Spans, local_state, note_changes, resolve_names, row_spans
from edgeface.fleet.mailbox import Mailbox
from edgeface.fleet.merge import resolve_person, resolve_tombstone
from edgeface.fleet.records import (
    FleetKey,
    PersonState,
    RecordRefusedError,
    Tombstone,
    decode,
    digest,
    encode_person,
    encode_tombstone,
)
from edgeface.fleet.state import FleetState
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.records import PersonRecord, now_iso, parse_time
from edgeface.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)

# Records per database save while catching up: one save of a 10,000-person database takes ~0.1 s
# on a Pi, so batching turns a joining device's minutes into seconds; 2,000 bounds the lock hold.
APPLY_BATCH = 2000
# Unacknowledged publications handed to paho at once; more wait in the dirty set.
MAX_IN_FLIGHT = 100
# How often expired tombstones are looked for (they are also checked after each catch-up).
EXPIRE_EVERY_S = 60.0
# A catch-up marker not back after this long was probably dropped together with records: a broker
# bounds what it queues per client (Mosquitto: max_queued_messages, default 1000) and drops the rest
# of a larger retained burst. Warn, and ask again (the records lost stay lost until the next connect).
SYNC_WARN_S = 30.0
_IDLE_S = 1.0
_TOMBSTONE_DIGEST = "tombstone"


class Replicator:
    """Keeps one device's database in step with its fleet's retained records."""

    def __init__(
        self,
        db: FaceDatabase,
        key: FleetKey,
        topics: Topics,
        fleet_id: str,
        state_path: Path,
        *,
        horizon_s: float,
        max_record_bytes: int,
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        """``on_applied`` runs on our thread after other devices' records were stored."""
        self._db = db
        self._on_applied = on_applied
        self._key = key
        self._topics = topics
        self.fleet_id = fleet_id
        self.device_id = topics.device_id
        self._horizon_s = horizon_s
        self._max_record_bytes = max_record_bytes
        self._state = FleetState.load(state_path)
        self._client: FleetClient | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mailbox = Mailbox()  # what other threads hand to ours
        # Ours alone.
        self._baseline = db.contents()
        self._seen: dict[str, bytes] = {}  # person id -> hash of the last payload handled
        self._broker: dict[str, str] = {}  # person id -> digest of the version the broker holds
        self._dirty: set[str] = set()
        self._in_flight: dict[int, tuple[str, str]] = {}
        self._applied: dict[str, str] = {}  # person id -> digest we stored (not a local change)
        self._applied_deletes: set[str] = set()
        self._digests: dict[str, tuple[PersonRecord, str]] = {}
        self._synced = False
        self._catching_up = False  # the marker arrived; records before it may still be in the inbox
        self._next_expiry = 0.0
        # Read by ``status`` under ``_lock``.
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._summary: dict[str, Any] = {"in_sync": 0, "pending": 0, "tombstones": 0}
        self._last_applied: dict[str, Any] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, client: FleetClient) -> None:
        """Note offline deletions, listen to the database, connect, start the thread."""
        people = {p.id for p in self._baseline.people}
        for person_id in sorted(self._state.known - people):
            # Deleted while no replicator was running (e.g. ``edgeface db delete`` with the daemon stopped).
            self._state.tombstones[person_id] = Tombstone(person_id, now_iso(), self.device_id)
            self._dirty.add(person_id)
        self._state.known = people
        self._db.add_listener(self.mailbox.contents_changed)
        self._client = client
        self._thread = threading.Thread(target=self._run, name=f"fleet:{self.device_id}")
        self._thread.start()
        client.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, save the state, disconnect."""
        self._stop.set()
        self.mailbox.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOGGER.warning("fleet thread still busy %gs after stop", timeout)
        self._db.remove_listener(self.mailbox.contents_changed)
        if self._client is not None:
            self._client.stop()

    # --- other threads ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``fleet status`` document."""
        client = self._client
        with self._lock:
            counts = dict(self._counts)
            summary = dict(self._summary)
            last = None if self._last_applied is None else dict(self._last_applied)
        return {
            "enabled": True,
            "fleet_id": self.fleet_id,
            "device": self.device_id,
            "key_id": self._key.key_id,
            "connected": client is not None and client.connected,
            "synced": summary.pop("synced", False),
            "persons": self._db.snapshot().persons,
            **summary,
            "published": counts.get("published", 0),
            "applied": counts.get("applied", 0),
            "deleted": counts.get("deleted", 0),
            "refused": counts.get("refused", 0),
            "invalid": counts.get("invalid", 0),
            "other_model": counts.get("other_model", 0),
            "too_large": counts.get("too_large", 0),
            "failed": counts.get("failed", 0),
            "sync_retries": counts.get("sync_retries", 0),
            "last_applied": last,
        }

    # --- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self.mailbox.wait(_IDLE_S)
            try:
                self._step()
            except Exception:
                _LOGGER.exception("fleet %s: replication step failed; retrying", self.fleet_id)
                self._stop.wait(_IDLE_S)
        try:
            self._note_local_changes()
            self._state.save()
        except EdgefaceError as exc:
            _LOGGER.warning("fleet: %s", exc)

    def _step(self) -> None:
        events = self.mailbox.take_events()
        for mid in events.acked:
            if (sent := self._in_flight.pop(mid, None)) is not None:
                self._broker[sent[0]] = sent[1]
                self._count("published")
        if events.disconnected:
            self._synced = self._catching_up = False
            self._dirty.update(person_id for person_id, _ in self._in_flight.values())
            self._in_flight.clear()
        self._catching_up |= events.synced
        changed = self._note_local_changes(events.latest)
        changed |= self._apply_inbox()
        if self._catching_up and not self.mailbox.waiting():
            self._catching_up = False
            self._caught_up()
            changed = True
        self._check_sync_overdue()
        if self._synced:
            self._publish_dirty()
            if time.monotonic() >= self._next_expiry:
                changed |= self._expire_tombstones()
                self._next_expiry = time.monotonic() + EXPIRE_EVERY_S
        if changed:
            self._state.save()
        self._summarise()

    def _check_sync_overdue(self) -> None:
        if self._synced or self._catching_up or not self.mailbox.connected_longer_than(SYNC_WARN_S):
            return
        self.mailbox.restart_timer()
        if self._client is not None:
            self._count("sync_retries")
            _LOGGER.warning(
                "fleet %s: not caught up %gs after connecting (%d records so far); the broker may drop retained "
                "records beyond its per-client queue (Mosquitto: raise max_queued_messages above the number of "
                "persons); asking again",
                self.fleet_id, SYNC_WARN_S, len(self._seen),
            )  # fmt: skip
            self._client.resend_marker()

    def _caught_up(self) -> None:
        """Every retained record is in: publish what the broker lacks or holds in an older version."""
        self._synced = True
        self._next_expiry = 0.0
        for person in self._db.contents().people:
            if self._broker.get(person.id) != self._digest(person):
                self._dirty.add(person.id)
        for person_id in self._state.tombstones:
            if self._broker.get(person_id) != _TOMBSTONE_DIGEST:
                self._dirty.add(person_id)
        _LOGGER.info(
            "fleet %s: caught up; %d persons, %d to publish", self.fleet_id, len(self._broker), len(self._dirty)
        )

    # --- local changes ------------------------------------------------------------------------

    def _note_local_changes(self, latest: store.Contents | None = None) -> bool:
        """Diff the database (``latest``, else what the mailbox holds) against the last contents
        seen; True when anything was noted."""
        if latest is None:
            latest = self.mailbox.take_latest()
        if latest is None:
            return False
        self._dirty |= note_changes(
            self._baseline,
            latest,
            state=self._state,
            device_id=self.device_id,
            applied=self._applied,
            applied_deletes=self._applied_deletes,
            digest_of=self._digest,
        )
        self._baseline = latest
        return True

    def _local(self, contents: store.Contents, rows: Spans, person_id: str) -> PersonState | None:
        return local_state(contents, rows, person_id, self._state, self.device_id)

    def _digest(self, person: PersonRecord) -> str:
        hit = self._digests.get(person.id)
        if hit is None or hit[0] is not person:
            hit = self._digests[person.id] = (person, digest(person))
        return hit[1]

    # --- remote records -----------------------------------------------------------------------

    def _apply_inbox(self) -> bool:
        taken = self.mailbox.take_records(APPLY_BATCH)
        if not taken:
            return False
        self._note_local_changes()  # so that a local edit is never mistaken for our own apply
        contents = self._db.contents()
        rows = row_spans(contents)
        upserts: dict[str, PersonState] = {}
        deletes: list[str] = []
        for person_id, payload in taken.items():
            fingerprint = hashlib.blake2b(payload, digest_size=16).digest()
            if self._seen.get(person_id) == fingerprint:
                continue  # the same record again (a reconnect's catch-up): already handled
            self._seen[person_id] = fingerprint
            if not payload:
                self._broker.pop(person_id, None)  # cleared (an expired tombstone)
                continue
            try:
                record = decode(
                    payload,
                    key=self._key,
                    fleet_id=self.fleet_id,
                    person_id=person_id,
                    model_id=self._db.model_id,
                    dim=self._db.dim,
                )
            except RecordRefusedError as exc:
                self._count(exc.reason)
                _LOGGER.warning("fleet %s: record of person %s %s: %s", self.fleet_id, person_id, exc.reason, exc)
                continue
            body = record.body
            self._broker[person_id] = _TOMBSTONE_DIGEST if isinstance(body, Tombstone) else digest(body.person)
            if record.publisher == self.device_id:
                continue  # our own record: it tells what the broker holds, nothing to apply
            local = self._local(contents, rows, person_id)
            tomb = self._state.tombstones.get(person_id)
            if isinstance(body, Tombstone):
                res = resolve_tombstone(local, tomb, body)
            else:
                res = resolve_person(local, tomb, body)
            if res.store is not None:
                upserts[person_id] = res.store
            if res.delete:
                deletes.append(person_id)
            if res.tombstone is not None:
                self._state.tombstones[person_id] = res.tombstone
            if res.publish:
                self._dirty.add(person_id)
        if upserts or deletes:
            self._store(contents, upserts, deletes)
        return True

    def _store(self, contents: store.Contents, upserts: dict[str, PersonState], deletes: list[str]) -> None:
        renamed = resolve_names(contents, upserts, deletes, self.device_id)
        try:
            self._db.apply_remote([(s.person, s.vectors) for s in upserts.values()], deletes)
        except EdgefaceError as exc:
            self._count("failed", len(upserts) + len(deletes))
            _LOGGER.warning("fleet %s: could not store %d records: %s", self.fleet_id, len(upserts) + len(deletes), exc)
            for person_id in (*upserts, *deletes):
                self._seen.pop(person_id, None)  # tried again at the next catch-up
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        for person_id, state in upserts.items():
            self._applied[person_id] = digest(state.person)
            self._state.origins[person_id] = state.origin
            self._state.removed[person_id] = set(state.removed)
            self._state.tombstones.pop(person_id, None)
            self._last_applied = {
                "person_id": person_id, "name": state.person.name, "change": "update", "origin": state.origin, "at": now
            }  # fmt: skip
        self._dirty.update(renamed)
        for person_id in deletes:
            tomb = self._state.tombstones[person_id]
            self._last_applied = {
                "person_id": person_id, "name": None, "change": "delete", "origin": tomb.origin, "at": now
            }  # fmt: skip
            self._applied_deletes.add(person_id)
            self._state.origins.pop(person_id, None)
            self._state.removed.pop(person_id, None)
        self._count("applied", len(upserts))
        self._count("deleted", len(deletes))
        _LOGGER.info("fleet %s: applied %d records, %d deletions", self.fleet_id, len(upserts), len(deletes))
        self._on_applied()

    # --- publishing ---------------------------------------------------------------------------

    def _publish_dirty(self) -> None:
        if not self._dirty or self._client is None:
            return
        contents = self._db.contents()
        rows = row_spans(contents)
        for person_id in sorted(self._dirty):
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                return  # acknowledgements wake us for the rest
            local = self._local(contents, rows, person_id)
            tomb = self._state.tombstones.get(person_id)
            if local is not None:
                payload = encode_person(
                    local, fleet_id=self.fleet_id, publisher=self.device_id, model_id=self._db.model_id, key=self._key
                )
                sent = self._digest(local.person)
            elif tomb is not None:
                payload = encode_tombstone(tomb, fleet_id=self.fleet_id, publisher=self.device_id, key=self._key)
                sent = _TOMBSTONE_DIGEST
            else:
                self._dirty.discard(person_id)
                continue
            if len(payload) > self._max_record_bytes:
                self._count("too_large")
                self._dirty.discard(person_id)
                _LOGGER.warning(
                    "fleet: record of person %s is %d bytes, over fleet.max_record_bytes %d; not published",
                    person_id, len(payload), self._max_record_bytes,
                )  # fmt: skip
                continue
            mid = self._client.publish(self._topics.fleet_person(self.fleet_id, person_id), payload)
            if mid is None:
                return  # not connected: stays dirty
            self._in_flight[mid] = (person_id, sent)
            self._seen.pop(person_id, None)
            self._dirty.discard(person_id)

    def _expire_tombstones(self) -> bool:
        if self._client is None:
            return False
        now = time.time()
        tombs = self._state.tombstones.values()
        expired = [t for t in tombs if now - parse_time(t.deleted).timestamp() > self._horizon_s]
        for tomb in expired:
            # An empty retained message removes the record from the broker.
            if self._client.publish(self._topics.fleet_person(self.fleet_id, tomb.person_id), b"") is None:
                return bool(expired)
            self._state.forget(tomb.person_id)
            self._broker.pop(tomb.person_id, None)
            self._dirty.discard(tomb.person_id)
        if expired:
            _LOGGER.info("fleet %s: cleared %d tombstones older than the horizon", self.fleet_id, len(expired))
        return bool(expired)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] += n

    def _summarise(self) -> None:
        people = self._db.contents().people
        in_sync = sum(1 for p in people if self._broker.get(p.id) == self._digest(p))
        waiting = self.mailbox.waiting()
        with self._lock:
            self._summary = {
                "synced": self._synced,
                "in_sync": in_sync,
                "pending": len(self._dirty) + len(self._in_flight) + waiting,
                "tombstones": len(self._state.tombstones),
            }
