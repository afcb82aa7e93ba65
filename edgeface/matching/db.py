"""The on-device enrollment database: persons and their embeddings, read and edited by commands.

``FaceDatabase`` is what the daemon, the CLI and the fleet hold. It checks every request against
the current generation (names unique, the last positive sample kept, rows matching the model)
and turns it into an edit (``edits.py``) that ``DatabaseFile`` commits atomically under its locks
(``dbfile.py``, which also describes the concurrency model and the commit protocol).

Privacy: ``delete_person`` removes the person's samples and chips from the current file at once.
Older backups still hold them until they rotate out, i.e. after ``backups`` further saves (or
``reset`` followed by that many saves); chips are deleted when the last backup naming them goes.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeface.data import FloatArray, Quality
from edgeface.errors import CommandError, DatabaseError
from edgeface.matching import edits, store
from edgeface.matching.atomic import write_atomic
from edgeface.matching.dbfile import ChangeListener, DatabaseFile
from edgeface.matching.records import (
    PersonRecord,
    SampleKind,
    SampleRecord,
    SampleSource,
    clean_name,
    make_samples,
    metadata_json,
    new_id,
    now_iso,
    unit_rows,
)
from edgeface.matching.snapshot import DbSnapshot
from edgeface.matching.store import BackupInfo

_Edit = tuple[store.Contents, PersonRecord, dict[str, bytes]]


class FaceDatabase:
    """Persons and embeddings of one model in one npz file. Thread-safe; use ``open``."""

    def __init__(self, file: DatabaseFile, keep_images: bool) -> None:
        self._file = file
        self.model_id = file.model_id
        self.dim = file.dim
        self.backups_kept = file.backups_kept
        self.keep_images = keep_images

    @classmethod
    def open(cls, path: Path, model_id: str, dim: int, backups: int = 5, keep_images: bool = False) -> FaceDatabase:
        """Open (creating an empty one if absent), falling back to the newest good backup if damaged."""
        return cls(DatabaseFile.open(path, model_id, dim, backups), keep_images)

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
        file = DatabaseFile.overwrite(path, contents, expected_generation=expected_generation, backups=backups)
        return cls(file, keep_images)

    # --- reading ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def generation(self) -> int:
        return self._file.generation

    @property
    def fallback_from(self) -> str | None:
        """Why the current file was not readable while a backup is served; None otherwise."""
        return self._file.fallback_from

    def contents(self) -> store.Contents:
        """The current generation: persons and their embedding rows (immutable)."""
        return self._file.contents()

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(before, after)`` after every change of the contents, whatever its origin:
        a command, the fleet, or another process's save picked up by ``reload`` or the next write."""
        self._file.add_listener(listener)

    def remove_listener(self, listener: ChangeListener) -> None:
        """Stop calling ``listener``."""
        self._file.remove_listener(listener)

    def snapshot(self) -> DbSnapshot:
        """The current immutable match view (cheap: built once per generation)."""
        return self._file.snapshot()

    def get(self, person_id: str) -> PersonRecord:
        """The person with this id; ``not_found`` otherwise."""
        if (person := self._file.find(person_id)) is None:
            raise CommandError("not_found", f"no person with id {person_id!r}")
        return person

    def find_by_name(self, name: str) -> PersonRecord | None:
        """The person with this name, ignoring case and surrounding spaces."""
        return self._file.named(name)

    def list(self, skip: int = 0, limit: int | None = None) -> tuple[int, builtins.list[PersonRecord]]:
        """(total, page) in creation order."""
        if skip < 0 or (limit is not None and limit < 1):
            raise CommandError("bad_request", f"skip must be >= 0 and limit >= 1, got skip={skip} limit={limit}")
        people = self._file.contents().people
        return len(people), builtins.list(people[skip : None if limit is None else skip + limit])

    def chip(self, sample_id: str) -> bytes | None:
        """The stored JPEG chip of a sample, None when none was kept."""
        return store.read_chip(self.path, sample_id)

    def backups(self) -> builtins.list[BackupInfo]:
        """Backups, newest first, each read to report whether it is usable."""
        return store.describe_backups(self.path)

    def reload(self) -> bool:
        """Re-read the file if another process changed it; True when the contents changed."""
        return self._file.reload()

    def export(self, target: Path) -> None:
        """Write the current generation (and its chips) as a standalone database file."""
        if target.resolve() == self.path.resolve():
            raise CommandError("bad_request", f"export target {target} is the database itself")
        contents = self._file.contents()
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

        def change(c: store.Contents) -> _Edit:
            if (other := self._file.named(name)) is not None:
                raise CommandError("conflict", f"a person named {other.name!r} already exists (id {other.id})")
            samples, kept = self._samples(c, rows, "positive", source, chips, qualities)
            now = now_iso()
            person = PersonRecord(new_id(self._file.person_ids()), name, meta, now, now, samples)
            return edits.append_person(c, person, rows), person, kept

        return self._file.mutate(change)

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

        def change(c: store.Contents) -> _Edit:
            other = self._file.named(name)
            if other is not None and other.id != person_id:
                raise CommandError("conflict", f"a person named {other.name!r} already exists (id {other.id})")
            return self._changed(c, self.get(person_id).changed(name=name))

        return self._file.mutate(change)

    def update_metadata(self, person_id: str, metadata: dict[str, Any]) -> PersonRecord:
        """Replace a person's metadata object."""
        meta = metadata_json(metadata)
        return self._file.mutate(lambda c: self._changed(c, self.get(person_id).changed(metadata_text=meta)))

    def delete_person(self, person_id: str) -> PersonRecord:
        """Remove a person, their samples and chips (see the module docstring for backups)."""

        def change(c: store.Contents) -> _Edit:
            person = self.get(person_id)
            return edits.remove_person(c, person_id), person, {}

        return self._file.mutate(change)

    def delete_sample(self, person_id: str, sample_id: str) -> PersonRecord:
        """Remove one sample; ``conflict`` when it is the person's last positive one."""

        def change(c: store.Contents) -> _Edit:
            person = self.get(person_id)
            sample = person.sample(sample_id)
            if sample.kind == "positive" and person.positives == 1:
                raise CommandError(
                    "conflict", f"sample {sample_id} is the last one of {person.name!r}; delete the person instead"
                )
            contents, updated = edits.remove_sample(c, person, sample)
            return contents, updated, {}

        return self._file.mutate(change)

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
        self._file.mutate(lambda c: (edits.merge_remote(c, checked, deletes), None, {}))

    def restore(self, backup_id: str) -> None:
        """Make a backup's contents current again (as a new generation, so this too can be undone)."""
        for generation, path in store.list_backups(self.path):  # noqa: B007 -- path is used after the loop
            if str(generation) == backup_id.strip():
                break
        else:
            raise CommandError("not_found", f"no backup {backup_id!r} of {self.path}; see `edgeface db backups`")
        try:
            contents = self._file.check_model(store.decode(path), path)
        except store.CorruptFileError as exc:
            raise DatabaseError(f"backup {path} cannot be restored: {exc}") from exc
        self._file.mutate(lambda c: (replace(c, people=contents.people, matrix=contents.matrix), None, {}))

    def reset(self) -> None:
        """Remove every person; the previous generation stays as a backup (when backups > 0)."""
        self._file.mutate(lambda c: (edits.cleared(c), None, {}))

    # --- internals ----------------------------------------------------------------------------

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
            return edits.extend_person(c, person.changed(**fields), rows), [s.id for s in samples], kept

        return self._file.mutate(change)

    def _changed(self, c: store.Contents, person: PersonRecord) -> _Edit:
        return edits.replace_person(c, person), person, {}
