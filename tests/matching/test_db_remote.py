"""What replication relies on in the database: the change listener, apply_remote, monotonic update times."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import CommandError
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.records import PersonRecord, SampleRecord, parse_time
from tests.matching.test_db import DIM, unit


def _open(tmp_path: Path) -> FaceDatabase:
    return FaceDatabase.open(tmp_path / "faces.npz", "test-model", DIM)


def test_listener_sees_every_change_including_another_process_save(tmp_path: Path) -> None:
    db = _open(tmp_path)
    seen: list[tuple[int, int]] = []
    db.add_listener(lambda before, after: seen.append((len(before.people), len(after.people))))
    alice = db.add_person("Alice", {}, unit(1, 1))
    db.rename(alice.id, "Alice B")
    other = FaceDatabase.open(db.path, "test-model", DIM)  # another process on the same file
    other.add_person("Bob", {}, unit(1, 2))
    assert db.reload()
    assert seen == [(0, 1), (1, 1), (1, 2)]


def test_apply_remote_replaces_in_place_appends_and_deletes_in_one_save(tmp_path: Path) -> None:
    db = _open(tmp_path)
    alice = db.add_person("Alice", {}, unit(2, 1))
    bob = db.add_person("Bob", {}, unit(1, 2))
    generation = db.generation
    now = "2026-12-01T10:00:00.000+00:00"
    carol = PersonRecord(
        "c0ffee00c0ffee00", "Carol", "{}", now, now, (SampleRecord("cs1", "positive", now, "image", None, False),)
    )
    alice2 = replace(alice, name="Alice R", samples=alice.samples[:1])
    db.apply_remote([(alice2, unit(1, 3)), (carol, unit(1, 4))], [bob.id])
    assert db.generation == generation + 1
    assert [p.name for p in db.list()[1]] == ["Alice R", "Carol"]
    reopened = store.decode(db.path)
    assert [p.id for p in reopened.people] == [alice.id, carol.id]
    assert np.allclose(reopened.matrix, np.vstack([unit(1, 3), unit(1, 4)]), atol=1e-6)
    assert db.snapshot().persons == 2


def test_apply_remote_refuses_a_taken_name_and_mismatched_rows(tmp_path: Path) -> None:
    db = _open(tmp_path)
    db.add_person("Alice", {}, unit(1, 1))
    now = "2026-12-01T10:00:00.000+00:00"
    twin = PersonRecord(
        "d00d00d00d00d00d", " alice ", "{}", now, now, (SampleRecord("t1", "positive", now, "image", None, False),)
    )
    with pytest.raises(CommandError) as info:
        db.apply_remote([(twin, unit(1, 2))], [])
    assert info.value.code == "conflict"
    with pytest.raises(CommandError) as info:
        db.apply_remote([(replace(twin, name="Twin"), unit(2, 2))], [])
    assert info.value.code == "bad_request"
    assert db.snapshot().persons == 1


def test_every_change_gets_a_strictly_newer_updated_time(tmp_path: Path) -> None:
    db = _open(tmp_path)
    person = db.add_person("Alice", {}, unit(1, 1))
    times = [person.updated]
    for i in range(5):
        times.append(db.rename(person.id, f"Alice {i}").updated)
    assert all(parse_time(a) < parse_time(b) for a, b in itertools.pairwise(times))
    assert len(person.id) == 16
