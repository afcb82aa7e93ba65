"""The database side of replication: telling local changes from the fleet's own applies, and reading
persons out of the database's contents in their replicated form."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from edgeface.fleet.records import PersonState, Tombstone
from edgeface.fleet.state import FleetState
from edgeface.matching import store
from edgeface.matching.records import PersonRecord, later_than, name_key

_LOGGER = logging.getLogger(__name__)

Spans = dict[str, tuple[int, int, int]]
"""person id -> (index in ``people``, first row, end row in ``matrix``)."""


def note_changes(
    before_contents: store.Contents,
    after_contents: store.Contents,
    *,
    state: FleetState,
    device_id: str,
    applied: dict[str, str],
    applied_deletes: set[str],
    digest_of: Callable[[PersonRecord], str],
) -> set[str]:
    """The persons changed or deleted between two generations by anything but the fleet: each
    becomes this device's version (``origin``), a deletion a tombstone; returns their ids.

    ``applied`` / ``applied_deletes`` are what the replicator itself stored (consumed here); a person
    whose new version is exactly what was applied is not a local change.
    """
    dirty: set[str] = set()
    before = {p.id: p for p in before_contents.people}
    after = {p.id: p for p in after_contents.people}
    for person_id, person in after.items():
        old = before.get(person_id)
        if old is person or old == person:
            continue
        if applied.pop(person_id, None) == digest_of(person):
            continue  # what the fleet just stored
        state.origins[person_id] = device_id
        if old is not None:
            gone = {s.id for s in old.samples} - {s.id for s in person.samples}
            state.removed.setdefault(person_id, set()).update(gone)
        state.tombstones.pop(person_id, None)
        dirty.add(person_id)
    for person_id in before.keys() - after.keys():
        if person_id in applied_deletes:
            applied_deletes.discard(person_id)
            continue
        deleted = later_than(before[person_id].updated)
        state.tombstones[person_id] = Tombstone(person_id, deleted, device_id)
        state.origins.pop(person_id, None)
        state.removed.pop(person_id, None)
        dirty.add(person_id)
    state.known = set(after)
    return dirty


def local_state(
    contents: store.Contents, spans: Spans, person_id: str, state: FleetState, device_id: str
) -> PersonState | None:
    """A person of the database in its replicated form, None when the database has no such person."""
    span = spans.get(person_id)
    if span is None:
        return None
    index, start, end = span
    return PersonState(
        contents.people[index],
        contents.matrix[start:end],
        state.origins.get(person_id, device_id),
        frozenset(state.removed.get(person_id, ())),
    )


def row_spans(contents: store.Contents) -> Spans:
    """person id -> (index in ``people``, first row, end row in ``matrix``)."""
    spans: Spans = {}
    start = 0
    for index, person in enumerate(contents.people):
        spans[person.id] = (index, start, start + len(person.samples))
        start += len(person.samples)
    return spans


def resolve_names(
    contents: store.Contents, upserts: dict[str, PersonState], deletes: list[str], device_id: str
) -> set[str]:
    """Two different persons with one name (enrolled separately on two devices): the incoming one
    is renamed "<name> (<id prefix>)" as an edit of this device, published like any other."""
    taken = {name_key(p.name): p.id for p in contents.people if p.id not in upserts and p.id not in deletes}
    renamed: set[str] = set()
    for person_id, state in list(upserts.items()):
        key = name_key(state.person.name)
        if taken.get(key, person_id) != person_id:
            name = f"{state.person.name} ({person_id[:6]})"
            upserts[person_id] = replace(state, person=state.person.changed(name=name), origin=device_id)
            renamed.add(person_id)
            _LOGGER.warning("fleet: another person is named %r; storing %s as %r", state.person.name, person_id, name)
            key = name_key(name)
        taken[key] = person_id
    return renamed
