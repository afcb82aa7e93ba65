"""The decision's view of the database: match one fused query, and say which generation is current."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgeface.data import FloatArray, Match
from edgeface.errors import EdgefaceError
from edgeface.matching.matcher import match
from edgeface.matching.snapshot import DbSnapshot

SnapshotProvider = Callable[[], DbSnapshot]
MetadataProvider = Callable[[str], Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class LookupResult:
    """A match, the metadata of its best candidate (empty when none) and the database generation they came from."""

    match: Match
    metadata: Mapping[str, object]
    generation: int


class Lookup(Protocol):
    """The current database, as the decider reaches it."""

    def __call__(self, vector: FloatArray, /) -> LookupResult:
        """Match against one snapshot, so a reload between match and metadata cannot mix databases."""
        ...

    def generation(self) -> int:
        """The current database generation; cheap, asked on every claim of a settled track."""
        ...


class _Person(Protocol):
    @property
    def metadata(self) -> Mapping[str, object]: ...


class Gallery(Protocol):
    """What a lookup reads of the database (``matching.db.FaceDatabase``)."""

    def snapshot(self) -> DbSnapshot: ...

    def get(self, person_id: str) -> _Person: ...


class SnapshotLookup:
    """The decision ``Lookup`` over the database: the provider is asked per match, so a reload lands atomically."""

    def __init__(
        self, snapshot_provider: SnapshotProvider, top_k: int, metadata_provider: MetadataProvider | None = None
    ) -> None:
        self._snapshots = snapshot_provider
        self._top_k = top_k
        self._metadata = metadata_provider

    @classmethod
    def over(cls, gallery: Gallery, top_k: int) -> SnapshotLookup:
        """Each match reads the database's current snapshot, and a grant reads the person's metadata then."""
        return cls(gallery.snapshot, top_k, lambda person_id: gallery.get(person_id).metadata)

    def __call__(self, vector: FloatArray, /) -> LookupResult:
        """Top-k match on the current snapshot, the best candidate's metadata and the snapshot's generation."""
        snapshot = self._snapshots()
        result = match(snapshot, vector[np.newaxis, :], self._top_k)[0]
        best = result.best
        if best is None or self._metadata is None:
            return LookupResult(result, {}, snapshot.generation)
        try:
            return LookupResult(result, self._metadata(best.person_id), snapshot.generation)
        except EdgefaceError:
            # Deleted between the snapshot and now: no metadata, so no grant.
            return LookupResult(result, {}, snapshot.generation)

    def generation(self) -> int:
        """The current snapshot's generation (the database builds a snapshot once per generation)."""
        return self._snapshots().generation
