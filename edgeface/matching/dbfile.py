"""One database file as this process holds it: the current generation, its locks, reloads and commits.

Concurrency model: every mutation takes an in-process lock and an ``flock`` on ``<db>.lock``,
reloads when another process changed the file since our last read, applies the change to a copy,
and commits it with the protocol below. Reads (``contents``, ``snapshot``, ``find``) answer from
memory; ``reload()`` picks up other processes' writes (the daemon calls it when the file changes).

Commit protocol (a crash at any step leaves the old or the new generation, never a broken file):
write chips -> write + fsync temp npz -> hard-link the current file as backup ``bak-<gen>`` ->
``os.replace`` temp over current -> fsync directory -> prune old backups and unreferenced chips.

What a change means for persons is decided by ``db.py`` and ``edits.py``; the file format by ``store.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgeface.errors import DatabaseError, storage_error
from edgeface.matching import store
from edgeface.matching.atomic import FileLock, LockTimeoutError
from edgeface.matching.records import PersonRecord, name_key
from edgeface.matching.snapshot import DbSnapshot

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
# Writers hold the lock for one save (milliseconds to a second on an SD card); 30 s only trips on
# a wedged process, and then the message names the lock file.
LOCK_TIMEOUT_S = 30.0

_Signature = tuple[int, int, int]  # inode, size, mtime_ns: os.replace always changes the inode

ChangeListener = Callable[[store.Contents, store.Contents], None]
"""``listener(before, after)``: the database's contents changed (a save by us, or a reload of another
process's save). Called with the database lock held: it must only note the change and return."""

Change = Callable[[store.Contents], tuple[store.Contents, _T, dict[str, bytes]]]
"""``change(current) -> (next contents, result for the caller, chips to write by sample id)``."""


class ModelMismatchError(DatabaseError):
    """The database was built with another embedding model than the configured one."""


def _signature(path: Path) -> _Signature | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class DatabaseFile:
    """The current generation of one npz file and the only way to replace it. Thread-safe; use ``open``."""

    def __init__(self, path: Path, model_id: str, dim: int, backups: int) -> None:
        self.path = path
        self.model_id = model_id
        self.dim = dim
        self.backups_kept = backups
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
        self._listeners: list[ChangeListener] = []

    @classmethod
    def open(cls, path: Path, model_id: str, dim: int, backups: int) -> DatabaseFile:
        """Open (creating an empty one if absent), falling back to the newest good backup if damaged."""
        file = cls(path, model_id, dim, backups)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"database {path}: cannot create its directory: {exc.strerror}") from exc
        with file._locked():
            if not file._load():
                file._commit(file._contents, {})
        return file

    @classmethod
    def overwrite(cls, path: Path, contents: store.Contents, *, expected_generation: int, backups: int) -> DatabaseFile:
        """Commit ``contents`` over ``path`` unless someone saved since ``expected_generation`` was read."""
        file = cls(path, contents.model_id, contents.dim, backups)
        with file._locked():
            try:
                current = store.decode(path).generation
            except (FileNotFoundError, store.CorruptFileError):
                current = expected_generation
            if current != expected_generation:
                raise DatabaseError(
                    f"database {path} changed during the rebuild (generation {expected_generation} -> {current}); "
                    "run the rebuild again"
                )
            file._contents = replace(file._contents, generation=current)
            file._commit(contents, {})
        return file

    # --- reading ------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._contents.generation

    def contents(self) -> store.Contents:
        """The current generation: persons and their embedding rows (immutable)."""
        return self._contents

    def snapshot(self) -> DbSnapshot:
        """The current immutable match view (cheap: built once per generation)."""
        return self._snapshot

    def find(self, person_id: str) -> PersonRecord | None:
        """The current person with this id."""
        return self._by_id.get(person_id)

    def named(self, name: str) -> PersonRecord | None:
        """The current person with this name, ignoring case and surrounding spaces."""
        return self._by_name.get(name_key(name))

    def person_ids(self) -> set[str]:
        """The ids of every current person."""
        return set(self._by_id)

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(before, after)`` after every change of the contents, whatever its origin."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            self._listeners.remove(listener)

    def reload(self) -> bool:
        """Re-read the file if another process changed it; True when the contents changed."""
        with self._lock:
            if _signature(self.path) == self._sig:
                return False
            if not self._load():
                _LOGGER.warning("database %s disappeared; keeping %d persons in memory", self.path, len(self._by_id))
                return False
            return True

    def check_model(self, contents: store.Contents, path: Path) -> store.Contents:
        """``contents`` (read from ``path``) if it holds this file's embedding model; an empty one adopts it."""
        if not contents.people:  # an empty database simply adopts the configured model
            return replace(contents, model_id=self.model_id, dim=self.dim, matrix=np.zeros((0, self.dim), np.float32))
        if (contents.model_id, contents.dim) != (self.model_id, self.dim):
            raise ModelMismatchError(
                f"database {path} holds {contents.model_id} embeddings ({contents.dim}-D) but the configured "
                f"embedder is {self.model_id} ({self.dim}-D); run `edgeface db rebuild` to re-embed it "
                "(needs database.keep_images) or point database.path at another file"
            )
        return contents

    # --- writing ------------------------------------------------------------------------------

    def mutate(self, change: Change[_T]) -> _T:
        """Apply ``change`` to the newest generation on disk and commit the result, under both locks."""
        with self._locked():
            if _signature(self.path) != self._sig:
                self._load()
            contents, result, chips = change(self._contents)
            self._commit(contents, chips)
            return result

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            try:
                with self._file_lock.hold():
                    yield
            except LockTimeoutError as exc:
                raise DatabaseError(f"database {self.path} is locked: {exc}; is a stuck edgeface running?") from exc

    def _load(self) -> bool:
        """Adopt what is on disk (current file or newest good backup); False when nothing exists."""
        sig = _signature(self.path)  # before reading: a replace in between only causes one more reload
        contents, fallback = store.load_newest_good(self.path)
        if contents is None:
            return False
        contents = self.check_model(contents, self.path)
        self._set(contents, sig)
        self.fallback_from = fallback
        return True

    def _commit(self, contents: store.Contents, chips: dict[str, bytes]) -> None:
        newest_backup = max((g for g, _ in store.list_backups(self.path)), default=0)
        contents = replace(contents, generation=max(self._contents.generation, newest_backup) + 1)
        snapshot = self._build_snapshot(contents)  # before touching disk: a failure here changes nothing
        try:
            store.save(
                self.path,
                contents,
                chips=chips,
                person_json=self._person_json,
                current_generation=self._contents.generation,
                current_is_damaged=self.fallback_from is not None,
                backups=self.backups_kept,
            )
        except OSError as exc:
            # Disk full, read-only or not permitted: StorageError (reply code ``storage``), else DatabaseError.
            raise storage_error(exc, self.path, "cannot save the database") from exc
        self._set(contents, _signature(self.path), snapshot)
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
