"""Person and sample records of the enrollment database: what they hold, how they (de)serialise, and
the validation of user-supplied names, metadata and embeddings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

import numpy as np

from edgeface.data import AlignedBy, FloatArray, Quality
from edgeface.errors import CommandError

SampleKind = Literal["positive", "negative"]
SampleSource = Literal["image", "track", "unknown", "import"]

MAX_NAME_CHARS = 128
# Metadata rides in every MQTT reply and in the database file of every save; 16 KiB is far more than
# a badge number and a few flags need, and small enough that nobody stores photos in it.
MAX_METADATA_BYTES = 16 * 1024
ID_HEX_DIGITS = 16
_QUALITY_FIELDS = ("face_px", "sharpness", "yaw", "pitch")
_KINDS = frozenset(get_args(SampleKind))
_ALIGNED_BY = frozenset(get_args(AlignedBy))
_SOURCES = frozenset(get_args(SampleSource))
# One reusable encoder: json.dumps builds a new encoder per call, which dominated loading 100k persons.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False)


def now_iso() -> str:
    """Current UTC time, millisecond resolution, ISO 8601 (the form every record and reply uses).

    Milliseconds because fleet replication orders edits of one person by ``updated`` (fleet/merge.py);
    second resolution made two edits within one second indistinguishable.
    """
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time of a record (second or millisecond resolution) as an aware datetime."""
    return datetime.fromisoformat(text)


def later_than(previous: str) -> str:
    """Now, or 1 ms after ``previous`` when the clock has not passed it: every change of a record
    gets a strictly newer ``updated``, even within one millisecond or after a clock step back."""
    now = datetime.now(UTC)
    floor = parse_time(previous) + timedelta(milliseconds=1)
    return max(now, floor).astimezone(UTC).isoformat(timespec="milliseconds")


def new_id(taken: set[str] | frozenset[str] = frozenset()) -> str:
    """A random id of ``ID_HEX_DIGITS`` hex digits not in ``taken``.

    64 bits: a fleet of a million persons (or ten million samples) draws a duplicate with odds of
    about 3e-8 (3e-6), where the former 48-bit ids reached 0.2 % at a million. Older 12-digit ids
    stay valid; nothing parses an id's length.
    """
    while True:
        candidate = uuid.uuid4().hex[:ID_HEX_DIGITS]
        if candidate not in taken:
            return candidate


def name_key(name: str) -> str:
    """Names are unique per database ignoring case and surrounding spaces ("Alice" == " alice ")."""
    return name.strip().casefold()


def clean_name(name: object) -> str:
    """Validate a person name; returns it stripped."""
    if not isinstance(name, str) or not name.strip():
        raise CommandError("bad_request", f"name must be a non-empty string, got {name!r}")
    stripped = name.strip()
    if len(stripped) > MAX_NAME_CHARS:
        raise CommandError("bad_request", f"name is {len(stripped)} characters; the limit is {MAX_NAME_CHARS}")
    if any(ord(ch) < 32 for ch in stripped):
        raise CommandError("bad_request", f"name {stripped!r} contains control characters")
    return stripped


def metadata_json(metadata: object) -> str:
    """Validate free-form metadata (a JSON object) and return its canonical JSON text."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise CommandError("bad_request", f"metadata must be a JSON object, got {type(metadata).__name__}")
    try:
        text = _CANONICAL.encode(metadata)
    except (TypeError, ValueError) as exc:
        raise CommandError("bad_request", f"metadata is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise CommandError(
            "too_large", f"metadata is {len(text.encode())} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return text


def unit_rows(vectors: object, dim: int, model_id: str) -> FloatArray:
    """Validate embeddings into an L2-normalised (K, dim) float32 matrix, K >= 1."""
    try:
        rows = np.array(vectors, dtype=np.float32, ndmin=2)
    except (TypeError, ValueError) as exc:
        raise CommandError("bad_request", f"embeddings are not numeric vectors: {exc}") from exc
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] != dim:
        raise CommandError("bad_request", f"expected one or more {dim}-D embeddings ({model_id}), got {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if not np.isfinite(rows).all() or (norms == 0).any():
        raise CommandError("bad_request", "embeddings must be finite, non-zero vectors")
    return np.asarray(rows / norms, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class SampleRecord:
    """One stored embedding. Negative samples are faces known NOT to be this person (false accepts)."""

    id: str
    kind: SampleKind
    created: str
    source: SampleSource
    quality: Quality | None
    has_chip: bool

    def to_json(self) -> dict[str, Any]:
        """The form used in replies and inside the database file."""
        quality: dict[str, Any] | None = None
        if self.quality is not None:
            quality = {key: round(float(getattr(self.quality, key)), 3) for key in _QUALITY_FIELDS}
            if self.quality.aligned_by != "landmarks":  # the usual case stays implicit: older readers, short replies
                quality["aligned_by"] = self.quality.aligned_by
        return {
            "id": self.id,
            "kind": self.kind,
            "created": self.created,
            "source": self.source,
            "quality": quality,
            "has_chip": self.has_chip,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SampleRecord:
        """Inverse of ``to_json``; raises KeyError/TypeError/ValueError on malformed input."""
        kind, source = raw["kind"], raw["source"]
        if kind not in _KINDS or source not in _SOURCES:
            raise ValueError(f"sample {raw['id']!r}: bad kind {kind!r} or source {source!r}")
        q = raw["quality"]
        quality = None
        if q is not None:
            # Databases written before keypoint alignment existed have no "aligned_by": landmarks then.
            aligned_by = q.get("aligned_by", "landmarks")
            if aligned_by not in _ALIGNED_BY:
                raise ValueError(f"sample {raw['id']!r}: bad quality.aligned_by {aligned_by!r}")
            quality = Quality(**{key: float(q[key]) for key in _QUALITY_FIELDS}, aligned_by=aligned_by)
        return cls(
            id=str(raw["id"]),
            kind=cast(SampleKind, kind),
            created=str(raw["created"]),
            source=cast(SampleSource, source),
            quality=quality,
            has_chip=bool(raw["has_chip"]),
        )


def make_samples(
    n: int,
    kind: SampleKind,
    source: SampleSource,
    chips: Sequence[bytes | None] | None,
    qualities: Sequence[Quality | None] | None,
    taken: set[str],
    keep_chips: bool,
) -> tuple[tuple[SampleRecord, ...], dict[str, bytes]]:
    """``n`` new sample records with ids not in ``taken``, and the chips to store by sample id."""
    for what, seq in (("chips", chips), ("qualities", qualities)):
        if seq is not None and len(seq) != n:
            raise CommandError("bad_request", f"{len(seq)} {what} for {n} embeddings")
    ids = []
    for _ in range(n):
        ids.append(new_id(taken))
        taken.add(ids[-1])
    kept = {sid: chip for sid, chip in zip(ids, chips or [None] * n, strict=True) if chip is not None and keep_chips}
    now = now_iso()
    samples = tuple(
        SampleRecord(sid, kind, now, source, q, sid in kept)
        for sid, q in zip(ids, qualities or [None] * n, strict=True)
    )
    return samples, kept


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """An enrolled identity. Metadata is kept as canonical JSON text so the record is truly immutable."""

    id: str
    name: str
    metadata_text: str
    created: str
    updated: str
    samples: tuple[SampleRecord, ...]

    @property
    def metadata(self) -> dict[str, Any]:
        """A fresh copy of the metadata object (mutating it changes nothing stored)."""
        return cast(dict[str, Any], json.loads(self.metadata_text))

    @property
    def positives(self) -> int:
        return sum(1 for s in self.samples if s.kind == "positive")

    @property
    def negatives(self) -> int:
        return len(self.samples) - self.positives

    def sample(self, sample_id: str) -> SampleRecord:
        """The sample with this id; ``not_found`` otherwise."""
        for s in self.samples:
            if s.id == sample_id:
                return s
        raise CommandError("not_found", f"person {self.id} ({self.name}) has no sample {sample_id!r}")

    def changed(self, **fields: Any) -> PersonRecord:
        """A copy with ``fields`` replaced and ``updated`` set to now (strictly after the previous one)."""
        return replace(self, updated=later_than(self.updated), **fields)

    def to_json(self, *, samples: bool = True) -> dict[str, Any]:
        """The form used in replies and inside the database file; ``samples=False`` for compact lists."""
        out = self._json_head()
        out["metadata"] = self.metadata
        if samples:
            out["samples"] = [s.to_json() for s in self.samples]
        return out

    def json_text(self) -> str:
        """``to_json()`` as JSON text, splicing in the stored metadata text instead of re-parsing it
        (a save serialises every person; this halves its cost)."""
        fields = self._json_head()
        fields["samples"] = [s.to_json() for s in self.samples]
        return json.dumps(fields, ensure_ascii=False)[:-1] + ', "metadata": ' + self.metadata_text + "}"

    def _json_head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "updated": self.updated,
            "positives": self.positives,
            "negatives": self.negatives,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PersonRecord:
        """Inverse of ``to_json``; raises KeyError/TypeError/ValueError on malformed input."""
        if not isinstance(raw["metadata"], dict):
            raise ValueError(f"person {raw['id']!r}: metadata is not an object")
        return cls(
            id=str(raw["id"]),
            name=str(raw["name"]),
            metadata_text=_CANONICAL.encode(raw["metadata"]),
            created=str(raw["created"]),
            updated=str(raw["updated"]),
            samples=tuple(SampleRecord.from_json(s) for s in raw["samples"]),
        )
