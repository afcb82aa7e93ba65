"""Unknowns spool: clustering, ring of recent samples, TTL, eviction, ignore/take, persistence, threads.

Mechanics use random unit vectors; the clustering of real faces is checked with the real analyzer
on real photos at the end.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeface.errors import CommandError
from edgeface.matching.unknowns import SPOOL_FILE, UnknownSpool

DIM = 16


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    out = v + noise * unit(1, seed)[0]
    return out / np.linalg.norm(out)


def spool(directory: Path, **overrides: object) -> UnknownSpool:
    options: dict[str, object] = {
        "ttl_s": 100.0,
        "max_clusters": 5,
        "samples_per_cluster": 3,
        "threshold": 0.8,
        "keep_snapshots": True,
    }
    options.update(overrides)
    return UnknownSpool(directory, **options)  # type: ignore[arg-type]


def test_similar_sightings_join_and_others_start_clusters(tmp_path: Path) -> None:
    s = spool(tmp_path)
    a, b = unit(2, 1)
    first = s.observe(a, now=1000.0)
    assert first.is_new and first.unknown_id.startswith("u-") and len(first.unknown_id) == 10
    assert first.similarity == -1.0 and first.sightings == 1 and not first.ignored
    again = s.observe(near(a, 2), now=1001.0)
    assert not again.is_new and again.unknown_id == first.unknown_id
    assert again.similarity > 0.9 and again.sightings == 2
    other = s.observe(b, now=1002.0)
    assert other.is_new and other.unknown_id != first.unknown_id and other.similarity < 0.8
    assert [c.id for c in s.list()] == [other.unknown_id, first.unknown_id]  # most recent first
    view = s.get(first.unknown_id)
    assert (view.sightings, view.samples, view.first_seen, view.last_seen) == (2, 2, 1000.0, 1001.0)
    assert view.expires == 1101.0
    assert json.loads(json.dumps(view.to_json()))["last_seen"].startswith("1970-01-01T00:16:41")


def test_a_cluster_keeps_its_most_recent_samples(tmp_path: Path) -> None:
    s = spool(tmp_path, threshold=0.5)
    base = unit(1, 1)[0]
    seen = [near(base, seed, 0.1) for seed in range(10, 15)]
    ids = {s.observe(v, now=1000.0 + i).unknown_id for i, v in enumerate(seen)}
    assert len(ids) == 1
    (uid,) = ids
    kept = s.samples(uid)
    np.testing.assert_allclose(kept, np.array(seen[-3:]), rtol=1e-5)  # oldest first
    assert s.get(uid).sightings == 5 and s.get(uid).samples == 3


def test_ttl_expiry(tmp_path: Path) -> None:
    s = spool(tmp_path)
    a, b = unit(2, 1)
    old = s.observe(a, now=1000.0, snapshot_jpeg=b"jpeg-a").unknown_id
    s.observe(b, now=1050.0)
    assert (tmp_path / f"{old}.jpg").exists()
    assert s.expire(now=1100.0) == 0  # exactly at the TTL it is still live
    assert s.expire(now=1100.5) == 1
    assert not (tmp_path / f"{old}.jpg").exists()
    with pytest.raises(CommandError) as err:
        s.get(old)
    assert err.value.code == "not_found"
    # a sighting after the TTL starts afresh instead of reviving the expired cluster
    assert s.observe(a, now=1200.0).is_new


def test_the_least_recently_seen_cluster_is_evicted(tmp_path: Path) -> None:
    s = spool(tmp_path, max_clusters=2)
    a, b, c = unit(3, 1)
    ida = s.observe(a, now=1.0).unknown_id
    idb = s.observe(b, now=2.0).unknown_id
    s.observe(near(a, 5), now=3.0)  # a is now the most recently seen
    sighting = s.observe(c, now=4.0)
    assert sighting.is_new and sighting.evicted == idb
    assert {x.id for x in s.list()} == {ida, sighting.unknown_id}


def test_ignore_and_take(tmp_path: Path) -> None:
    s = spool(tmp_path)
    a, b = unit(2, 1)
    ida = s.observe(a, now=1.0, snapshot_jpeg=b"jpeg").unknown_id
    idb = s.observe(b, now=1.0).unknown_id
    assert s.ignore(ida).ignored
    assert s.observe(near(a, 3), now=2.0).ignored
    assert s.snapshot(ida) == b"jpeg" and s.snapshot(idb) is None
    vectors = s.take(ida)
    assert vectors.shape == (2, DIM)
    assert not (tmp_path / f"{ida}.jpg").exists()
    for call in (s.get, s.take, s.ignore, s.samples, s.snapshot):
        with pytest.raises(CommandError) as err:
            call(ida)
        assert err.value.code == "not_found"


def test_snapshots_only_when_enabled(tmp_path: Path) -> None:
    s = spool(tmp_path, keep_snapshots=False)
    uid = s.observe(unit(1, 1)[0], now=1.0, snapshot_jpeg=b"jpeg").unknown_id
    assert s.snapshot(uid) is None and not list(tmp_path.glob("*.jpg"))


def test_restart_keeps_pending_unknowns(tmp_path: Path) -> None:
    s = spool(tmp_path)
    a, b = unit(2, 1)
    ida = s.observe(a, now=1.0, snapshot_jpeg=b"jpeg").unknown_id
    s.observe(near(a, 2), now=2.0)
    idb = s.observe(b, now=3.0).unknown_id
    s.ignore(idb)
    s.observe(near(a, 4), now=3.5)  # a sample update within PERSIST_INTERVAL_S: written by flush
    s.flush()
    (tmp_path / "u-deadbeef.jpg").write_bytes(b"orphan of a crash")

    restarted = spool(tmp_path)
    assert {c.id for c in restarted.list()} == {ida, idb}
    assert restarted.get(idb).ignored and restarted.get(ida).sightings == 3
    np.testing.assert_allclose(restarted.samples(ida), s.samples(ida), rtol=1e-6)
    assert restarted.snapshot(ida) == b"jpeg"
    assert not (tmp_path / "u-deadbeef.jpg").exists()
    joined = restarted.observe(near(a, 9), now=4.0)
    assert joined.unknown_id == ida and not joined.is_new

    smaller = spool(tmp_path, samples_per_cluster=1, max_clusters=1)
    assert len(smaller.list()) == 1 and smaller.get(smaller.list()[0].id).samples == 1


def test_damaged_or_foreign_spool_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = spool(tmp_path, model_id="model_a")
    s.observe(unit(1, 1)[0], now=1.0)
    with caplog.at_level(logging.WARNING):
        assert spool(tmp_path, model_id="model_b").list() == []
    assert "model_a" in caplog.text
    (tmp_path / SPOOL_FILE).write_bytes(b"garbage")
    assert spool(tmp_path, model_id="model_a").list() == []


def test_wrong_dimension_is_refused(tmp_path: Path) -> None:
    s = spool(tmp_path)
    s.observe(unit(1, 1)[0], now=1.0)
    with pytest.raises(ValueError, match="dimensions"):
        s.observe(np.ones(DIM + 1, np.float32), now=2.0)


def test_concurrent_observe_and_take(tmp_path: Path) -> None:
    s = spool(tmp_path, max_clusters=50, threshold=0.95)
    vectors = unit(400, 7)
    errors: list[BaseException] = []
    stop = threading.Event()

    def taker() -> None:
        while not stop.is_set():
            for cluster in s.list():
                try:
                    s.take(cluster.id)
                except CommandError:
                    pass  # evicted or taken between list() and take(): expected under contention
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

    thread = threading.Thread(target=taker, name="test-taker")
    thread.start()
    try:
        for i, v in enumerate(vectors):
            s.observe(v, now=float(i))
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert len(s.list()) <= 50


def test_real_faces_cluster_by_person(tmp_path: Path, live_analyzer, face_image) -> None:  # type: ignore[no-untyped-def]
    """Two photos of Obama are one unknown; Biden is another (threshold: the model's match threshold)."""
    threshold = live_analyzer.embedder.default_threshold
    s = spool(tmp_path, threshold=threshold, samples_per_cluster=5)

    def embed(name: str) -> np.ndarray:
        (face,) = live_analyzer.analyze(face_image(name))
        return face.embedding.vector

    obama = s.observe(embed("obama.jpg"), now=10.0)
    obama2 = s.observe(embed("obama2.jpg"), now=11.0)
    biden = s.observe(embed("biden.jpg"), now=12.0)
    obama3 = s.observe(embed("obama3.jpg"), now=13.0)
    assert obama.is_new and not obama2.is_new and obama2.unknown_id == obama.unknown_id
    # Clear of the threshold on both sides (dlib: above 0.95 and below 0.85 with its 0.924).
    assert obama2.similarity > threshold + 0.025
    assert biden.is_new and biden.unknown_id != obama.unknown_id and biden.similarity < threshold - 0.07
    assert obama3.unknown_id == obama.unknown_id
    assert s.get(obama.unknown_id).samples == 3 and s.get(biden.unknown_id).samples == 1


def test_a_failing_disk_degrades_to_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = spool(tmp_path)
    (tmp_path / SPOOL_FILE).mkdir()  # the spool file cannot be replaced: as if the card went read-only
    with caplog.at_level(logging.WARNING):
        sighting = s.observe(unit(1, 1)[0], now=1.0, snapshot_jpeg=b"jpeg")
    assert sighting.is_new and s.get(sighting.unknown_id).sightings == 1
    assert "cannot persist the unknowns spool" in caplog.text
