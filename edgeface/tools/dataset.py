"""Labelled evaluation sets: a ``pairs.csv`` (file_a,file_b,same[,fold]) or a folder per person.

The optional ``fold`` column (a whole number >= 1 on every row, at least two different values)
marks the folds of the standard k-fold protocol, e.g. LFW View 2's ten.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeface.errors import EdgefaceError
from edgeface.sources.uri import IMAGE_SUFFIXES

PAIRS_HEADER = ("file_a", "file_b", "same")
FOLD_COLUMN = "fold"
# Folders starting with these hold unlabelled material (group photos, variants, negatives) by convention.
SKIP_PREFIXES = ("_", ".")


class DatasetError(EdgefaceError):
    """An evaluation set that cannot be read or is unusable."""


@dataclass(frozen=True, slots=True)
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int | None = None


@dataclass(frozen=True, slots=True)
class PairSet:
    """Verification pairs with absolute image paths, read from one or more csv files."""

    source: Path
    pairs: tuple[Pair, ...]
    more_sources: tuple[Path, ...] = ()

    @property
    def sources(self) -> tuple[Path, ...]:
        return (self.source, *self.more_sources)

    @property
    def folds(self) -> list[int] | None:
        """The fold of every pair, or None when the set has no ``fold`` column."""
        folds = [p.fold for p in self.pairs]
        return None if any(f is None for f in folds) else [f for f in folds if f is not None]

    @property
    def images(self) -> list[Path]:
        """Every image named by a pair, once, in first-seen order."""
        return list(dict.fromkeys(p for pair in self.pairs for p in (pair.a, pair.b)))


@dataclass(frozen=True, slots=True)
class PersonSet:
    """Photos per person (sorted by file name); the first photo of each person is its gallery image."""

    source: Path
    persons: dict[str, tuple[Path, ...]]

    @property
    def images(self) -> list[Path]:
        return [p for paths in self.persons.values() for p in paths]

    def labels(self) -> list[str]:
        """Person of each entry of ``images``."""
        return [name for name, paths in self.persons.items() for _ in paths]


def _parse_same(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text in {"1", "true", "yes", "same"}:
        return True
    if text in {"0", "false", "no", "different"}:
        return False
    raise DatasetError(f"{where}: 'same' must be 1/0 or true/false, got {value!r}")


def _parse_fold(value: str, where: str) -> int:
    text = value.strip()
    fix = "write the fold number (1, 2, ...) of every pair, or drop the column for a set without folds"
    try:
        fold = int(text)
    except ValueError as exc:
        raise DatasetError(f"{where}: unknown fold {value!r}; {fix}") from exc
    if fold < 1:
        raise DatasetError(f"{where}: unknown fold {value!r}; {fix}")
    return fold


def load_pairs(path: Path) -> PairSet:
    """Read ``file_a,file_b,same[,fold]`` rows; file paths are relative to the csv's folder."""
    root = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DatasetError(f"pairs file {path} cannot be read: {exc.strerror}") from exc
    header = tuple(c.strip() for c in rows[0]) if rows else ()
    if header not in (PAIRS_HEADER, (*PAIRS_HEADER, FOLD_COLUMN)):
        raise DatasetError(
            f"pairs file {path}: first line must be {','.join(PAIRS_HEADER)} or {','.join(PAIRS_HEADER)},{FOLD_COLUMN}"
        )
    columns = len(header)
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"pairs file {path} line {line}"
        if len(row) != columns:
            raise DatasetError(f"{where}: expected {columns} columns, got {len(row)}")
        a, b = root / row[0].strip(), root / row[1].strip()
        for image in (a, b):
            if not image.is_file():
                raise DatasetError(f"{where}: image {image} does not exist")
        fold = _parse_fold(row[3], where) if columns == 4 else None
        pairs.append(Pair(a, b, _parse_same(row[2], where), fold))
    if not any(p.same for p in pairs) or all(p.same for p in pairs):
        raise DatasetError(f"pairs file {path}: needs at least one same-person and one different-person pair")
    if columns == 4 and len({p.fold for p in pairs}) < 2:
        raise DatasetError(
            f"pairs file {path}: every pair is in fold {pairs[0].fold}; k-fold needs at least two folds "
            "(or drop the fold column)"
        )
    return PairSet(path, tuple(pairs))


def merge_pairs(sets: Sequence[PairSet]) -> PairSet:
    """Several pairs files evaluated as one set (e.g. LFW View 1 train + test); folds must not be mixed."""
    with_folds = [s.source for s in sets if s.folds is not None]
    if with_folds and len(with_folds) != len(sets):
        raise DatasetError(
            f"pairs files {', '.join(map(str, with_folds))} have a fold column and the others do not; "
            "evaluate them separately"
        )
    if len(with_folds) > 1:
        raise DatasetError(
            f"pairs files {', '.join(map(str, with_folds))} each number their own folds; evaluate them separately"
        )
    return PairSet(sets[0].source, tuple(p for s in sets for p in s.pairs), tuple(s.source for s in sets[1:]))


def person_folders(root: Path) -> dict[str, tuple[Path, ...]]:
    """Photos (sorted) of each sub-folder of ``root`` that holds any; ``_x`` and ``.x`` folders are skipped."""
    if not root.is_dir():
        raise DatasetError(f"folder {root} does not exist")
    persons: dict[str, tuple[Path, ...]] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith(SKIP_PREFIXES):
            continue
        photos = tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if photos:
            persons[folder.name] = photos
    return persons


def load_persons(root: Path) -> PersonSet:
    """A folder-per-person evaluation set: at least 2 persons, at least one with 2 photos."""
    persons = person_folders(root)
    if len(persons) < 2:
        raise DatasetError(f"evaluation folder {root}: needs sub-folders of photos for at least 2 persons")
    if all(len(p) < 2 for p in persons.values()):
        raise DatasetError(f"evaluation folder {root}: no person has 2 photos, so there is nothing to verify")
    return PersonSet(root, persons)


def load_dataset(path: Path, *more: Path) -> PairSet | PersonSet:
    """A ``.csv`` file is a pairs list; a directory is a folder-per-person set; several csv files are merged."""
    if more:
        paths = (path, *more)
        not_csv = [p for p in paths if not (p.is_file() and p.suffix.lower() == ".csv")]
        if not_csv:
            raise DatasetError(f"{not_csv[0]}: several data sets can only be pairs .csv files")
        return merge_pairs([load_pairs(p) for p in paths])
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_pairs(path)
    if path.is_dir():
        return load_persons(path)
    raise DatasetError(f"{path}: expected a pairs .csv file or a folder with one sub-folder per person")
