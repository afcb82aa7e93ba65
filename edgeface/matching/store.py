"""The database's files: the npz format, its validation, numbered backups and the face-chip sidecar.

Layout beside ``faces.npz``::

    faces.npz               current generation
    faces.npz.bak-<gen>     previous generations (hard links made just before a replace, so free)
    faces.npz.lock          flock target serialising writers across processes
    faces.npz.chips/<sample id>.jpg   aligned face chips, only with keep_images
    faces.npz.corrupt       the last unreadable current file, kept for inspection

Everything here is free of locking and in-memory state; ``db.py`` decides when to call what.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edgeface.data import FloatArray
from edgeface.errors import DatabaseError
from edgeface.matching.atomic import commit_temp, fsync_dir, remove_stale_temps, write_bytes_atomic, write_temp
from edgeface.matching.records import PersonRecord, name_key

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BACKUP_MARK = ".bak-"
# Embeddings are stored normalised; float32 rounding stays far below this, a damaged file does not.
_NORM_TOLERANCE = 1e-3
_ARRAYS = ("embeddings", "person_ids", "sample_ids", "kinds", "model_id", "dim", "schema_version", "generation")


class CorruptFileError(Exception):
    """The file exists but cannot be trusted (truncated, not a zip, inconsistent); the reason is the message."""


@dataclass(frozen=True, slots=True)
class Contents:
    """One generation of the database. ``matrix`` rows follow ``people`` and their samples in order."""

    model_id: str
    dim: int
    generation: int
    people: tuple[PersonRecord, ...]
    matrix: FloatArray

    @property
    def sample_ids(self) -> list[str]:
        return [s.id for p in self.people for s in p.samples]


def encode(
    contents: Contents, fh: BinaryIO, person_json: Callable[[PersonRecord], str] = PersonRecord.json_text
) -> None:
    """Write ``contents`` as an uncompressed npz (fast to write and to load on a Pi).

    ``person_json`` lets the database reuse the JSON of persons unchanged since the last save.
    """
    rows = [(p.id, s.id, s.kind) for p in contents.people for s in p.samples]
    records = '{"people": [' + ", ".join(person_json(p) for p in contents.people) + "]}"
    # Built in memory (embeddings and records only, chips are files of their own), then written
    # at once: np.savez straight onto a file that hits a full disk leaves a half-open zip whose
    # finaliser later writes to the closed file and prints a traceback.
    buffer = io.BytesIO()
    np.savez(
        buffer,
        embeddings=np.ascontiguousarray(contents.matrix, dtype=np.float32).reshape(-1, contents.dim),
        person_ids=np.array([r[0] for r in rows], dtype=np.str_),
        sample_ids=np.array([r[1] for r in rows], dtype=np.str_),
        kinds=np.array([r[2] for r in rows], dtype=np.str_),
        model_id=np.array(contents.model_id, dtype=np.str_),
        dim=np.array(contents.dim, dtype=np.int64),
        schema_version=np.array(SCHEMA_VERSION, dtype=np.int64),
        generation=np.array(contents.generation, dtype=np.int64),
        records=np.frombuffer(records.encode(), dtype=np.uint8),
    )
    fh.write(buffer.getbuffer())


def decode(path: Path) -> Contents:
    """Read and fully validate a database file.

    Raises FileNotFoundError when absent, CorruptFileError when damaged or inconsistent, and
    DatabaseError when it is a valid file from a newer edgeface (falling back would lose data).
    """
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            missing = [key for key in (*_ARRAYS, "records") if key not in npz.files]
            if missing:
                raise CorruptFileError(f"missing arrays {missing}")
            arrays: dict[str, Any] = {key: npz[key] for key in _ARRAYS}
            records = json.loads(npz["records"].tobytes().decode())
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"unreadable: {exc}") from exc
    version = int(arrays["schema_version"])
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"database {path} has schema {version}, newer than this edgeface understands ({SCHEMA_VERSION}); "
            "upgrade edgeface"
        )
    try:
        people = tuple(PersonRecord.from_json(raw) for raw in records["people"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"bad person records: {exc!r}") from exc
    contents = Contents(
        model_id=str(arrays["model_id"]),
        dim=int(arrays["dim"]),
        generation=int(arrays["generation"]),
        people=people,
        matrix=arrays["embeddings"],
    )
    _validate(contents, arrays)
    return contents


def _validate(contents: Contents, arrays: dict[str, Any]) -> None:
    matrix = contents.matrix
    if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[1] != contents.dim:
        raise CorruptFileError(f"embeddings are {matrix.dtype}{matrix.shape}, expected float32 (N, {contents.dim})")
    rows = [(p.id, s.id, s.kind) for p in contents.people for s in p.samples]
    if len(rows) != matrix.shape[0]:
        raise CorruptFileError(f"{len(rows)} samples in the records but {matrix.shape[0]} embeddings")
    for i, key in enumerate(("person_ids", "sample_ids", "kinds")):
        if arrays[key].tolist() != [r[i] for r in rows]:
            raise CorruptFileError(f"{key} do not match the person records")
    if not np.isfinite(matrix).all() or (
        matrix.size and float(np.abs(np.linalg.norm(matrix, axis=1) - 1.0).max()) > _NORM_TOLERANCE
    ):
        raise CorruptFileError("embeddings are not finite unit vectors")
    ids = [p.id for p in contents.people]
    if len(set(ids)) != len(ids) or len({s[1] for s in rows}) != len(rows):
        raise CorruptFileError("duplicate person or sample ids")
    if len({name_key(p.name) for p in contents.people}) != len(ids):
        raise CorruptFileError("duplicate person names")
    if any(p.positives == 0 for p in contents.people):
        raise CorruptFileError("a person without positive samples")


def sample_ids_in(path: Path) -> set[str]:
    """Sample ids stored in a database file (reads only that array); CorruptFileError if unreadable."""
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            return set(npz["sample_ids"].tolist())
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"unreadable: {exc}") from exc


# --- loading and saving ----------------------------------------------------------------------


def load_newest_good(path: Path) -> tuple[Contents | None, str | None]:
    """(contents, fallback): the current file, else the newest readable backup together with why the
    current file was not used. (None, None) when nothing exists; DatabaseError when files exist but
    none can be read."""
    try:
        return decode(path), None
    except FileNotFoundError:
        reason = "missing"
    except CorruptFileError as exc:
        reason = str(exc)
    for generation, backup in list_backups(path):
        try:
            contents = decode(backup)
        except CorruptFileError as exc:
            _LOGGER.warning("database backup %s is unreadable too: %s", backup, exc)
            continue
        _LOGGER.warning(
            "database %s is %s; serving backup %s (generation %d) until the next change rewrites it",
            path, reason, backup.name, generation,
        )  # fmt: skip
        return contents, f"{path}: {reason}"
    if reason == "missing":
        return None, None
    raise DatabaseError(f"database {path} is {reason} and no backup could be read; move it aside to start empty")


def save(
    path: Path,
    contents: Contents,
    *,
    chips: dict[str, bytes],
    person_json: Callable[[PersonRecord], str],
    current_generation: int,
    current_is_damaged: bool,
    backups: int,
) -> None:
    """The commit protocol (module docstring of db.py); call only while holding the database lock.

    A damaged current file is moved to ``.corrupt`` for inspection instead of becoming a backup.
    """
    remove_stale_temps(path)
    write_chips(path, chips)
    tmp = write_temp(path, lambda fh: encode(contents, fh, person_json))
    if current_is_damaged and path.exists():
        os.replace(path, path.with_name(path.name + ".corrupt"))
    elif path.exists() and backups > 0:
        keep_as_backup(path, current_generation)
    commit_temp(tmp, path)
    prune_backups(path, backups)
    collect_chips(path, set(contents.sample_ids))


# --- backups ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One backup file; ``error`` is set (and the counts are None) when it cannot be read."""

    id: str
    path: Path
    generation: int
    created: str
    size_bytes: int
    persons: int | None
    samples: int | None
    model_id: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "generation": self.generation,
            "created": self.created,
            "size_bytes": self.size_bytes,
            "persons": self.persons,
            "samples": self.samples,
            "model_id": self.model_id,
            "error": self.error,
        }


def describe_backups(path: Path) -> list[BackupInfo]:
    """Every backup, newest first, read in full to tell whether it is usable."""
    out = []
    for generation, backup in list_backups(path):
        st = backup.stat()
        info: dict[str, Any] = {"persons": None, "samples": None, "model_id": None, "error": None}
        try:
            contents = decode(backup)
            info.update(persons=len(contents.people), samples=len(contents.sample_ids), model_id=contents.model_id)
        except (CorruptFileError, DatabaseError) as exc:
            info["error"] = str(exc)
        created = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")
        out.append(BackupInfo(str(generation), backup, generation, created, st.st_size, **info))
    return out


def backup_path(path: Path, generation: int) -> Path:
    return path.with_name(f"{path.name}{BACKUP_MARK}{generation}")


def list_backups(path: Path) -> list[tuple[int, Path]]:
    """(generation, file) of every backup beside ``path``, newest first."""
    found = []
    for candidate in path.parent.glob(f"{path.name}{BACKUP_MARK}*"):
        suffix = candidate.name[len(path.name) + len(BACKUP_MARK) :]
        if suffix.isdigit():
            found.append((int(suffix), candidate))
    return sorted(found, reverse=True)


def keep_as_backup(path: Path, generation: int) -> None:
    """Preserve the current file as backup ``generation`` before it is replaced.

    A hard link costs nothing and is durable with the directory fsync that follows the replace;
    filesystems without links (FAT on a USB stick) get a copy.
    """
    target = backup_path(path, generation)
    if target.exists():  # a crash between this step and the replace already made it
        return
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)
        with target.open("rb") as fh:
            os.fsync(fh.fileno())


def prune_backups(path: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest backups."""
    for _, old in list_backups(path)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


# --- face chips ------------------------------------------------------------------------------


def chips_dir(path: Path) -> Path:
    return path.with_name(path.name + ".chips")


def chip_path(path: Path, sample_id: str) -> Path:
    return chips_dir(path) / f"{sample_id}.jpg"


def write_chips(path: Path, chips: dict[str, bytes]) -> None:
    """Store JPEG chips by sample id (before the database that references them is committed)."""
    if not chips:
        return
    directory = chips_dir(path)
    directory.mkdir(mode=0o700, exist_ok=True)
    for sample_id, jpeg in chips.items():
        write_bytes_atomic(chip_path(path, sample_id), jpeg)


def read_chip(path: Path, sample_id: str) -> bytes | None:
    """The stored chip of a sample, None when there is none."""
    try:
        return chip_path(path, sample_id).read_bytes()
    except FileNotFoundError:
        return None


def collect_chips(path: Path, keep: set[str]) -> int:
    """Delete chips whose sample is in neither the current file nor a backup; returns how many.

    Chips of a deleted person therefore live exactly as long as the backups that still hold the
    person's embeddings, and a restored backup finds its chips. An unreadable backup protects nothing.
    """
    directory = chips_dir(path)
    if not directory.is_dir():
        return 0
    for _, backup in list_backups(path):
        with contextlib.suppress(CorruptFileError):
            keep |= sample_ids_in(backup)
    removed = 0
    for chip in directory.iterdir():
        # Besides unreferenced chips this sweeps temp files of a chip write that was killed.
        if chip.suffix != ".jpg" or chip.stem not in keep:
            chip.unlink(missing_ok=True)
            removed += 1
    if removed:
        fsync_dir(directory)
    return removed
