"""Enrollment rules shared by the MQTT ``enroll`` command, ``confirm`` of an unknown, and the CLI.

A request is all-or-nothing: every image must show exactly one face that is big, sharp and frontal
enough, and no face may already belong to ANOTHER person (unless ``force``); the first violation
rejects the request with a typed error naming the image, and the database is not touched.

Target person: ``person_id`` when given; otherwise the person whose name equals ``name`` ignoring
case (adding photos to "Alice" twice grows one identity instead of making two); otherwise a new
person. Metadata sent with samples for an existing person is shallow-merged into theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from edgeface.config import DatabaseConfig, VisionConfig
from edgeface.data import Embedding, FloatArray, ImageArray, Quality
from edgeface.errors import CommandError, DatabaseError, ImageError
from edgeface.matching.db import FaceDatabase
from edgeface.matching.matcher import match
from edgeface.matching.records import PersonRecord, SampleSource, name_key, unit_rows
from edgeface.vision.imageio import ImageTooLargeError, decode_image, ensure_bgr

# A face this similar to one of the target person's own samples is the same photo again. Measured
# with the default model on the samples: copies re-encoded at JPEG 60-95 or downscaled to 0.5x score
# >= 0.998; different photos of Obama <= 0.976, and even obama_partial_face (a crop of obama.jpg
# cutting the cheek) 0.985. Storing a copy adds nothing; skipping it makes a re-run import idempotent.
SAME_PHOTO_SIMILARITY = 0.995
# Chips are re-embedded by `db rebuild`; JPEG 95 keeps the re-embedding within noise of the
# original while a 150 px chip stays ~10 KB.
CHIP_JPEG_QUALITY = 95


def enrollment_vision(vision: VisionConfig) -> VisionConfig:
    """Vision settings for analysing enrollment photos: the full-range detector.

    An enrollment photo may show a second, smaller face that must be seen to be refused. Measured on
    the sample photos: obama.jpg and biden.jpg side by side (1410x1137) give ONE face with the
    short-range model (Biden's 162 px face is missed, so the photo would enroll as one person) and
    both with the full-range model, which finds the same single face in every one-person sample.
    """
    return vision.model_copy(update={"detector": "full"})


class AnalyzedFaceLike(Protocol):
    """What enrollment needs of ``edgeface.vision.analyzer.AnalyzedFace``."""

    @property
    def chip(self) -> ImageArray: ...

    @property
    def embedding(self) -> Embedding: ...


class Analyzer(Protocol):
    """``edgeface.vision.analyzer.FaceAnalyzer``: faces of an image, its subject first."""

    def analyze(self, image_bgr: ImageArray) -> Sequence[AnalyzedFaceLike]: ...


@dataclass(frozen=True, slots=True)
class EnrollmentGate:
    """Minimum face quality for a photo to become a reference sample."""

    min_face_px: float
    min_sharpness: float
    max_yaw_deg: float

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> EnrollmentGate:
        return cls(config.enroll_min_face_px, config.enroll_min_sharpness, config.enroll_max_yaw_deg)

    def check(self, quality: Quality, where: str) -> None:
        """Raise ``low_quality`` naming the first failed measure, its value and the limit."""
        if quality.aligned_by != "landmarks":
            # A reference sample is compared with every future face: it must be the best chip we can make.
            raise CommandError(
                "low_quality",
                f"{where}: the face landmarks could not be found (the chip would be aligned on the detector's "
                "keypoints only); use a sharper, frontal, unobstructed photo",
            )
        if quality.face_px < self.min_face_px:
            raise CommandError(
                "low_quality",
                f"{where}: face is {quality.face_px:.0f} px, below the {self.min_face_px:.0f} px minimum "
                "(database.enroll_min_face_px); use a closer or larger photo",
            )
        if quality.sharpness < self.min_sharpness:
            raise CommandError(
                "low_quality",
                f"{where}: sharpness is {quality.sharpness:.1f}, below the {self.min_sharpness:.1f} minimum "
                "(database.enroll_min_sharpness); the photo is blurred",
            )
        if abs(quality.yaw) > self.max_yaw_deg:
            raise CommandError(
                "low_quality",
                f"{where}: face is turned {abs(quality.yaw):.0f} degrees, beyond the {self.max_yaw_deg:.0f} degree "
                "limit (database.enroll_max_yaw_deg); use a frontal photo",
            )


@dataclass(frozen=True, slots=True)
class EnrollResult:
    person: PersonRecord
    created: bool
    sample_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"person": self.person.to_json(), "created": self.created, "sample_ids": list(self.sample_ids)}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A face that passed the per-image rules, ready to be stored."""

    vector: FloatArray
    quality: Quality | None  # None for embeddings that arrive without their photo
    chip_jpeg: bytes | None


def encode_chip(chip: ImageArray) -> bytes:
    """JPEG bytes of an aligned face chip."""
    ok, buffer = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, CHIP_JPEG_QUALITY])
    if not ok:
        raise ImageError(f"could not JPEG-encode a face chip of shape {chip.shape}")
    return bytes(buffer)


class Enroller:
    """Turns photos or embeddings into database samples under the rules above."""

    def __init__(self, db: FaceDatabase, analyzer: Analyzer, gate: EnrollmentGate, duplicate_threshold: float) -> None:
        self.db = db
        self.analyzer = analyzer
        self.gate = gate
        self.duplicate_threshold = duplicate_threshold

    def accept(self, image: bytes | ImageArray, where: str) -> Accepted:
        """Decode and analyse one image; exactly one face passing the gate, or a typed CommandError."""
        try:
            bgr = decode_image(image) if isinstance(image, bytes | bytearray) else ensure_bgr(image)
        except ImageTooLargeError as exc:
            raise CommandError("too_large", f"{where}: {exc}") from exc
        except ImageError as exc:
            raise CommandError("bad_request", f"{where}: {exc}") from exc
        faces = self.analyzer.analyze(bgr)
        if not faces:
            raise CommandError("no_face", f"{where}: no face found")
        if len(faces) > 1:
            raise CommandError("multiple_faces", f"{where}: {len(faces)} faces found; send a photo of one person")
        embedding = faces[0].embedding
        if embedding.model_id != self.db.model_id:
            raise DatabaseError(
                f"the analyzer embeds with {embedding.model_id} but database {self.db.path} holds {self.db.model_id}"
            )
        self.gate.check(embedding.quality, where)
        chip = encode_chip(faces[0].chip) if self.db.keep_images else None
        return Accepted(embedding.vector, embedding.quality, chip)

    def from_images(
        self,
        name: str | None,
        images: Sequence[bytes | ImageArray],
        metadata: dict[str, Any] | None = None,
        person_id: str | None = None,
        *,
        force: bool = False,
        labels: Sequence[str] | None = None,
    ) -> EnrollResult:
        """Enroll photos (encoded bytes or BGR arrays); errors name the image by its 0-based index
        (or by ``labels[i]``, e.g. the CLI's file names)."""
        if not images:
            raise CommandError("bad_request", "no images to enroll")
        names = labels or [f"image {i}" for i in range(len(images))]
        accepted = [self.accept(image, where) for image, where in zip(images, names, strict=True)]
        return self.store(name, accepted, metadata, person_id, force=force, source="image", labels=names)

    def from_vectors(
        self,
        name: str | None,
        vectors: FloatArray | Sequence[FloatArray],
        metadata: dict[str, Any] | None = None,
        person_id: str | None = None,
        *,
        force: bool = False,
        source: SampleSource = "track",
    ) -> EnrollResult:
        """Enroll embeddings already gated by the pipeline (a live track or a confirmed unknown cluster)."""
        rows = unit_rows(vectors, self.db.dim, self.db.model_id)
        accepted = [Accepted(row, None, None) for row in rows]
        labels = [f"sample {i}" for i in range(len(accepted))]
        return self.store(name, accepted, metadata, person_id, force=force, source=source, labels=labels)

    def target(self, name: str | None, person_id: str | None) -> PersonRecord | None:
        """The existing person a request adds to, or None for a new person (see module docstring)."""
        if person_id is not None:
            person = self.db.get(person_id)
            if name and name_key(name) != name_key(person.name):
                raise CommandError(
                    "bad_request", f"person {person_id} is named {person.name!r}, not {name!r}; rename them first"
                )
            return person
        if not name:
            raise CommandError("bad_request", "give a name for a new person or the person_id of an existing one")
        return self.db.find_by_name(name)

    def conflicts(self, vectors: FloatArray, target_id: str | None) -> list[str | None]:
        """Per vector, why it must not be stored: it matches ANOTHER person at the duplicate threshold,
        or it is a photo the target person already has; None when it may be stored."""
        out: list[str | None] = []
        for result in match(self.db.snapshot(), vectors, top_k=2):
            other = next((c for c in result.candidates if c.person_id != target_id), None)
            own = next((c for c in result.candidates if c.person_id == target_id), None)
            if other is not None and other.similarity >= self.duplicate_threshold:
                out.append(
                    f"matches {other.name!r} (id {other.person_id}) with similarity {other.similarity:.3f} "
                    f">= {self.duplicate_threshold:.3f}"
                )
            elif own is not None and own.similarity >= SAME_PHOTO_SIMILARITY:
                out.append(f"is already enrolled for {own.name!r} (similarity {own.similarity:.3f})")
            else:
                out.append(None)
        return out

    def store(
        self,
        name: str | None,
        accepted: Sequence[Accepted],
        metadata: dict[str, Any] | None,
        person_id: str | None,
        *,
        force: bool,
        source: SampleSource,
        labels: Sequence[str],
    ) -> EnrollResult:
        """Duplicate-check and save accepted faces in one database write."""
        self.db.reload()  # a stat when unchanged; lets the checks see what other processes enrolled
        target = self.target(name, person_id)
        vectors = np.stack([a.vector for a in accepted]).astype(np.float32)
        if not force:
            for where, conflict in zip(labels, self.conflicts(vectors, target.id if target else None), strict=True):
                if conflict is not None:
                    raise CommandError("conflict", f"{where} {conflict}; pass force to enroll it anyway")
        chips = [a.chip_jpeg for a in accepted]
        qualities = [a.quality for a in accepted]
        if target is None:
            assert name is not None  # target() demands a name when no person_id is given
            person = self.db.add_person(name, metadata, vectors, chips=chips, source=source, qualities=qualities)
            return EnrollResult(person, True, tuple(s.id for s in person.samples))
        ids = self.db.add_samples(
            target.id, vectors, chips=chips, source=source, qualities=qualities, merge_metadata=metadata
        )
        return EnrollResult(self.db.get(target.id), False, tuple(ids))
