"""Timing of the matcher and of database saves on synthetic embeddings (called by ``edgeface bench``).

Random unit vectors are fine here: search cost depends on the number of rows, not on what the
vectors mean. Queries are stored vectors plus noise, so each has a clear best person like a real face.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeface.data import FloatArray
from edgeface.matching.db import FaceDatabase
from edgeface.matching.matcher import match
from edgeface.matching.records import PersonRecord, SampleRecord
from edgeface.matching.snapshot import DbSnapshot

DIM = 128  # one network's width (dlib, SFace); the fused default embedder is 256-d
# Query = stored vector + this much Gaussian noise per dimension, then renormalised: about the
# spread between two photos of one person at 128-D (cosine ~0.8 to its source).
_QUERY_NOISE = 0.05
_WARMUP = 5


def _unit(rng: np.random.Generator, n: int, dim: int) -> FloatArray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def synthetic_snapshot(identities: int, samples_per_person: int, dim: int = DIM, seed: int = 0) -> DbSnapshot:
    """A snapshot of ``identities`` persons with random unit embeddings."""
    rng = np.random.default_rng(seed)
    matrix = _unit(rng, identities * samples_per_person, dim)
    people = tuple(
        PersonRecord(
            f"p{i:07d}",
            f"person {i}",
            "{}",
            "",
            "",
            tuple(
                SampleRecord(f"s{i:07d}-{j}", "positive", "", "import", None, False) for j in range(samples_per_person)
            ),
        )
        for i in range(identities)
    )
    return DbSnapshot.build(generation=1, model_id="synthetic", dim=dim, people=people, matrix=matrix)


def bench_match(
    identities: list[int], samples_per_person: int = 1, top_k: int = 5, repeats: int = 200, seed: int = 0
) -> list[dict[str, Any]]:
    """Latency of one single-face top-k query at each database size: p50/p95 in milliseconds."""
    results = []
    rng = np.random.default_rng(seed + 1)
    for n in identities:
        started = time.perf_counter()
        snapshot = synthetic_snapshot(n, samples_per_person, seed=seed)
        build_s = time.perf_counter() - started
        picks = rng.integers(0, snapshot.n_positive, size=repeats + _WARMUP)
        queries = snapshot.matrix[picks] + rng.normal(0, _QUERY_NOISE, (picks.size, DIM)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        timings = []
        for i, query in enumerate(queries):
            t0 = time.perf_counter()
            match(snapshot, query, top_k)
            if i >= _WARMUP:
                timings.append(time.perf_counter() - t0)
        results.append(
            {
                "identities": n,
                "samples_per_person": samples_per_person,
                "rows": n * samples_per_person,
                "top_k": top_k,
                "repeats": repeats,
                "snapshot_build_ms": round(build_s * 1e3, 1),
                **_percentiles(timings),
            }
        )
    return results


def bench_save(
    persons: int = 1000, samples_per_person: int = 1, repeats: int = 10, directory: Path | None = None
) -> dict[str, Any]:
    """Time of one durable save (rename a person) of a database of ``persons``, including fsyncs."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        db = FaceDatabase.open(Path(tmp) / "faces.npz", "synthetic", DIM, backups=5)
        rng = np.random.default_rng(0)
        vectors = _unit(rng, persons * samples_per_person, DIM).reshape(persons, samples_per_person, DIM)
        started = time.perf_counter()
        for i in range(persons):
            db.add_person(f"person {i}", {"badge": i}, vectors[i], source="import")
        enroll_s = time.perf_counter() - started
        person_id = db.list(0, 1)[1][0].id
        timings = []
        for i in range(repeats):
            t0 = time.perf_counter()
            db.rename(person_id, f"renamed {i}")
            timings.append(time.perf_counter() - t0)
        return {
            "persons": persons,
            "samples_per_person": samples_per_person,
            "file_bytes": db.path.stat().st_size,
            "enroll_all_s": round(enroll_s, 2),
            **_percentiles(timings),
        }
