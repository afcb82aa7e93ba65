"""The convergence rule: what a device does with a record, given what it holds of that person.

Rule (every device applies it the same way, so all of them end with the same gallery):

1. A version is ``(updated, origin device id)``; the greater one wins name, metadata and times.
   ``updated`` is strictly increasing per person on the device that edits it
   (``PersonRecord.changed``), so only edits on two devices at the same millisecond tie, and the
   device id breaks that tie.
2. Samples are a set keyed by sample id, not a field: the merged person has every sample either
   side has, minus every sample id either side knows was deleted (``removed``). Two devices that
   add samples to one person concurrently therefore both keep all of them.
3. A deletion is a tombstone with its own version; it beats every version of the person older than
   it, and a later edit of the person (a newer version) beats it.
4. When the merge holds something the received record lacks, the device publishes the merge, so the
   retained record on the broker converges too. A merge of a merge changes nothing, so this stops.

Pure functions over immutable values: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgeface.fleet.records import PersonState, Tombstone, digest
from edgeface.matching.records import parse_time


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to do: ``store`` this person (None: leave the database alone), ``delete`` the local one,
    ``tombstone`` to remember, ``publish`` our view because the broker's record is behind it."""

    store: PersonState | None = None
    delete: bool = False
    tombstone: Tombstone | None = None
    publish: bool = False


def same(a: PersonState, b: PersonState) -> bool:
    """Both carry the same person (fields and sample ids) and the same deleted-sample knowledge."""
    return digest(a.person) == digest(b.person) and a.origin == b.origin and a.removed == b.removed


def merge_people(local: PersonState, remote: PersonState) -> PersonState:
    """Rules 1 and 2: the newer version's fields over the union of both sample sets."""
    winner = remote if remote.version > local.version else local
    removed = local.removed | remote.removed
    samples, rows = [], []
    seen: set[str] = set()
    # The local sample record first: it knows local-only facts (a stored face chip).
    for side in (local, remote):
        for sample, row in zip(side.person.samples, side.vectors, strict=True):
            if sample.id in seen or sample.id in removed:
                continue
            seen.add(sample.id)
            samples.append(sample)
            rows.append(row)
    if not any(s.kind == "positive" for s in samples):
        # Deletions on both sides took every positive sample: a person needs one, keep the winner's.
        return winner
    order = sorted(range(len(samples)), key=lambda i: (samples[i].created, samples[i].id))
    created = min(local.person.created, remote.person.created, key=parse_time)
    person = replace(winner.person, created=created, samples=tuple(samples[i] for i in order))
    vectors = np.stack([rows[i] for i in order]).astype(np.float32)
    return PersonState(person, vectors, winner.origin, removed)


def resolve_person(local: PersonState | None, tomb: Tombstone | None, remote: PersonState) -> Resolution:
    """A person record arrived; ``local`` is our version of the person, ``tomb`` our deletion of it."""
    if local is None:
        if tomb is not None and tomb.version >= remote.version:
            return Resolution(publish=True)  # a stale record survived the deletion: republish the tombstone
        return Resolution(store=remote)
    merged = merge_people(local, remote)
    return Resolution(
        store=None if same(merged, local) else merged,
        publish=not same(merged, remote),
    )


def resolve_tombstone(local: PersonState | None, tomb: Tombstone | None, remote: Tombstone) -> Resolution:
    """A tombstone arrived (rule 3)."""
    if local is not None and local.version > remote.version:
        return Resolution(publish=True)  # edited after that deletion: the person stays, everyone learns it
    newest = remote if tomb is None or remote.version > tomb.version else tomb
    return Resolution(delete=local is not None, tombstone=newest, publish=newest is not remote)
