"""Applying the other devices' records: verify each, resolve it against our version, store a batch at once.

A batch comes from the ``Mailbox`` (one record per person, the newest). Each record is verified and
decoded by records.py and resolved by merge.py against what this device holds; what is to be stored
goes through ``FaceDatabase.apply_remote`` in one save (atomic, locked, backed up like every save),
and is noted in the ``Ledger`` so that the replicator does not take it for a local edit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from edgeface.errors import EdgefaceError
from edgeface.fleet.ledger import TOMBSTONE_DIGEST, Ledger
from edgeface.fleet.local import local_state, resolve_names, row_spans
from edgeface.fleet.merge import resolve_person, resolve_tombstone
from edgeface.fleet.records import FleetKey, PersonState, RecordRefusedError, Tombstone, decode, digest
from edgeface.fleet.state import FleetState
from edgeface.fleet.status import FleetStatus
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase

_LOGGER = logging.getLogger(__name__)


class RecordApplier:
    """Stores records of one fleet in one device's database; runs on the replicator's thread."""

    def __init__(
        self,
        db: FaceDatabase,
        key: FleetKey,
        fleet_id: str,
        device_id: str,
        *,
        state: FleetState,
        ledger: Ledger,
        status: FleetStatus,
        on_applied: Callable[[], None],
    ) -> None:
        """``on_applied`` runs after other devices' records were stored."""
        self._db = db
        self._key = key
        self._fleet_id = fleet_id
        self._device_id = device_id
        self._state = state
        self._ledger = ledger
        self._status = status
        self._on_applied = on_applied

    def apply(self, taken: dict[str, bytes]) -> None:
        """Handle retained payloads by person id (an empty one: the record was cleared)."""
        ledger = self._ledger
        contents = self._db.contents()
        rows = row_spans(contents)
        upserts: dict[str, PersonState] = {}
        deletes: list[str] = []
        for person_id, payload in taken.items():
            fingerprint = hashlib.blake2b(payload, digest_size=16).digest()
            if ledger.seen.get(person_id) == fingerprint:
                continue  # the same record again (a reconnect's catch-up): already handled
            ledger.seen[person_id] = fingerprint
            if not payload:
                ledger.broker.pop(person_id, None)  # cleared (an expired tombstone)
                continue
            try:
                record = decode(
                    payload,
                    key=self._key,
                    fleet_id=self._fleet_id,
                    person_id=person_id,
                    model_id=self._db.model_id,
                    dim=self._db.dim,
                )
            except RecordRefusedError as exc:
                self._status.count(exc.reason)
                _LOGGER.warning("fleet %s: record of person %s %s: %s", self._fleet_id, person_id, exc.reason, exc)
                continue
            body = record.body
            ledger.broker[person_id] = TOMBSTONE_DIGEST if isinstance(body, Tombstone) else digest(body.person)
            if record.publisher == self._device_id:
                continue  # our own record: it tells what the broker holds, nothing to apply
            local = local_state(contents, rows, person_id, self._state, self._device_id)
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
                ledger.dirty.add(person_id)
        if upserts or deletes:
            self._store(contents, upserts, deletes)

    def _store(self, contents: store.Contents, upserts: dict[str, PersonState], deletes: list[str]) -> None:
        renamed = resolve_names(contents, upserts, deletes, self._device_id)
        try:
            self._db.apply_remote([(s.person, s.vectors) for s in upserts.values()], deletes)
        except EdgefaceError as exc:
            self._status.count("failed", len(upserts) + len(deletes))
            _LOGGER.warning(
                "fleet %s: could not store %d records: %s", self._fleet_id, len(upserts) + len(deletes), exc
            )
            for person_id in (*upserts, *deletes):
                self._ledger.seen.pop(person_id, None)  # tried again at the next catch-up
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        for person_id, state in upserts.items():
            self._ledger.applied[person_id] = digest(state.person)
            self._state.origins[person_id] = state.origin
            self._state.removed[person_id] = set(state.removed)
            self._state.tombstones.pop(person_id, None)
            self._status.applied(person_id, state.person.name, "update", state.origin, now)
        self._ledger.dirty.update(renamed)
        for person_id in deletes:
            tomb = self._state.tombstones[person_id]
            self._status.applied(person_id, None, "delete", tomb.origin, now)
            self._ledger.applied_deletes.add(person_id)
            self._state.origins.pop(person_id, None)
            self._state.removed.pop(person_id, None)
        self._status.count("applied", len(upserts))
        self._status.count("deleted", len(deletes))
        _LOGGER.info("fleet %s: applied %d records, %d deletions", self._fleet_id, len(upserts), len(deletes))
        self._on_applied()
