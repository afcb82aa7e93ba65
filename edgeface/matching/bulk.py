"""Bulk database operations: importing a folder of photos and re-embedding after a model change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeface.data import FloatArray, Quality
from edgeface.errors import CommandError, DatabaseError, ErrorCode
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Accepted, Analyzer, Enroller
from edgeface.matching.records import PersonRecord, SampleRecord

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# A stored chip is the face cropped tight by the old model's alignment; the detector needs context
# around a face to find it, so rebuild pads each side by this fraction of the chip before analysing.
# Measured on obama.jpg's 150 px chip: unpadded, the full-range detector finds no face; padded by
# 0.25-1.0, both detectors find it and the re-embedding scores >= 0.998 against the original.
CHIP_PADDING = 0.5

# Why a positive sample could not be re-embedded, and what to do about it.
NO_CHIP = (
    "no stored chip to re-embed (enrolled while database.keep_images was off); "
    "enroll the person again with `edgeface db enroll`"
)

ProgressCallback = Callable[[int, int, str], None]  # (done, total, current item)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One image or sample that was not stored, with the same code an MQTT reply would carry."""

    item: str
    code: ErrorCode
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "code": self.code, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ImportSummary:
    images: int
    faces_added: int
    persons_created: tuple[str, ...]
    persons_updated: tuple[str, ...]
    rejected: tuple[Rejection, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "faces_added": self.faces_added,
            "persons_created": list(self.persons_created),
            "persons_updated": list(self.persons_updated),
            "rejected": [r.to_json() for r in self.rejected],
        }


@dataclass(frozen=True, slots=True)
class RebuildSummary:
    model_id: str
    persons: int
    samples: int
    lost_samples: tuple[Rejection, ...]
    lost_persons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "persons": self.persons,
            "samples": self.samples,
            "lost_samples": [r.to_json() for r in self.lost_samples],
            "lost_persons": list(self.lost_persons),
        }


def person_folders(root: Path) -> list[tuple[str, list[Path]]]:
    """(name, images) per person: each subfolder is a person named after it; an image directly in
    ``root`` is a person named after the file (face_recognition's ``known_people/alice.jpg`` layout)."""
    if not root.is_dir():
        raise CommandError("bad_request", f"{root} is not a directory")

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    groups = [(d.name, images(d)) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    groups += [(p.stem, [p]) for p in images(root) if not p.name.startswith(".")]
    return [(name, paths) for name, paths in groups if paths]


def import_folder(
    enroller: Enroller, root: Path, progress_cb: ProgressCallback | None = None, *, force: bool = False
) -> ImportSummary:
    """Enroll every usable photo under ``root``; unlike a single request, bad photos are skipped and
    reported while the good ones are stored (one save per person)."""
    groups = person_folders(root)
    total = sum(len(paths) for _, paths in groups)
    done, added = 0, 0
    created: list[str] = []
    updated: list[str] = []
    rejected: list[Rejection] = []
    for name, paths in groups:
        accepted: list[Accepted] = []
        for path in paths:
            label = str(path.relative_to(root))
            try:
                accepted.append(enroller.accept(path.read_bytes(), label))
            except CommandError as exc:
                rejected.append(Rejection(label, exc.code, exc.message))
            except OSError as exc:
                rejected.append(Rejection(label, "bad_request", f"{label}: cannot be read: {exc.strerror}"))
            done += 1
            if progress_cb is not None:
                progress_cb(done, total, label)
        if not accepted:
            continue
        try:
            target = enroller.target(name, None)
            if not force:
                vectors = np.stack([a.vector for a in accepted])
                conflicts = enroller.conflicts(vectors, target.id if target else None)
                rejected += [Rejection(name, "conflict", f"{name}: a photo {c}") for c in conflicts if c]
                accepted = [a for a, c in zip(accepted, conflicts, strict=True) if c is None]
            if accepted:
                labels = [name] * len(accepted)
                result = enroller.store(name, accepted, None, None, force=True, source="import", labels=labels)
                (created if result.created else updated).append(result.person.name)
                added += len(result.sample_ids)
        except CommandError as exc:
            rejected.append(Rejection(name, exc.code, exc.message))
    return ImportSummary(total, added, tuple(created), tuple(updated), tuple(rejected))


def _reembed(analyzer: Analyzer, jpeg: bytes, model_id: str) -> tuple[FloatArray, Quality] | None:
    chip = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if chip is None:
        return None
    pad = round(CHIP_PADDING * max(chip.shape[:2]))
    padded = np.asarray(cv2.copyMakeBorder(chip, pad, pad, pad, pad, cv2.BORDER_REPLICATE), dtype=np.uint8)
    faces = analyzer.analyze(padded)
    if not faces:
        return None
    embedding = faces[0].embedding
    if embedding.model_id != model_id:
        raise DatabaseError(f"the analyzer embeds with {embedding.model_id}, not {model_id}")
    return embedding.vector, embedding.quality


def rebuild(
    path: Path,
    analyzer: Analyzer,
    model_id: str,
    dim: int,
    *,
    backups: int = 5,
    keep_images: bool = True,
    progress_cb: ProgressCallback | None = None,
) -> RebuildSummary:
    """Re-embed every stored chip with ``analyzer`` into a ``model_id`` database at ``path``.

    Person and sample ids are kept, so clients' references stay valid. Samples without a chip
    (enrolled with keep_images off, or negatives) cannot be re-embedded and are reported; a person
    left without positive samples is dropped and reported. The old file stays as a backup.
    """
    try:
        old = store.decode(path)
    except FileNotFoundError as exc:
        raise DatabaseError(f"database {path} does not exist; nothing to rebuild") from exc
    except store.CorruptFileError as exc:
        raise DatabaseError(f"database {path} is damaged ({exc}); restore a backup first") from exc
    total = len(old.sample_ids)
    done = 0
    people: list[PersonRecord] = []
    vectors: list[FloatArray] = []
    lost: list[Rejection] = []
    lost_persons: list[str] = []
    for person in old.people:
        kept: list[SampleRecord] = []
        for sample in person.samples:
            label = f"{person.name}/{sample.id}"
            jpeg = store.read_chip(path, sample.id)
            result = _reembed(analyzer, jpeg, model_id) if jpeg is not None and sample.kind == "positive" else None
            if result is not None:
                vectors.append(result[0])
                kept.append(replace(sample, quality=result[1]))
            elif sample.kind == "negative":
                lost.append(Rejection(label, "not_found", f"{label}: a negative sample keeps no chip to re-embed"))
            elif jpeg is None:
                lost.append(Rejection(label, "not_found", f"{label}: {NO_CHIP}"))
            else:
                lost.append(Rejection(label, "no_face", f"{label}: no face found in the stored chip"))
            done += 1
            if progress_cb is not None:
                progress_cb(done, total, label)
        if any(s.kind == "positive" for s in kept):
            people.append(person.changed(samples=tuple(kept)))
        else:
            lost_persons.append(person.name)
    matrix = np.array(vectors, dtype=np.float32).reshape(-1, dim)
    contents = store.Contents(model_id, dim, 0, tuple(people), matrix)
    FaceDatabase.replace_model(
        path, contents, expected_generation=old.generation, backups=backups, keep_images=keep_images
    )
    return RebuildSummary(model_id, len(people), len(vectors), tuple(lost), tuple(lost_persons))
