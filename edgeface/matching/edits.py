"""Edits of one database generation: each takes a ``Contents`` and returns the next one.

A generation's ``matrix`` rows follow its persons and their samples in order; these functions are
the one place that keeps the two aligned when persons or samples come and go. Pure: no locks, no
I/O, no lookups by name -- ``db.py`` checks a request against the current generation first, then
hands the edit to ``DatabaseFile.mutate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edgeface.data import FloatArray
from edgeface.errors import CommandError
from edgeface.matching.records import PersonRecord, SampleRecord, name_key
from edgeface.matching.store import Contents


def _index(contents: Contents, person_id: str) -> int:
    return next(i for i, p in enumerate(contents.people) if p.id == person_id)


def _row_start(people: Sequence[PersonRecord], index: int) -> int:
    return sum(len(p.samples) for p in people[:index])


def append_person(contents: Contents, person: PersonRecord, rows: FloatArray) -> Contents:
    """A new person last, with ``rows`` as the embeddings of its samples."""
    return replace(contents, people=(*contents.people, person), matrix=np.vstack([contents.matrix, rows]))


def replace_person(contents: Contents, person: PersonRecord) -> Contents:
    """The person with ``person.id`` replaced by ``person`` whose samples are unchanged."""
    people = tuple(person if p.id == person.id else p for p in contents.people)
    return replace(contents, people=people)


def extend_person(contents: Contents, person: PersonRecord, rows: FloatArray) -> Contents:
    """``person`` replaced by its new version, whose samples end with the ones ``rows`` embed."""
    end = _row_start(contents.people, _index(contents, person.id) + 1)
    return replace(replace_person(contents, person), matrix=np.insert(contents.matrix, end, rows, axis=0))


def remove_person(contents: Contents, person_id: str) -> Contents:
    """The person and the rows of its samples removed."""
    index = _index(contents, person_id)
    start = _row_start(contents.people, index)
    matrix = np.delete(contents.matrix, np.s_[start : start + len(contents.people[index].samples)], axis=0)
    return replace(contents, people=contents.people[:index] + contents.people[index + 1 :], matrix=matrix)


def remove_sample(contents: Contents, person: PersonRecord, sample: SampleRecord) -> tuple[Contents, PersonRecord]:
    """One sample of ``person`` and its row removed; returns the person's new version too."""
    index = _index(contents, person.id)
    row = _row_start(contents.people, index) + person.samples.index(sample)
    updated = person.changed(samples=tuple(s for s in person.samples if s.id != sample.id))
    people = (*contents.people[:index], updated, *contents.people[index + 1 :])
    return replace(contents, people=people, matrix=np.delete(contents.matrix, row, axis=0)), updated


def merge_remote(
    contents: Contents, upserts: Sequence[tuple[PersonRecord, FloatArray]], deletes: Sequence[str]
) -> Contents:
    """Persons stored as given and ``deletes`` removed (``FaceDatabase.apply_remote``).

    A replaced person keeps its position, a new one is appended. ``conflict`` when the result would
    hold one name or one sample id twice; ``upserts``' rows are already checked against their samples.
    """
    new = {person.id: (person, rows) for person, rows in upserts}
    gone = set(deletes)
    people: list[PersonRecord] = []
    blocks: list[FloatArray] = []
    start = 0
    for p in contents.people:
        end = start + len(p.samples)
        if p.id in new:
            person, rows = new.pop(p.id)
            people.append(person)
            blocks.append(rows)
        elif p.id not in gone:
            people.append(p)
            blocks.append(contents.matrix[start:end])
        start = end
    for person, rows in new.values():
        people.append(person)
        blocks.append(rows)
    names: dict[str, str] = {}
    for p in people:
        if (other := names.setdefault(name_key(p.name), p.id)) != p.id:
            raise CommandError("conflict", f"persons {other} and {p.id} would both be named {p.name!r}")
    sample_ids = [s.id for p in people for s in p.samples]
    if len(set(sample_ids)) != len(sample_ids):
        raise CommandError("conflict", "two persons would hold samples with the same id")
    matrix = np.vstack(blocks) if blocks else np.zeros((0, contents.dim), np.float32)
    return replace(contents, people=tuple(people), matrix=matrix.astype(np.float32, copy=False))


def cleared(contents: Contents) -> Contents:
    """Every person removed."""
    return replace(contents, people=(), matrix=np.zeros((0, contents.dim), np.float32))
