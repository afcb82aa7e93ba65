"""The on-device enrollment database: persons, their embeddings, atomic durable saves, backups.

Concurrency model: every mutation takes an in-process lock and an ``flock`` on ``<db>.lock``,
reloads when another process changed the file since our last read, applies the change to a copy,
and commits it with the protocol below. Reads (``get``, ``list``, ``snapshot``) answer from memory;
``reload()`` picks up other processes' writes (the daemon calls it when the file changes).

Commit protocol (a crash at any step leaves the old or the new generation, never a broken file):
write chips -> write + fsync temp npz -> hard-link the current file as backup ``bak-<gen>`` ->
``os.replace`` temp over current -> fsync directory -> prune old backups and unreferenced chips.

Privacy: ``delete_person`` removes the person's samples and chips from the current file at once.
Older backups still hold them until they rotate out, i.e. after ``backups`` further saves (or
``reset`` followed by that many saves); chips are deleted when the last backup naming them goes.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeface.data import FloatArray, Quality
from edgeface.errors import CommandError, DatabaseError, storage_error
from edgeface.matching import store
from edgeface.matching.atomic import FileLock, LockTimeoutError, write_atomic
from edgeface.matching.records import (
    PersonRecord,
    SampleKind,
    SampleRecord,
    SampleSource,
    clean_name,
    make_samples,
    metadata_json,
    name_key,
    new_id,
    now_iso,
    unit_rows,
)
from edgeface.matching.snapshot import DbSnapshot
from edgeface.matching.store import BackupInfo

__all__ = ["BackupInfo", "DbSnapshot", "FaceDatabase", "ModelMismatchError", "PersonRecord", "SampleRecord"]

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
# Writers hold the lock for one save (milliseconds to a second on an SD card); 30 s only trips on
# a wedged process, and then the message names the lock file.
LOCK_TIMEOUT_S = 30.0

_Signature = tuple[int, int, int]  # inode, size, mtime_ns: os.replace always changes the inode

ChangeListener = Callable[[store.Contents, store.Contents], None]
"""``listener(before, after)``: the database's contents changed (a save by us, or a reload of another
process's save). Called with the database lock held: it must only note the change and return."""


class ModelMismatchError(DatabaseError):
    """The database was built with another embedding model than the configured one."""


def _signature(path: Path) -> _Signature | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _index(contents: store.Contents, person_id: str) -> int:
    return next(i for i, p in enumerate(contents.people) if p.id == person_id)


def _row_start(people: Sequence[PersonRecord], index: int) -> int:
    return sum(len(p.samples) for p in people[:index])


class FaceDatabase:
    """Persons and embeddings of one model in one npz file. Thread-safe; use ``open``."""

    def __init__(self, path: Path, model_id: str, dim: int, backups: int, keep_images: bool) -> None:
        self._path = path
        self.model_id = model_id
        self.dim = dim
        self.backups_kept = backups
        self.keep_images = keep_images
        self._lock = threading.RLock()
        self._file_lock = FileLock(path.with_name(path.name + ".lock"), LOCK_TIMEOUT_S)
        self._contents = store.Contents(model_id, dim, 0, (), np.zeros((0, dim), np.float32))
        self._by_id: dict[str, PersonRecord] = {}
        self._by_name: dict[str, PersonRecord] = {}
        self._sig: _Signature | None = None
        # person id -> (record, its JSON): records are immutable, so an identical object means identical text.
        self._json_cache: dict[str, tuple[PersonRecord, str]] = {}
        self._snapshot = self._build_snapshot(self._contents)
        # Set while we serve a backup because the current file was unreadable; cleared by the next save.
        self.fallback_from: str | None = None
        self._listeners: builtins.list[ChangeListener] = []

    @classmethod
    def open(cls, path: Path, model_id: str, dim: int, backups: int = 5, keep_images: bool = False) -> FaceDatabase:
        """Open (creating an empty one if absent), falling back to the newest good backup if damaged."""
        db = cls(path, model_id, dim, backups, keep_images)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"database {path}: cannot create its directory: {exc.strerror}") from exc
        with db._locked():
            if not db._load():
                db._commit(db._contents, {})
        return db

    @classmethod
    def replace_model(
        cls,
        path: Path,
        contents: store.Contents,
        *,
        expected_generation: int,
        backups: int = 5,
        keep_images: bool = False,
    ) -> FaceDatabase:
        """Overwrite ``path`` with a re-embedded database (``db rebuild``); the old file becomes a backup.

        ``expected_generation`` is the generation the re-embedding read: if anyone saved since, their
        change would be lost, so this refuses instead (optimistic locking: re-embedding can take
        minutes, far longer than other writers may wait for the lock).
        """
        db = cls(path, contents.model_id, contents.dim, backups, keep_images)
        with db._locked():
            try:
                current = store.decode(path).generation
            except (FileNotFoundError, store.CorruptFileError):
                current = expected_generation
            if current != expected_generation:
                raise DatabaseError(
                    f"database {path} changed during the rebuild (generation {expected_generation} -> {current}); "
                    "run the rebuild again"
                )
            db._contents = replace(db._contents, generation=current)
            db._commit(contents, {})
        return db

    # --- reading ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def generation(self) -> int:
        return self._contents.generation

    def contents(self) -> store.Contents:
        """The current generation: persons and their embedding rows (immutable)."""
        return self._contents

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(before, after)`` after every change of the contents, whatever its origin:
        a command, the fleet, or another process's save picked up by ``reload`` or the next write."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            self._listeners.remove(listener)

    def snapshot(self) -> DbSnapshot:
        """The current immutable match view (cheap: built once per generation)."""
        return self._snapshot

    def get(self, person_id: str) -> PersonRecord:
        """The person with this id; ``not_found`` otherwise."""
        try:
            return self._by_id[person_id]
        except KeyError:
            raise CommandError("not_found", f"no person with id {person_id!r}") from None

    def find_by_name(self, name: str) -> PersonRecord | None:
        """The person with this name, ignoring case and surrounding spaces."""
        return self._by_name.get(name_key(name))

    def list(self, skip: int = 0, limit: int | None = None) -> tuple[int, builtins.list[PersonRecord]]:
        """(total, page) in creation order."""
        if skip < 0 or (limit is not None and limit < 1):
            raise CommandError("bad_request", f"skip must be >= 0 and limit >= 1, got skip={skip} limit={limit}")
        people = self._contents.people
        return len(people), builtins.list(people[skip : None if limit is None else skip + limit])

    def chip(self, sample_id: str) -> bytes | None:
        """The stored JPEG chip of a sample, None when none was kept."""
        return store.read_chip(self._path, sample_id)

    def backups(self) -> builtins.list[BackupInfo]:
        """Backups, newest first, each read to report whether it is usable."""
        return store.describe_backups(self._path)

    def reload(self) -> bool:
        """Re-read the file if another process changed it; True when the contents changed."""
        with self._lock:
            if _signature(self._path) == self._sig:
                return False
            if not self._load():
                _LOGGER.warning("database %s disappeared; keeping %d persons in memory", self._path, len(self._by_id))
                return False
            return True

    def export(self, target: Path) -> None:
        """Write the current generation (and its chips) as a standalone database file."""
        if target.resolve() == self._path.resolve():
            raise CommandError("bad_request", f"export target {target} is the database itself")
        with self._lock:
            contents = self._contents
        try:
            write_atomic(target, lambda fh: store.encode(contents, fh))
            for sample_id in contents.sample_ids:
                if (chip := self.chip(sample_id)) is not None:
                    store.write_chips(target, {sample_id: chip})
        except OSError as exc:
            raise DatabaseError(f"cannot export database to {target}: {exc}") from exc

    # --- writing ------------------------------------------------------------------------------

    def add_person(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        vectors: FloatArray | Sequence[FloatArray],
        chips: Sequence[bytes | None] | None = None,
        source: SampleSource = "image",
        *,
        qualities: Sequence[Quality | None] | None = None,
    ) -> PersonRecord:
        """Create a person with at least one positive sample; ``conflict`` if the name is taken."""
        name, meta = clean_name(name), metadata_json(metadata)
        rows = self._rows(vectors)

        def change(c: store.Contents) -> tuple[store.Contents, PersonRecord, dict[str, bytes]]:
            if (other := self._by_name.get(name_key(name))) is not None:
                raise CommandError("conflict", f"a person named {other.name!r} already exists (id {other.id})")
            samples, kept = self._samples(c, rows, "positive", source, chips, qualities)
            now = now_iso()
            person = PersonRecord(new_id(set(self._by_id)), name, meta, now, now, samples)
            return replace(c, people=(*c.people, person), matrix=np.vstack([c.matrix, rows])), person, kept

        return self._mutate(change)

    def add_samples(
        self,
        person_id: str,
        vectors: FloatArray | Sequence[FloatArray],
        chips: Sequence[bytes | None] | None = None,
        source: SampleSource = "image",
        *,
        qualities: Sequence[Quality | None] | None = None,
        merge_metadata: dict[str, Any] | None = None,
    ) -> builtins.list[str]:
        """Add positive samples (and optionally shallow-merge metadata) in one save; returns sample ids."""
        rows = self._rows(vectors)
        if merge_metadata is not None:
            metadata_json(merge_metadata)  # refuse a bad object before taking the lock
        return self._insert(
            person_id, rows, kind="positive", source=source, chips=chips, qualities=qualities, merge=merge_metadata
        )

    def add_negative(self, person_id: str, vector: FloatArray, *, source: SampleSource = "track") -> str:
        """Record a face that was wrongly matched to this person; returns the sample id."""
        rows = self._rows([vector])
        return self._insert(person_id, rows, kind="negative", source=source, chips=None, qualities=None, merge=None)[0]

    def rename(self, person_id: str, name: str) -> PersonRecord:
        """Change a person's name; ``conflict`` if another person has it."""
        name = clean_name(name)

        def change(c: store.Contents) -> tuple[store.Contents, PersonRecord, dict[str, bytes]]:
            other = self._by_name.get(name_key(name))
            if other is not None and other.id != person_id:
                raise CommandError("conflict", f"a person named {other.name!r} already exists (id {other.id})")
            return self._replace_person(c, self.get(person_id).changed(name=name))

        return self._mutate(change)

    def update_metadata(self, person_id: str, metadata: dict[str, Any]) -> PersonRecord:
        """Replace a person's metadata object."""
        meta = metadata_json(metadata)
        return self._mutate(lambda c: self._replace_person(c, self.get(person_id).changed(metadata_text=meta)))

    def delete_person(self, person_id: str) -> PersonRecord:
        """Remove a person, their samples and chips (see the module docstring for backups)."""

        def change(c: store.Contents) -> tuple[store.Contents, PersonRecord, dict[str, bytes]]:
            person = self.get(person_id)
            index = _index(c, person_id)
            start = _row_start(c.people, index)
            matrix = np.delete(c.matrix, np.s_[start : start + len(person.samples)], axis=0)
            return replace(c, people=c.people[:index] + c.people[index + 1 :], matrix=matrix), person, {}

        return self._mutate(change)

    def delete_sample(self, person_id: str, sample_id: str) -> PersonRecord:
        """Remove one sample; ``conflict`` when it is the person's last positive one."""

        def change(c: store.Contents) -> tuple[store.Contents, PersonRecord, dict[str, bytes]]:
            person = self.get(person_id)
            sample = person.sample(sample_id)
            if sample.kind == "positive" and person.positives == 1:
                raise CommandError(
                    "conflict", f"sample {sample_id} is the last one of {person.name!r}; delete the person instead"
                )
            index = _index(c, person_id)
            row = _row_start(c.people, index) + person.samples.index(sample)
            updated = person.changed(samples=tuple(s for s in person.samples if s.id != sample_id))
            people = (*c.people[:index], updated, *c.people[index + 1 :])
            return replace(c, people=people, matrix=np.delete(c.matrix, row, axis=0)), updated, {}

        return self._mutate(change)

    def apply_remote(self, upserts: Sequence[tuple[PersonRecord, FloatArray]], deletes: Sequence[str]) -> None:
        """Store these persons as given (ids, names, times, samples and their rows) and remove
        ``deletes``, in one save: how replicated records from other devices land. Persons keep
        their position when replaced; new ones are appended. ``conflict`` when a name would be taken
        twice (the caller resolves names first), ``bad_request`` for rows not matching the samples."""
        checked = []
        for person, vectors in upserts:
            rows = self._rows(vectors)
            if rows.shape[0] != len(person.samples) or person.positives == 0:
                raise CommandError(
                    "bad_request",
                    f"person {person.id}: {rows.shape[0]} embeddings for {len(person.samples)} samples "
                    f"({person.positives} positive)",
                )
            checked.append((person, rows))

        def change(c: store.Contents) -> tuple[store.Contents, None, dict[str, bytes]]:
            new = {person.id: (person, rows) for person, rows in checked}
            gone = set(deletes)
            people: builtins.list[PersonRecord] = []
            blocks: builtins.list[FloatArray] = []
            start = 0
            for p in c.people:
                end = start + len(p.samples)
                if p.id in new:
                    person, rows = new.pop(p.id)
                    people.append(person)
                    blocks.append(rows)
                elif p.id not in gone:
                    people.append(p)
                    blocks.append(c.matrix[start:end])
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
            matrix = np.vstack(blocks) if blocks else np.zeros((0, self.dim), np.float32)
            return replace(c, people=tuple(people), matrix=matrix.astype(np.float32, copy=False)), None, {}

        self._mutate(change)

    def restore(self, backup_id: str) -> None:
        """Make a backup's contents current again (as a new generation, so this too can be undone)."""
        for generation, path in store.list_backups(self._path):  # noqa: B007 -- path is used after the loop
            if str(generation) == backup_id.strip():
                break
        else:
            raise CommandError("not_found", f"no backup {backup_id!r} of {self._path}; see `edgeface db backups`")
        try:
            contents = self._check_model(store.decode(path), path)
        except store.CorruptFileError as exc:
            raise DatabaseError(f"backup {path} cannot be restored: {exc}") from exc
        self._mutate(lambda c: (replace(c, people=contents.people, matrix=contents.matrix), None, {}))

    def reset(self) -> None:
        """Remove every person; the previous generation stays as a backup (when backups > 0)."""
        self._mutate(lambda c: (replace(c, people=(), matrix=np.zeros((0, self.dim), np.float32)), None, {}))

    # --- internals ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                with self._file_lock.hold():
                    yield
            except LockTimeoutError as exc:
                raise DatabaseError(f"database {self._path} is locked: {exc}; is a stuck edgeface running?") from exc

    def _mutate(self, change: Callable[[store.Contents], tuple[store.Contents, _T, dict[str, bytes]]]) -> _T:
        with self._locked():
            if _signature(self._path) != self._sig:
                self._load()
            contents, result, chips = change(self._contents)
            self._commit(contents, chips)
            return result

    def _load(self) -> bool:
        """Adopt what is on disk (current file or newest good backup); False when nothing exists."""
        sig = _signature(self._path)  # before reading: a replace in between only causes one more reload
        contents, fallback = store.load_newest_good(self._path)
        if contents is None:
            return False
        contents = self._check_model(contents, self._path)
        self._set(contents, sig)
        self.fallback_from = fallback
        return True

    def _check_model(self, contents: store.Contents, path: Path) -> store.Contents:
        if not contents.people:  # an empty database simply adopts the configured model
            return replace(contents, model_id=self.model_id, dim=self.dim, matrix=np.zeros((0, self.dim), np.float32))
        if (contents.model_id, contents.dim) != (self.model_id, self.dim):
            raise ModelMismatchError(
                f"database {path} holds {contents.model_id} embeddings ({contents.dim}-D) but the configured "
                f"embedder is {self.model_id} ({self.dim}-D); run `edgeface db rebuild` to re-embed it "
                "(needs database.keep_images) or point database.path at another file"
            )
        return contents

    def _commit(self, contents: store.Contents, chips: dict[str, bytes]) -> None:
        newest_backup = max((g for g, _ in store.list_backups(self._path)), default=0)
        contents = replace(contents, generation=max(self._contents.generation, newest_backup) + 1)
        snapshot = self._build_snapshot(contents)  # before touching disk: a failure here changes nothing
        try:
            store.save(
                self._path,
                contents,
                chips=chips,
                person_json=self._person_json,
                current_generation=self._contents.generation,
                current_is_damaged=self.fallback_from is not None,
                backups=self.backups_kept,
            )
        except OSError as exc:
            # Disk full, read-only or not permitted: StorageError (reply code ``storage``), else DatabaseError.
            raise storage_error(exc, self._path, "cannot save the database") from exc
        self._set(contents, _signature(self._path), snapshot)
        self.fallback_from = None

    def _set(self, contents: store.Contents, sig: _Signature | None, snapshot: DbSnapshot | None = None) -> None:
        before = self._contents
        self._snapshot = snapshot or self._build_snapshot(contents)
        self._contents = contents
        self._by_id = {p.id: p for p in contents.people}
        self._by_name = {name_key(p.name): p for p in contents.people}
        self._json_cache = {k: v for k, v in self._json_cache.items() if k in self._by_id}
        self._sig = sig
        if before.people != contents.people:
            for listener in self._listeners:
                try:
                    listener(before, contents)
                except Exception:
                    # The change is committed; a failing observer must not turn it into an error.
                    _LOGGER.exception("database change listener %r failed", listener)

    def _person_json(self, person: PersonRecord) -> str:
        hit = self._json_cache.get(person.id)
        if hit is None or hit[0] is not person:
            hit = self._json_cache[person.id] = (person, person.json_text())
        return hit[1]

    def _build_snapshot(self, c: store.Contents) -> DbSnapshot:
        return DbSnapshot.build(
            generation=c.generation, model_id=c.model_id, dim=c.dim, people=c.people, matrix=c.matrix
        )

    def _rows(self, vectors: FloatArray | Sequence[FloatArray]) -> FloatArray:
        return unit_rows(vectors, self.dim, self.model_id)

    def _samples(
        self,
        c: store.Contents,
        rows: FloatArray,
        kind: SampleKind,
        source: SampleSource,
        chips: Sequence[bytes | None] | None,
        qualities: Sequence[Quality | None] | None,
    ) -> tuple[tuple[SampleRecord, ...], dict[str, bytes]]:
        return make_samples(rows.shape[0], kind, source, chips, qualities, set(c.sample_ids), self.keep_images)

    def _insert(
        self,
        person_id: str,
        rows: FloatArray,
        *,
        kind: SampleKind,
        source: SampleSource,
        chips: Sequence[bytes | None] | None,
        qualities: Sequence[Quality | None] | None,
        merge: dict[str, Any] | None,
    ) -> builtins.list[str]:
        def change(c: store.Contents) -> tuple[store.Contents, builtins.list[str], dict[str, bytes]]:
            person = self.get(person_id)
            samples, kept = self._samples(c, rows, kind, source, chips, qualities)
            fields: dict[str, Any] = {"samples": person.samples + samples}
            if merge:
                fields["metadata_text"] = metadata_json({**person.metadata, **merge})
            index = _index(c, person_id)
            end = _row_start(c.people, index + 1)
            updated, _, _ = self._replace_person(c, person.changed(**fields))
            return replace(updated, matrix=np.insert(c.matrix, end, rows, axis=0)), [s.id for s in samples], kept

        return self._mutate(change)

    def _replace_person(
        self, c: store.Contents, person: PersonRecord
    ) -> tuple[store.Contents, PersonRecord, dict[str, bytes]]:
        people = tuple(person if p.id == person.id else p for p in c.people)
        return replace(c, people=people), person, {}
