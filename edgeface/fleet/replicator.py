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
first learns what the fleet did meanwhile. Records of other devices are stored by apply.py; what the
thread knows between steps is its ``Ledger``, what ``fleet status`` shows is its ``FleetStatus``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeface.errors import EdgefaceError
from edgeface.fleet.apply import RecordApplier
from edgeface.fleet.client import FleetClient
from edgeface.fleet.ledger import TOMBSTONE_DIGEST, Ledger
from edgeface.fleet.local import local_state, note_changes, row_spans
from edgeface.fleet.mailbox import Mailbox
from edgeface.fleet.records import FleetKey, Tombstone, encode_person, encode_tombstone
from edgeface.fleet.state import FleetState
from edgeface.fleet.status import FleetStatus
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.records import now_iso, parse_time
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
        self._status = FleetStatus()  # what ``status`` reads from other threads
        # Ours alone.
        self._baseline = db.contents()
        self._ledger = Ledger()
        self._applier = RecordApplier(
            db,
            key,
            fleet_id,
            self.device_id,
            state=self._state,
            ledger=self._ledger,
            status=self._status,
            on_applied=on_applied,
        )
        self._synced = False
        self._catching_up = False  # the marker arrived; records before it may still be in the inbox
        self._next_expiry = 0.0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, client: FleetClient) -> None:
        """Note offline deletions, listen to the database, connect, start the thread."""
        people = {p.id for p in self._baseline.people}
        for person_id in sorted(self._state.known - people):
            # Deleted while no replicator was running (e.g. ``edgeface db delete`` with the daemon stopped).
            self._state.tombstones[person_id] = Tombstone(person_id, now_iso(), self.device_id)
            self._ledger.dirty.add(person_id)
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
        return self._status.document(
            fleet_id=self.fleet_id,
            device=self.device_id,
            key_id=self._key.key_id,
            connected=client is not None and client.connected,
            persons=self._db.snapshot().persons,
        )

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
            if self._ledger.acknowledged(mid):
                self._status.count("published")
        if events.disconnected:
            self._synced = self._catching_up = False
            self._ledger.disconnected()
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
            self._status.count("sync_retries")
            _LOGGER.warning(
                "fleet %s: not caught up %gs after connecting (%d records so far); the broker may drop retained "
                "records beyond its per-client queue (Mosquitto: raise max_queued_messages above the number of "
                "persons); asking again",
                self.fleet_id, SYNC_WARN_S, len(self._ledger.seen),
            )  # fmt: skip
            self._client.resend_marker()

    def _caught_up(self) -> None:
        """Every retained record is in: publish what the broker lacks or holds in an older version."""
        self._synced = True
        self._next_expiry = 0.0
        self._ledger.mark_behind(self._db.contents().people, self._state.tombstones)
        _LOGGER.info(
            "fleet %s: caught up; %d persons, %d to publish",
            self.fleet_id, len(self._ledger.broker), len(self._ledger.dirty),
        )  # fmt: skip

    def _note_local_changes(self, latest: store.Contents | None = None) -> bool:
        """Diff the database (``latest``, else what the mailbox holds) against the last contents
        seen; True when anything was noted."""
        if latest is None:
            latest = self.mailbox.take_latest()
        if latest is None:
            return False
        self._ledger.dirty |= note_changes(
            self._baseline,
            latest,
            state=self._state,
            device_id=self.device_id,
            applied=self._ledger.applied,
            applied_deletes=self._ledger.applied_deletes,
            digest_of=self._ledger.digest,
        )
        self._baseline = latest
        return True

    def _apply_inbox(self) -> bool:
        taken = self.mailbox.take_records(APPLY_BATCH)
        if not taken:
            return False
        self._note_local_changes()  # so that a local edit is never mistaken for our own apply
        self._applier.apply(taken)
        return True

    # --- publishing ---------------------------------------------------------------------------

    def _publish_dirty(self) -> None:
        ledger = self._ledger
        if not ledger.dirty or self._client is None:
            return
        contents = self._db.contents()
        rows = row_spans(contents)
        for person_id in sorted(ledger.dirty):
            if len(ledger.in_flight) >= MAX_IN_FLIGHT:
                return  # acknowledgements wake us for the rest
            local = local_state(contents, rows, person_id, self._state, self.device_id)
            tomb = self._state.tombstones.get(person_id)
            if local is not None:
                payload = encode_person(
                    local, fleet_id=self.fleet_id, publisher=self.device_id, model_id=self._db.model_id, key=self._key
                )
                sent = ledger.digest(local.person)
            elif tomb is not None:
                payload = encode_tombstone(tomb, fleet_id=self.fleet_id, publisher=self.device_id, key=self._key)
                sent = TOMBSTONE_DIGEST
            else:
                ledger.dirty.discard(person_id)
                continue
            if len(payload) > self._max_record_bytes:
                self._status.count("too_large")
                ledger.dirty.discard(person_id)
                _LOGGER.warning(
                    "fleet: record of person %s is %d bytes, over fleet.max_record_bytes %d; not published",
                    person_id, len(payload), self._max_record_bytes,
                )  # fmt: skip
                continue
            mid = self._client.publish(self._topics.fleet_person(self.fleet_id, person_id), payload)
            if mid is None:
                return  # not connected: stays dirty
            ledger.in_flight[mid] = (person_id, sent)
            ledger.seen.pop(person_id, None)
            ledger.dirty.discard(person_id)

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
            self._ledger.cleared(tomb.person_id)
        if expired:
            _LOGGER.info("fleet %s: cleared %d tombstones older than the horizon", self.fleet_id, len(expired))
        return bool(expired)

    def _summarise(self) -> None:
        ledger = self._ledger
        self._status.summarise(
            synced=self._synced,
            in_sync=ledger.in_sync(self._db.contents().people),
            pending=len(ledger.dirty) + len(ledger.in_flight) + self.mailbox.waiting(),
            tombstones=len(self._state.tombstones),
        )
