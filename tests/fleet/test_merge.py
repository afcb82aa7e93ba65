"""The convergence rule on its own: last writer by (updated, device id), sample sets merged, tombstones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeface.fleet.merge import merge_people, resolve_person, resolve_tombstone, same
from edgeface.fleet.records import PersonState, Tombstone
from edgeface.matching.records import PersonRecord, SampleRecord

T0, T1, T2 = "2026-12-01T10:00:00.000+00:00", "2026-12-01T10:00:01.000+00:00", "2026-12-01T10:00:02.500+00:00"


def _sample(sid: str, created: str = T0, kind: str = "positive") -> SampleRecord:
    return SampleRecord(sid, kind, created, "image", None, False)  # type: ignore[arg-type]


def _state(
    name: str, updated: str, origin: str, samples: tuple[SampleRecord, ...], removed: frozenset[str] = frozenset()
) -> PersonState:
    person = PersonRecord("p1", name, "{}", T0, updated, samples)
    rows = np.zeros((len(samples), 4), np.float32)
    for i, s in enumerate(samples):
        rows[i, int(s.id[-1]) % 4] = 1.0  # a distinct unit row per sample id, to check rows follow samples
    return PersonState(person, rows, origin, removed)


def test_newer_update_wins_the_fields_and_ties_go_to_the_greater_device_id() -> None:
    s = (_sample("s1"),)
    old, new = _state("Old", T1, "door-b", s), _state("New", T2, "door-a", s)
    assert merge_people(old, new).person.name == "New" and merge_people(new, old).person.name == "New"
    left, right = _state("From A", T1, "door-a", s), _state("From B", T1, "door-b", s)
    assert merge_people(left, right).person.name == "From B" == merge_people(right, left).person.name


def test_samples_added_concurrently_are_merged_and_rows_follow_them() -> None:
    base = _sample("s1")
    a = _state("Bob", T1, "door-a", (base, _sample("s2", T1)))
    b = _state("Bob", T2, "door-b", (base, _sample("s3", T2), _sample("s5", T2, "negative")))
    ab, ba = merge_people(a, b), merge_people(b, a)
    assert same(ab, ba)
    assert [x.id for x in ab.person.samples] == ["s1", "s2", "s3", "s5"]
    assert ab.person.updated == T2 and ab.origin == "door-b"
    for sample, row in zip(ab.person.samples, ab.vectors, strict=True):
        assert row[int(sample.id[-1]) % 4] == 1.0


def test_a_deleted_sample_is_not_brought_back_by_a_device_that_still_has_it() -> None:
    s1, s2 = _sample("s1"), _sample("s2")
    stale = _state("Bob", T1, "door-a", (s1, s2))
    pruned = _state("Bob", T2, "door-b", (s1,), removed=frozenset({"s2"}))
    for merged in (merge_people(stale, pruned), merge_people(pruned, stale)):
        assert [x.id for x in merged.person.samples] == ["s1"] and merged.removed == {"s2"}


def test_resolution_publishes_only_when_the_broker_is_behind() -> None:
    s1 = _sample("s1")
    local = _state("Bob", T1, "door-a", (s1, _sample("s2", T1)))
    remote = _state("Bob", T2, "door-b", (s1, _sample("s3", T2)))
    first = resolve_person(local, None, remote)
    assert first.store is not None and first.publish  # we hold s2, which the broker's record lacks
    again = resolve_person(first.store, None, first.store)
    assert again.store is None and not again.publish  # a merge of a merge changes nothing
    assert resolve_person(None, None, remote).store == remote


def test_tombstone_beats_older_versions_and_loses_to_a_later_edit() -> None:
    person = _state("Bob", T1, "door-a", (_sample("s1"),))
    tomb = Tombstone("p1", T2, "door-b")
    res = resolve_tombstone(person, None, tomb)
    assert res.delete and res.tombstone == tomb and not res.publish
    edited = replace(person, person=replace(person.person, updated="2026-12-01T10:00:03.000+00:00"))
    res = resolve_tombstone(edited, None, tomb)
    assert not res.delete and res.publish
    # A stale record arriving after the deletion is not stored; the tombstone is published again.
    res = resolve_person(None, tomb, person)
    assert res.store is None and res.publish
