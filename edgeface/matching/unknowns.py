"""The unknowns spool: strangers seen recently, clustered so one visitor is one ``unknown_id``.

A sighting joins the live cluster holding the most similar stored sample (best-sample rather than
centroid similarity: someone walking up to a camera changes size and pose gradually, and the latest
samples follow them where a centroid would lag), if that similarity reaches ``threshold``; else it
starts a new cluster. Each cluster keeps its ``samples_per_cluster`` MOST RECENT embeddings (a ring
buffer): recent views are the ones closest to the camera and they keep the cluster tracking the face.

Bounded: clusters expire ``ttl_s`` after their last sighting, and when ``max_clusters`` are live the
least recently seen one is evicted. Persisted to ``<dir>/unknowns.npz`` (atomic) so a restart keeps
pending unknowns; new, ignored, taken and expired clusters are written at once, sample updates of
known clusters at most every ``PERSIST_INTERVAL_S`` (and on ``flush``) to spare SD cards.
Thread-safe: the pipeline thread observes while the MQTT thread confirms or ignores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeface.config import UnknownsConfig
from edgeface.data import FloatArray
from edgeface.errors import CommandError
from edgeface.matching.atomic import write_atomic, write_bytes_atomic

_LOGGER = logging.getLogger(__name__)

SPOOL_FILE = "unknowns.npz"
# Sample updates are not worth an fsync per frame; losing 5 s of them in a crash only means a
# cluster restarts with slightly older samples.
PERSIST_INTERVAL_S = 5.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class UnknownSighting:
    """What ``observe`` did: the cluster joined or created, and the one evicted to make room."""

    unknown_id: str
    is_new: bool
    ignored: bool
    similarity: float  # to the joined cluster; for a new one the best (too low) score, -1 if none existed
    sightings: int
    evicted: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownCluster:
    """A read-only view of one cluster (times are wall-clock seconds)."""

    id: str
    first_seen: float
    last_seen: float
    expires: float
    sightings: int
    samples: int
    ignored: bool
    has_snapshot: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "unknown_id": self.id,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "expires": _iso(self.expires),
            "sightings": self.sightings,
            "samples": self.samples,
            "ignored": self.ignored,
            "has_snapshot": self.has_snapshot,
        }


@dataclass(slots=True)
class _Meta:
    slot: int
    first_seen: float
    sightings: int = 0
    ignored: bool = False
    has_snapshot: bool = False


class UnknownSpool:
    """Clusters of unknown faces with TTL, eviction and persistence."""

    def __init__(
        self,
        directory: Path,
        ttl_s: float,
        max_clusters: int,
        samples_per_cluster: int,
        threshold: float,
        keep_snapshots: bool,
        *,
        model_id: str | None = None,
    ) -> None:
        self.directory = directory
        self.ttl_s = ttl_s
        self.max_clusters = max_clusters
        self.samples_per_cluster = samples_per_cluster
        self.threshold = threshold
        self.keep_snapshots = keep_snapshots
        self.model_id = model_id
        self._lock = threading.Lock()
        self._meta: dict[str, _Meta] = {}
        # Slot storage: one ring buffer of samples per cluster, grown by doubling; scoring all slots
        # at once is one matrix product (max_clusters x samples_per_cluster rows).
        self._dim = 0
        self._vectors: FloatArray = np.zeros((0, samples_per_cluster, 0), np.float32)
        self._counts: npt.NDArray[np.int64] = np.zeros(0, np.int64)
        self._last_seen: npt.NDArray[np.float64] = np.zeros(0, np.float64)
        self._free: list[int] = []
        self._dirty = False
        self._saved_at = float("-inf")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._load()

    # --- public API ---------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, directory: Path, config: UnknownsConfig, match_threshold: float, model_id: str, *, keep_snapshots: bool
    ) -> UnknownSpool:
        """The spool as configured; sightings cluster at ``cluster_threshold``, else the match threshold."""
        threshold = config.cluster_threshold if config.cluster_threshold is not None else match_threshold
        return cls(
            directory,
            ttl_s=config.ttl_s,
            max_clusters=config.max_clusters,
            samples_per_cluster=config.samples_per_cluster,
            threshold=threshold,
            keep_snapshots=keep_snapshots,
            model_id=model_id,
        )

    def observe(self, vector: FloatArray, now: float, snapshot_jpeg: bytes | None = None) -> UnknownSighting:
        """Add one unknown embedding seen at wall time ``now``."""
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        with self._lock:
            if self._dim and v.shape[0] != self._dim:
                raise ValueError(f"embedding has {v.shape[0]} dimensions, the spool holds {self._dim}")
            urgent = self._expire_locked(now) > 0
            best_id, best = self._nearest(v)
            evicted = None
            if best_id is not None and best >= self.threshold:
                meta, is_new = self._meta[best_id], False
            else:
                evicted = self._evict_for_new()
                best_id, meta = self._create(v.shape[0], now)
                is_new = urgent = True
            self._append(meta, v, now)
            if snapshot_jpeg is not None and self.keep_snapshots:
                meta.has_snapshot = self._write_snapshot(best_id, snapshot_jpeg) or meta.has_snapshot
            self._dirty = True
            if urgent or evicted or now - self._saved_at >= PERSIST_INTERVAL_S:
                self._save(now)
            return UnknownSighting(best_id, is_new, meta.ignored, best, meta.sightings, evicted)

    def get(self, unknown_id: str) -> UnknownCluster:
        """The cluster's summary; ``not_found`` when unknown or expired."""
        with self._lock:
            return self._view(unknown_id, self._require(unknown_id))

    def list(self) -> list[UnknownCluster]:
        """All clusters, most recently seen first."""
        with self._lock:
            views = [self._view(uid, meta) for uid, meta in self._meta.items()]
        return sorted(views, key=lambda c: c.last_seen, reverse=True)

    def samples(self, unknown_id: str) -> FloatArray:
        """The cluster's kept embeddings (K, D), oldest first, without removing it."""
        with self._lock:
            return self._ordered(self._require(unknown_id))

    def snapshot(self, unknown_id: str) -> bytes | None:
        """The cluster's JPEG crop, None when none is kept."""
        with self._lock:
            meta = self._require(unknown_id)
            if not meta.has_snapshot:
                return None
            try:
                return self._snapshot_path(unknown_id).read_bytes()
            except FileNotFoundError:
                return None

    def take(self, unknown_id: str) -> FloatArray:
        """Remove the cluster (e.g. after it was enrolled) and return its embeddings (K, D)."""
        with self._lock:
            vectors = self._ordered(self._require(unknown_id))
            self._drop(unknown_id)
            self._save(None)
            return vectors

    def ignore(self, unknown_id: str) -> UnknownCluster:
        """Keep the cluster but mark its sightings ignored until it expires."""
        with self._lock:
            meta = self._require(unknown_id)
            meta.ignored = True
            self._save(None)
            return self._view(unknown_id, meta)

    def expire(self, now: float) -> int:
        """Drop clusters unseen for ``ttl_s``; returns how many."""
        with self._lock:
            removed = self._expire_locked(now)
            if removed:
                self._save(now)
            return removed

    def flush(self) -> None:
        """Persist pending sample updates (call at shutdown)."""
        with self._lock:
            if self._dirty:
                self._save(None)

    # --- clustering internals -----------------------------------------------------------------

    def _require(self, unknown_id: str) -> _Meta:
        meta = self._meta.get(unknown_id)
        if meta is None:
            raise CommandError("not_found", f"no pending unknown {unknown_id!r} (it may have expired)")
        return meta

    def _view(self, unknown_id: str, meta: _Meta) -> UnknownCluster:
        last = float(self._last_seen[meta.slot])
        count = int(min(self._counts[meta.slot], self.samples_per_cluster))
        return UnknownCluster(
            unknown_id, meta.first_seen, last, last + self.ttl_s, meta.sightings, count, meta.ignored, meta.has_snapshot
        )

    def _nearest(self, v: FloatArray) -> tuple[str | None, float]:
        if not self._meta:
            return None, -1.0
        slots = np.fromiter((m.slot for m in self._meta.values()), np.int64, len(self._meta))
        scores = self._vectors[slots] @ v  # (clusters, samples_per_cluster)
        valid = np.arange(self.samples_per_cluster) < self._counts[slots, np.newaxis]
        best_per_cluster = np.where(valid, scores, -np.inf).max(axis=1)
        i = int(np.argmax(best_per_cluster))
        return list(self._meta)[i], float(best_per_cluster[i])

    def _evict_for_new(self) -> str | None:
        if len(self._meta) < self.max_clusters:
            return None
        oldest = min(self._meta, key=lambda uid: self._last_seen[self._meta[uid].slot])
        self._drop(oldest)
        _LOGGER.info("unknowns spool full (%d clusters); evicted %s", self.max_clusters, oldest)
        return oldest

    def _create(self, dim: int, now: float, unknown_id: str | None = None) -> tuple[str, _Meta]:
        if not self._free:
            self._grow(dim)
        slot = self._free.pop()
        self._counts[slot] = 0
        self._last_seen[slot] = now
        while unknown_id is None or unknown_id in self._meta:
            unknown_id = f"u-{secrets.token_hex(4)}"
        meta = self._meta[unknown_id] = _Meta(slot=slot, first_seen=now)
        return unknown_id, meta

    def _grow(self, dim: int) -> None:
        old = self._vectors.shape[0]
        # Eviction keeps live clusters <= max_clusters, so capacity never needs to pass it.
        new = min(max(8, old * 2), self.max_clusters)
        self._dim = dim
        vectors = np.zeros((new, self.samples_per_cluster, dim), np.float32)
        if old:
            vectors[:old] = self._vectors
        self._vectors = vectors
        self._counts = np.concatenate([self._counts, np.zeros(new - old, np.int64)])
        self._last_seen = np.concatenate([self._last_seen, np.zeros(new - old, np.float64)])
        self._free.extend(range(new - 1, old - 1, -1))

    def _append(self, meta: _Meta, v: FloatArray, now: float) -> None:
        # _counts counts samples ever added; the ring position is that count modulo the capacity.
        self._vectors[meta.slot, self._counts[meta.slot] % self.samples_per_cluster] = v
        self._counts[meta.slot] += 1
        self._last_seen[meta.slot] = max(now, self._last_seen[meta.slot])
        meta.sightings += 1

    def _ordered(self, meta: _Meta) -> FloatArray:
        n, cap = int(self._counts[meta.slot]), self.samples_per_cluster
        order = (np.arange(max(0, n - cap), n)) % cap
        return np.array(self._vectors[meta.slot, order], dtype=np.float32)

    def _drop(self, unknown_id: str) -> None:
        meta = self._meta.pop(unknown_id)
        self._free.append(meta.slot)
        if meta.has_snapshot:
            self._snapshot_path(unknown_id).unlink(missing_ok=True)

    def _expire_locked(self, now: float) -> int:
        stale = [uid for uid, m in self._meta.items() if self._last_seen[m.slot] + self.ttl_s < now]
        for uid in stale:
            self._drop(uid)
        return len(stale)

    # --- persistence --------------------------------------------------------------------------

    def _snapshot_path(self, unknown_id: str) -> Path:
        return self.directory / f"{unknown_id}.jpg"

    def _write_snapshot(self, unknown_id: str, jpeg: bytes) -> bool:
        try:
            write_bytes_atomic(self._snapshot_path(unknown_id), jpeg)
        except OSError as exc:
            _LOGGER.warning("cannot store the snapshot of %s in %s: %s", unknown_id, self.directory, exc)
            return False
        return True

    def _save(self, now: float | None) -> None:
        """Persist the spool. A failure (disk full, read-only card) is logged and retried on the next
        change: unknowns are a convenience, so recognition must not stop over them."""
        ids = list(self._meta)
        ordered = [self._ordered(self._meta[uid]) for uid in ids]
        meta = [
            {
                "id": uid,
                "first_seen": m.first_seen,
                "last_seen": float(self._last_seen[m.slot]),
                "sightings": m.sightings,
                "ignored": m.ignored,
                "has_snapshot": m.has_snapshot,
                "samples": int(v.shape[0]),
            }
            for uid, m, v in zip(ids, self._meta.values(), ordered, strict=True)
        ]
        header = json.dumps({"model_id": self.model_id, "dim": self._dim, "clusters": meta})
        vectors = np.concatenate(ordered) if ordered else np.zeros((0, self._dim), np.float32)
        try:
            write_atomic(
                self.directory / SPOOL_FILE,
                lambda fh: np.savez(fh, vectors=vectors, header=np.frombuffer(header.encode(), np.uint8)),
            )
        except OSError as exc:
            _LOGGER.warning("cannot persist the unknowns spool in %s: %s", self.directory, exc)
            return
        self._dirty = False
        if now is not None:
            self._saved_at = now

    def _load(self) -> None:
        path = self.directory / SPOOL_FILE
        try:
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
                vectors = npz["vectors"]
                header = json.loads(npz["header"].tobytes().decode())
            clusters, dim = header["clusters"], int(header["dim"])
            if header["model_id"] != self.model_id and self.model_id is not None:
                raise ValueError(f"written for model {header['model_id']}, now {self.model_id}")
            if sum(int(c["samples"]) for c in clusters) != vectors.shape[0]:
                raise ValueError("sample counts do not match the stored vectors")
        except FileNotFoundError:
            clusters, dim, vectors = [], 0, np.zeros((0, 0), np.float32)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            _LOGGER.warning("unknowns spool %s discarded (%s); starting empty", path, exc)
            clusters, dim, vectors = [], 0, np.zeros((0, 0), np.float32)
        offset = 0
        for c in clusters:
            n = int(c["samples"])
            keep = vectors[offset + max(0, n - self.samples_per_cluster) : offset + n]
            offset += n
            if len(self._meta) >= self.max_clusters or keep.shape[0] == 0:
                continue
            _, meta = self._create(dim, float(c["first_seen"]), str(c["id"]))
            meta.ignored, meta.has_snapshot = bool(c["ignored"]), bool(c["has_snapshot"])
            for v in keep:
                self._append(meta, v, float(c["last_seen"]))
            meta.sightings = int(c["sightings"])
        known = {f"{uid}.jpg" for uid, m in self._meta.items() if m.has_snapshot}
        for orphan in self.directory.glob("u-*.jpg"):
            if orphan.name not in known:
                with contextlib.suppress(FileNotFoundError):
                    orphan.unlink()
