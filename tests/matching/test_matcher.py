"""Top-k matching: exactness against brute force, per-person best sample, negatives, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeface.matching.db import FaceDatabase
from edgeface.matching.matcher import match
from edgeface.matching.records import PersonRecord, SampleRecord
from edgeface.matching.snapshot import DbSnapshot
from edgeface.tools.bench_match import bench_match

DIM = 16


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def snapshot_of(counts: list[tuple[int, int]], rng: np.random.Generator) -> tuple[DbSnapshot, np.ndarray]:
    """A snapshot with (positives, negatives) samples per person; returns it and its row matrix."""
    people = []
    for i, (pos, neg) in enumerate(counts):
        samples = [SampleRecord(f"s{i}-{j}", "positive", "", "import", None, False) for j in range(pos)]
        samples += [SampleRecord(f"n{i}-{j}", "negative", "", "track", None, False) for j in range(neg)]
        people.append(PersonRecord(f"p{i}", f"name{i}", "{}", "", "", tuple(samples)))
    rows = unit(rng, sum(p + n for p, n in counts))
    return DbSnapshot.build(generation=1, model_id="m", dim=DIM, people=tuple(people), matrix=rows), rows


def brute_force(counts: list[tuple[int, int]], rows: np.ndarray, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    scores, best, offset = rows @ query, [], 0
    for i, (pos, neg) in enumerate(counts):
        best.append((f"p{i}", float(scores[offset : offset + pos].max())))
        offset += pos + neg
    return sorted(best, key=lambda b: -b[1])[:k]


@pytest.mark.parametrize("persons", [1, 3, 10, 500, 3000])
@pytest.mark.parametrize("top_k", [1, 5, 50])
def test_top_k_equals_brute_force(persons: int, top_k: int) -> None:
    rng = np.random.default_rng(persons * 100 + top_k)
    counts = [(int(rng.integers(1, 6)), int(rng.integers(0, 2))) for _ in range(persons)]
    snap, rows = snapshot_of(counts, rng)
    queries = unit(rng, 20)
    # queries close to stored samples, as real faces are, plus random ones
    queries[:10] = rows[rng.integers(0, rows.shape[0], 10)] + 0.1 * unit(rng, 10)
    for query, result in zip(queries, match(snap, queries, top_k), strict=True):
        expected = brute_force(counts, rows, query / np.linalg.norm(query), top_k)
        assert [c.person_id for c in result.candidates] == [e[0] for e in expected]
        np.testing.assert_allclose([c.similarity for c in result.candidates], [e[1] for e in expected], atol=1e-5)
        assert result.candidates[0].name == "name" + result.candidates[0].person_id[1:]


def test_best_sample_per_person_and_margin() -> None:
    rng = np.random.default_rng(0)
    snap, rows = snapshot_of([(3, 0), (1, 0)], rng)
    result = match(snap, rows[1], 2)[0]  # person 0's second sample
    assert result.best is not None and result.best.person_id == "p0"
    assert result.best.similarity == pytest.approx(1.0, abs=1e-6)
    assert result.margin == pytest.approx(1.0 - float(rows[3] @ rows[1]), abs=1e-5)
    assert match(snap, rows[1], 1)[0].margin == 1.0


def test_negative_samples_set_negative_similarity(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    alice, bob, stranger = unit(rng, 3)
    db = FaceDatabase.open(tmp_path / "faces.npz", "m", DIM)
    a = db.add_person("Alice", None, alice[None])
    db.add_person("Bob", None, bob[None])
    near_alice = alice + 0.3 * stranger
    near_alice /= np.linalg.norm(near_alice)
    before = match(db.snapshot(), near_alice, 2)[0]
    assert before.best is not None and before.best.name == "Alice" and before.negative_similarity == -1.0
    # the stranger was once wrongly accepted as Alice: store them as her negative sample
    db.add_negative(a.id, near_alice)
    after = match(db.snapshot(), near_alice, 2)[0]
    assert after.best is not None and after.best.name == "Alice"
    assert after.negative_similarity == pytest.approx(1.0, abs=1e-5)
    assert after.negative_similarity > after.best.similarity
    # Bob's matches are unaffected by Alice's negatives
    assert match(db.snapshot(), bob, 1)[0].negative_similarity == -1.0


def test_empty_database_and_bad_queries() -> None:
    rng = np.random.default_rng(2)
    empty = DbSnapshot.build(generation=0, model_id="m", dim=DIM, people=(), matrix=np.zeros((0, DIM), np.float32))
    results = match(empty, unit(rng, 3), 5)
    assert len(results) == 3 and all(r.candidates == () and r.best is None and r.margin == 0.0 for r in results)
    snap, rows = snapshot_of([(1, 0)], rng)
    assert len(match(snap, rows[0], 3)[0].candidates) == 1  # 1-D query, k larger than the database
    with pytest.raises(ValueError, match=r"\(M, 16\)"):
        match(snap, np.zeros((1, DIM + 1), np.float32), 1)
    with pytest.raises(ValueError, match="top_k"):
        match(snap, rows[0], 0)


def test_snapshot_layout() -> None:
    snap, _ = snapshot_of([(2, 1), (1, 0), (1, 2)], np.random.default_rng(3))
    assert snap.n_positive == 4 and snap.positive.tolist() == [True] * 4 + [False] * 3
    assert snap.row_person.tolist() == [0, 0, 1, 2, 0, 2, 2]
    assert snap.group_starts.tolist() == [0, 2, 3]
    assert snap.matrix.T.flags.c_contiguous
    with pytest.raises(ValueError, match="positive"):
        DbSnapshot.build(
            generation=1,
            model_id="m",
            dim=DIM,
            people=(PersonRecord("p", "n", "{}", "", "", (SampleRecord("s", "negative", "", "track", None, False),)),),
            matrix=unit(np.random.default_rng(0), 1),
        )


def test_bench_match_reports_percentiles() -> None:
    rows = bench_match([100, 1000], samples_per_person=2, top_k=3, repeats=20)
    assert [r["identities"] for r in rows] == [100, 1000]
    assert all(0 < r["p50_ms"] <= r["p95_ms"] for r in rows)
