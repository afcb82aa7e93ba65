"""What the replicator thread knows between steps: what the broker holds and what is left to publish.

Owned by that thread alone (no lock): the replicator's publishing side and ``apply.py``'s record side
both read and write it. Nothing here is saved: after a restart the catch-up on connecting rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgeface.fleet.records import digest
from edgeface.matching.records import PersonRecord

TOMBSTONE_DIGEST = "tombstone"
"""What ``broker`` holds for a person whose retained record is a tombstone."""


@dataclass
class Ledger:
    """Replication bookkeeping by person id."""

    seen: dict[str, bytes] = field(default_factory=dict)  # hash of the last payload handled
    broker: dict[str, str] = field(default_factory=dict)  # digest of the version the broker holds
    dirty: set[str] = field(default_factory=set)  # to publish once in sync
    in_flight: dict[int, tuple[str, str]] = field(default_factory=dict)  # mid -> (person id, digest sent)
    applied: dict[str, str] = field(default_factory=dict)  # digest we stored (not a local change)
    applied_deletes: set[str] = field(default_factory=set)  # deletions we stored (not local ones)
    _digests: dict[str, tuple[PersonRecord, str]] = field(default_factory=dict)

    def digest(self, person: PersonRecord) -> str:
        """``records.digest`` of ``person``, computed once per version (records are immutable)."""
        hit = self._digests.get(person.id)
        if hit is None or hit[0] is not person:
            hit = self._digests[person.id] = (person, digest(person))
        return hit[1]

    def acknowledged(self, mid: int) -> bool:
        """The broker has publication ``mid``; True when it was one of ours."""
        if (sent := self.in_flight.pop(mid, None)) is None:
            return False
        self.broker[sent[0]] = sent[1]
        return True

    def disconnected(self) -> None:
        """Publications not acknowledged before the connection went are published again."""
        self.dirty.update(person_id for person_id, _ in self.in_flight.values())
        self.in_flight.clear()

    def mark_behind(self, people: Iterable[PersonRecord], tombstones: Iterable[str]) -> None:
        """Make dirty every person and tombstone the broker lacks or holds in an older version."""
        for person in people:
            if self.broker.get(person.id) != self.digest(person):
                self.dirty.add(person.id)
        for person_id in tombstones:
            if self.broker.get(person_id) != TOMBSTONE_DIGEST:
                self.dirty.add(person_id)

    def in_sync(self, people: Iterable[PersonRecord]) -> int:
        """How many of ``people`` the broker holds in their current version."""
        return sum(1 for p in people if self.broker.get(p.id) == self.digest(p))

    def cleared(self, person_id: str) -> None:
        """The broker's record of the person was removed (an expired tombstone)."""
        self.broker.pop(person_id, None)
        self.dirty.discard(person_id)
