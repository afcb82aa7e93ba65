"""FaceDatabase: every API path and error, durability under kill -9, fallback, locking across processes.

Random unit vectors stand in for embeddings here: storage mechanics do not depend on what they mean.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgeface.data import Quality
from edgeface.errors import CommandError, DatabaseError
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.dbfile import ModelMismatchError
from edgeface.matching.matcher import match

DIM = 16
MODEL = "test_model"


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "faces.npz"


@pytest.fixture
def db(db_path: Path) -> FaceDatabase:
    return FaceDatabase.open(db_path, MODEL, DIM, backups=3)


def test_open_creates_an_empty_database(db: FaceDatabase, db_path: Path) -> None:
    assert db_path.is_file()
    assert db.path == db_path
    assert db.generation == 1
    assert db.list() == (0, [])
    assert db.fallback_from is None
    snap = db.snapshot()
    assert snap.persons == 0 and snap.matrix.shape == (0, DIM)
    assert match(snap, unit(1, 0), 3)[0].candidates == ()


def test_add_get_find_and_reopen(db: FaceDatabase, db_path: Path) -> None:
    q = Quality(face_px=120.0, sharpness=80.5, yaw=3.0, pitch=-2.0)
    alice = db.add_person("Alice", {"access": True, "badge": 7}, unit(2, 1), qualities=[q, None])
    assert alice.name == "Alice" and alice.metadata == {"access": True, "badge": 7}
    assert alice.positives == 2 and alice.negatives == 0
    assert alice.samples[0].quality == q and alice.samples[0].source == "image"
    assert db.get(alice.id) == alice
    assert db.find_by_name("  alice ") == alice
    assert db.find_by_name("bob") is None
    reply = alice.to_json()
    assert json.loads(json.dumps(reply)) == reply
    assert reply["samples"][0]["quality"] == {"face_px": 120.0, "sharpness": 80.5, "yaw": 3.0, "pitch": -2.0}
    reopened = FaceDatabase.open(db_path, MODEL, DIM)
    assert reopened.get(alice.id) == alice
    assert reopened.generation == db.generation
    np.testing.assert_allclose(reopened.snapshot().matrix, db.snapshot().matrix)


def test_metadata_copy_does_not_change_the_record(db: FaceDatabase) -> None:
    alice = db.add_person("Alice", {"tags": ["a"]}, unit(1, 1))
    alice.metadata["tags"].append("b")
    assert db.get(alice.id).metadata == {"tags": ["a"]}


def test_list_pages_in_creation_order(db: FaceDatabase) -> None:
    ids = [db.add_person(f"p{i}", None, unit(1, i)).id for i in range(7)]
    db.rename(ids[0], "renamed")  # an update does not move a person
    total, page = db.list(skip=2, limit=3)
    assert total == 7 and [p.id for p in page] == ids[2:5]
    assert [p.id for p in db.list(skip=6, limit=10)[1]] == ids[6:]
    assert db.list(skip=10)[1] == []
    with pytest.raises(CommandError) as err:
        db.list(skip=-1)
    assert err.value.code == "bad_request"
    with pytest.raises(CommandError):
        db.list(limit=0)


def test_names_are_unique_ignoring_case(db: FaceDatabase) -> None:
    alice = db.add_person("Alice", None, unit(1, 1))
    bob = db.add_person("Bob", None, unit(1, 2))
    with pytest.raises(CommandError) as err:
        db.add_person(" ALICE", None, unit(1, 3))
    assert err.value.code == "conflict" and alice.id in err.value.message
    with pytest.raises(CommandError) as err:
        db.rename(bob.id, "alice")
    assert err.value.code == "conflict"
    assert db.rename(alice.id, "ALICE").name == "ALICE"  # re-casing yourself is fine
    assert db.rename(bob.id, "Robert").name == "Robert"
    assert db.find_by_name("robert") is not None and db.find_by_name("bob") is None


@pytest.mark.parametrize(
    ("name", "metadata", "code"),
    [
        ("", None, "bad_request"),
        ("   ", None, "bad_request"),
        ("x" * 129, None, "bad_request"),
        ("tab\tname", None, "bad_request"),
        ("ok", ["not", "an", "object"], "bad_request"),
        ("ok", {"bad": float("nan")}, "bad_request"),
        ("ok", {"blob": "x" * 20000}, "too_large"),
    ],
)
def test_bad_names_and_metadata_are_refused(db: FaceDatabase, name: str, metadata: object, code: str) -> None:
    with pytest.raises(CommandError) as err:
        db.add_person(name, metadata, unit(1, 1))  # type: ignore[arg-type]
    assert err.value.code == code
    assert db.list()[0] == 0 and db.generation == 1


@pytest.mark.parametrize(
    "vectors",
    [
        np.zeros((0, DIM), np.float32),
        np.ones((1, DIM + 1), np.float32),
        np.zeros((1, DIM), np.float32),
        np.full((1, DIM), np.nan, np.float32),
        [["a"] * DIM],
    ],
    ids=["empty", "wrong-dim", "zero", "nan", "text"],
)
def test_bad_vectors_are_refused(db: FaceDatabase, vectors: object) -> None:
    with pytest.raises(CommandError) as err:
        db.add_person("Alice", None, vectors)  # type: ignore[arg-type]
    assert err.value.code == "bad_request"


def test_vectors_are_normalised(db: FaceDatabase) -> None:
    db.add_person("Alice", None, unit(1, 1) * 3.0)
    np.testing.assert_allclose(np.linalg.norm(db.snapshot().matrix, axis=1), 1.0, rtol=1e-6)


def test_samples_negatives_and_deletion(db: FaceDatabase) -> None:
    alice = db.add_person("Alice", {"a": 1}, unit(1, 1))
    bob = db.add_person("Bob", None, unit(1, 2))
    new_ids = db.add_samples(alice.id, unit(2, 3), source="track", merge_metadata={"b": 2})
    neg = db.add_negative(alice.id, unit(1, 4)[0])
    alice = db.get(alice.id)
    assert [s.id for s in alice.samples[1:3]] == new_ids and alice.samples[1].source == "track"
    assert alice.metadata == {"a": 1, "b": 2}
    assert alice.positives == 3 and alice.negatives == 1 and alice.sample(neg).kind == "negative"
    snap = db.snapshot()
    assert snap.n_positive == 4 and int(snap.negative.sum()) == 1
    # rows follow persons: Alice's sample 3 is the vector that was added
    row = int(np.flatnonzero(snap.row_person == 0)[2])
    np.testing.assert_allclose(snap.matrix[row], unit(2, 3)[1], rtol=1e-6)

    alice = db.delete_sample(alice.id, new_ids[0])
    assert alice.positives == 2 and db.snapshot().n_positive == 3
    with pytest.raises(CommandError) as err:
        db.delete_sample(alice.id, "nope")
    assert err.value.code == "not_found"
    with pytest.raises(CommandError) as err:
        db.delete_sample(bob.id, bob.samples[0].id)
    assert err.value.code == "conflict" and "delete the person" in err.value.message
    db.delete_sample(alice.id, neg)
    assert db.get(alice.id).negatives == 0

    deleted = db.delete_person(bob.id)
    assert deleted.name == "Bob"
    assert db.list()[0] == 1 and db.snapshot().persons == 1
    assert db.update_metadata(alice.id, {"c": 3}).metadata == {"c": 3}


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.get("nope"),
        lambda db: db.rename("nope", "x"),
        lambda db: db.update_metadata("nope", {}),
        lambda db: db.delete_person("nope"),
        lambda db: db.delete_sample("nope", "s"),
        lambda db: db.add_samples("nope", unit(1, 1)),
        lambda db: db.add_negative("nope", unit(1, 1)[0]),
        lambda db: db.restore("999"),
    ],
)
def test_unknown_ids_are_not_found(db: FaceDatabase, call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError) as err:
        call(db)
    assert err.value.code == "not_found"


def test_snapshots_are_immutable_and_survive_writes(db: FaceDatabase) -> None:
    alice = db.add_person("Alice", None, unit(1, 1))
    old = db.snapshot()
    db.delete_person(alice.id)
    assert old.persons == 1 and old.person_names.tolist() == ["Alice"]
    assert match(old, unit(1, 1), 1)[0].best.name == "Alice"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="read-only"):
        old.matrix[0, 0] = 0.0
    assert db.snapshot().persons == 0 and db.snapshot().generation > old.generation


def test_backups_rotate_restore_and_reset(db: FaceDatabase, db_path: Path) -> None:
    for i in range(5):
        db.add_person(f"p{i}", None, unit(1, i))
    assert db.generation == 6
    backups = db.backups()
    assert [b.generation for b in backups] == [5, 4, 3]  # backups=3 keeps the newest three
    assert backups[0].persons == 4 and backups[0].model_id == MODEL and backups[0].error is None
    assert json.loads(json.dumps(backups[0].to_json()))["id"] == "5"
    db.restore("3")
    assert [p.name for p in db.list()[1]] == ["p0", "p1"]
    assert db.generation == 7  # a restore is a new generation, so it can be undone
    db.restore("6")
    assert db.list()[0] == 5
    db.reset()
    assert db.list()[0] == 0
    assert db.backups()[0].persons == 5
    assert not list(db_path.parent.glob(".*tmp-*"))


def test_backups_zero_keeps_none(db_path: Path) -> None:
    db = FaceDatabase.open(db_path, MODEL, DIM, backups=0)
    db.add_person("Alice", None, unit(1, 1))
    assert db.backups() == []


def test_unreadable_backup_is_listed_with_its_error(db: FaceDatabase, db_path: Path) -> None:
    db.add_person("Alice", None, unit(1, 1))
    store.backup_path(db_path, 1).write_bytes(b"junk")
    info = db.backups()[0]
    assert info.error is not None and info.persons is None
    with pytest.raises(DatabaseError, match="cannot be restored"):
        db.restore("1")


def test_reload_picks_up_another_writer(db: FaceDatabase, db_path: Path) -> None:
    assert db.reload() is False
    other = FaceDatabase.open(db_path, MODEL, DIM)
    bob = other.add_person("Bob", None, unit(1, 2))
    assert db.reload() is True
    assert db.get(bob.id).name == "Bob"
    assert db.reload() is False


def test_a_stale_instance_reloads_before_writing(db: FaceDatabase, db_path: Path) -> None:
    other = FaceDatabase.open(db_path, MODEL, DIM)
    other.add_person("Bob", None, unit(1, 2))
    db.add_person("Alice", None, unit(1, 1))  # db never called reload(): the write must not lose Bob
    assert sorted(p.name for p in FaceDatabase.open(db_path, MODEL, DIM).list()[1]) == ["Alice", "Bob"]
    with pytest.raises(CommandError) as err:
        db.add_person("bob", None, unit(1, 3))  # the name check sees Bob too
    assert err.value.code == "conflict"


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        lambda p: p.write_bytes(b"\0" * 100),
        lambda p: p.write_bytes(b""),
        lambda p: p.unlink(),
    ],
    ids=["truncated", "zeros", "empty", "missing"],
)
def test_damaged_file_falls_back_to_the_newest_good_backup(
    db: FaceDatabase,
    db_path: Path,
    damage,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    db.add_person("Alice", None, unit(1, 1))
    db.add_person("Bob", None, unit(1, 2))
    damage(db_path)
    damaged_file_present = db_path.exists()
    with caplog.at_level(logging.WARNING, logger="edgeface.matching"):
        fallen = FaceDatabase.open(db_path, MODEL, DIM, backups=3)
    assert fallen.fallback_from is not None and str(db_path) in fallen.fallback_from
    assert [p.name for p in fallen.list()[1]] == ["Alice"]  # generation 2, the newest backup
    assert any("serving backup" in r.getMessage() for r in caplog.records)
    fallen.add_person("Carol", None, unit(1, 3))  # the next save repairs the file
    assert fallen.fallback_from is None
    repaired = FaceDatabase.open(db_path, MODEL, DIM)
    assert repaired.fallback_from is None and [p.name for p in repaired.list()[1]] == ["Alice", "Carol"]
    # the damaged file is kept aside for inspection, not backed up as if it were a generation
    assert db_path.with_name("faces.npz.corrupt").exists() == damaged_file_present
    assert [b.generation for b in repaired.backups()] == [2, 1]


def test_inconsistent_file_falls_back(db: FaceDatabase, db_path: Path) -> None:
    db.add_person("Alice", None, unit(1, 1))
    contents = store.decode(db_path)
    # a well-formed npz whose records disagree with its arrays is as untrustworthy as a torn one
    bad = store.Contents(MODEL, DIM, contents.generation, contents.people, np.vstack([contents.matrix] * 2))
    with db_path.open("wb") as fh:
        store.encode(bad, fh)
    with pytest.raises(store.CorruptFileError, match="samples in the records"):
        store.decode(db_path)
    assert FaceDatabase.open(db_path, MODEL, DIM).fallback_from is not None


def test_corrupt_file_without_backups_is_an_error(db_path: Path) -> None:
    FaceDatabase.open(db_path, MODEL, DIM, backups=0)
    db_path.write_bytes(b"not a database")
    with pytest.raises(DatabaseError, match=str(db_path)) as err:
        FaceDatabase.open(db_path, MODEL, DIM, backups=0)
    assert "no backup" in str(err.value)


def test_newer_schema_is_refused_not_fallen_back(db: FaceDatabase, db_path: Path) -> None:
    db.add_person("Alice", None, unit(1, 1))
    with np.load(db_path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["schema_version"] = np.array(99)
    with db_path.open("wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(DatabaseError, match="upgrade edgeface"):
        FaceDatabase.open(db_path, MODEL, DIM)


def test_model_mismatch_is_refused_with_rebuild_hint(db: FaceDatabase, db_path: Path) -> None:
    db.add_person("Alice", None, unit(1, 1))
    with pytest.raises(ModelMismatchError, match="edgeface db rebuild") as err:
        FaceDatabase.open(db_path, "other_model", DIM)
    assert "test_model" in str(err.value) and "other_model" in str(err.value)
    with pytest.raises(ModelMismatchError):
        FaceDatabase.open(db_path, MODEL, DIM * 2)


def test_empty_database_adopts_a_new_model(db: FaceDatabase, db_path: Path) -> None:
    other = FaceDatabase.open(db_path, "other_model", 32)
    other.add_person("Alice", None, np.eye(32, dtype=np.float32)[:1])
    assert store.decode(db_path).model_id == "other_model"


def test_chips_live_as_long_as_a_backup_needs_them(db_path: Path) -> None:
    db = FaceDatabase.open(db_path, MODEL, DIM, backups=1, keep_images=True)
    alice = db.add_person("Alice", None, unit(2, 1), chips=[b"jpeg-a0", None])
    assert alice.samples[0].has_chip and not alice.samples[1].has_chip
    assert db.chip(alice.samples[0].id) == b"jpeg-a0" and db.chip(alice.samples[1].id) is None
    chips = store.chips_dir(db_path)
    assert [p.name for p in chips.iterdir()] == [f"{alice.samples[0].id}.jpg"]
    db.delete_person(alice.id)
    assert db.chip(alice.samples[0].id) == b"jpeg-a0"  # backup generation 2 still holds Alice
    db.add_person("Bob", None, unit(1, 2))  # rotates that backup out
    assert list(chips.iterdir()) == []
    with pytest.raises(CommandError):
        db.add_person("Carol", None, unit(1, 3), chips=[b"a", b"b"])


def test_chips_are_not_kept_without_keep_images(db: FaceDatabase, db_path: Path) -> None:
    alice = db.add_person("Alice", None, unit(1, 1), chips=[b"jpeg"])
    assert not alice.samples[0].has_chip
    assert not store.chips_dir(db_path).exists()


def test_export_writes_a_standalone_database(db_path: Path, tmp_path: Path) -> None:
    db = FaceDatabase.open(db_path, MODEL, DIM, keep_images=True)
    alice = db.add_person("Alice", {"x": 1}, unit(1, 1), chips=[b"jpeg"])
    out = tmp_path / "export" / "copy.npz"
    out.parent.mkdir()
    db.export(out)
    copy = FaceDatabase.open(out, MODEL, DIM)
    assert copy.get(alice.id) == alice and copy.chip(alice.samples[0].id) == b"jpeg"
    with pytest.raises(CommandError):
        db.export(db_path)


def test_stale_temp_files_are_swept(db: FaceDatabase, db_path: Path) -> None:
    stale = db_path.with_name(".faces.npz.tmp-1-dead")
    stale.write_bytes(b"half a database")
    db.add_person("Alice", None, unit(1, 1))
    assert not stale.exists()


def test_replace_model_refuses_when_the_database_moved_on(db: FaceDatabase, db_path: Path) -> None:
    db.add_person("Alice", None, unit(1, 1))
    contents = store.Contents("new_model", DIM, 0, (), np.zeros((0, DIM), np.float32))
    with pytest.raises(DatabaseError, match="changed during the rebuild"):
        FaceDatabase.replace_model(db_path, contents, expected_generation=1)


# --- processes -------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from edgeface.matching.db import FaceDatabase
    path, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    db = FaceDatabase.open(path, "test_model", 16, backups=2)
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
    for i in range(count):
        name = f"{prefix}-{i}"
        db.add_person(name, {"i": i}, rng.standard_normal((2, 16)).astype(np.float32))
        print("ack", name, flush=True)
    """
)


def _spawn_writer(path: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_kill_9_during_saves_never_loses_an_acknowledged_enrollment(db_path: Path) -> None:
    FaceDatabase.open(db_path, MODEL, DIM, backups=2)
    acked: set[str] = set()
    rnd = random.Random(1234)
    for round_ in range(6):
        proc = _spawn_writer(db_path, f"r{round_}", 100000)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the writer is inside its save loop now
        assert first.startswith("ack"), first
        acked.add(first.split()[1])
        time.sleep(rnd.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # The kill may cut the last line short ("ack" without its name): only whole lines are acknowledgements.
        *complete, _cut = proc.stdout.read().split("\n")
        proc.stdout.close()
        acked.update(line.split()[1] for line in complete if line.startswith("ack "))
        db = FaceDatabase.open(db_path, MODEL, DIM, backups=2)
        names = {p.name for p in db.list()[1]}
        assert db.fallback_from is None, db.fallback_from
        assert acked <= names, sorted(acked - names)[:5]
    assert len(acked) > 12


def test_concurrent_writers_lose_nothing(db_path: Path) -> None:
    FaceDatabase.open(db_path, MODEL, DIM, backups=2)
    procs = [_spawn_writer(db_path, prefix, 25) for prefix in ("a", "b", "c")]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        assert out.count("ack") == 25
    names = {p.name for p in FaceDatabase.open(db_path, MODEL, DIM).list()[1]}
    assert names == {f"{prefix}-{i}" for prefix in "abc" for i in range(25)}
