"""``edgeface eval --cache DIR``: each image's largest-face vector, kept between runs of one pipeline.

Encoding LFW's ~8,900 photos takes many minutes on an edge-class CPU; View 1 and View 2 share most of
their photos, and calibration reruns the same encoder many times. The cache file of an encoder is
``DIR/<model id>.npz`` and is only used when its fingerprint matches the encoder's: the model files'
sha256, the vision settings and the source of the code that turns a photo into a vector. Any change
to one of them makes a fresh cache, so a cached figure is always the figure of the current code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeface.data import FloatArray

CACHE_SUFFIX = ".npz"


@dataclass(frozen=True, slots=True)
class CachedImage:
    """What encoding one image produced; ``vector`` None when no face could be described."""

    vector: FloatArray | None
    faces: int
    described: int
    seconds: float
    error: str | None


def source_digest(*files: Path) -> str:
    """sha256 over the contents of these source files (sorted by path)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(parts: dict[str, object]) -> str:
    """A stable sha256 of a JSON-able description of a pipeline."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class EmbeddingCache:
    """The cached images of one encoder; ``save`` writes it back atomically."""

    def __init__(self, directory: Path, model_id: str, key: str) -> None:
        self.path = directory / f"{model_id}{CACHE_SUFFIX}"
        self.key = key
        self.entries: dict[str, CachedImage] = {}
        self.discarded = False  # a cache from another pipeline was found and ignored
        self._dirty = False
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["key"]) != self.key:
                self.discarded = True
                return
            vectors = data["vectors"]
            for i, name in enumerate(data["files"].tolist()):
                row = vectors[i]
                error = str(data["errors"][i])
                self.entries[name] = CachedImage(
                    None if np.isnan(row).any() else row.astype(np.float32),
                    int(data["faces"][i]),
                    int(data["described"][i]),
                    float(data["seconds"][i]),
                    error or None,
                )

    def get(self, image: Path) -> CachedImage | None:
        return self.entries.get(str(image.resolve()))

    def put(self, image: Path, entry: CachedImage) -> None:
        self.entries[str(image.resolve())] = entry
        self._dirty = True

    def save(self) -> None:
        """Write every entry (temp file + rename); a no-op when nothing was added."""
        if not self._dirty or not self.entries:
            return
        names = list(self.entries)
        width = next((e.vector.size for e in self.entries.values() if e.vector is not None), 1)
        vectors = np.full((len(names), width), np.nan, dtype=np.float32)
        for i, name in enumerate(names):
            vector = self.entries[name].vector
            if vector is not None:
                vectors[i] = vector
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp.npz")
        np.savez(
            tmp,
            key=np.array(self.key),
            files=np.array(names),
            vectors=vectors,
            faces=np.array([self.entries[n].faces for n in names]),
            described=np.array([self.entries[n].described for n in names]),
            seconds=np.array([self.entries[n].seconds for n in names]),
            errors=np.array([self.entries[n].error or "" for n in names]),
        )
        tmp.replace(self.path)
        self._dirty = False
