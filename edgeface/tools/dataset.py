"""Labelled evaluation sets: a ``pairs.csv`` (file_a,file_b,same) or a folder per person."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edgeface.errors import EdgefaceError
from edgeface.sources.uri import IMAGE_SUFFIXES

PAIRS_HEADER = ("file_a", "file_b", "same")
# Folders starting with these hold unlabelled material (group photos, variants, negatives) by convention.
SKIP_PREFIXES = ("_", ".")


class DatasetError(EdgefaceError):
    """An evaluation set that cannot be read or is unusable."""


@dataclass(frozen=True, slots=True)
class Pair:
    a: Path
    b: Path
    same: bool


@dataclass(frozen=True, slots=True)
class PairSet:
    """Verification pairs with absolute image paths."""

    source: Path
    pairs: tuple[Pair, ...]

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


def load_pairs(path: Path) -> PairSet:
    """Read ``file_a,file_b,same`` rows; file paths are relative to the csv's folder."""
    root = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise DatasetError(f"pairs file {path} cannot be read: {exc.strerror}") from exc
    if not rows or tuple(c.strip() for c in rows[0]) != PAIRS_HEADER:
        raise DatasetError(f"pairs file {path}: first line must be {','.join(PAIRS_HEADER)}")
    pairs = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"pairs file {path} line {line}"
        if len(row) != 3:
            raise DatasetError(f"{where}: expected 3 columns, got {len(row)}")
        a, b = root / row[0].strip(), root / row[1].strip()
        for image in (a, b):
            if not image.is_file():
                raise DatasetError(f"{where}: image {image} does not exist")
        pairs.append(Pair(a, b, _parse_same(row[2], where)))
    if not any(p.same for p in pairs) or all(p.same for p in pairs):
        raise DatasetError(f"pairs file {path}: needs at least one same-person and one different-person pair")
    return PairSet(path, tuple(pairs))


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


def load_dataset(path: Path) -> PairSet | PersonSet:
    """A ``.csv`` file is a pairs list; a directory is a folder-per-person set."""
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_pairs(path)
    if path.is_dir():
        return load_persons(path)
    raise DatasetError(f"{path}: expected a pairs .csv file or a folder with one sub-folder per person")
