"""The threaded pipeline end to end on real photos, the real models and a real FaceDatabase."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeface.config import DecisionConfig, PipelineConfig, SourceConfig, TrackerConfig, VisionConfig
from edgeface.data import Decision, FloatArray, ImageArray
from edgeface.matching.db import FaceDatabase
from edgeface.matching.unknowns import UnknownSpool
from edgeface.pipeline.lookup import SnapshotLookup
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.settings import EventSink, PipelineSettings
from edgeface.pipeline.stages import Pipeline, PipelineParts
from edgeface.sources import FolderSource, FrameSource, open_source
from edgeface.vision.analyzer import FaceAnalyzer
from tests.conftest import replay_folder

STAGES = ["capture:replay", "detect", "track", "embed", "decide", "spool"]


class Vision(FaceAnalyzer):
    def embed_photo(self, image: ImageArray) -> FloatArray:
        """The embedding of the largest face of a photo, as enrollment computes it."""
        faces = self.analyze(image)
        assert faces
        return faces[0].embedding.vector


@pytest.fixture(scope="module")
def vision() -> Iterator[Vision]:
    with Vision.from_config(VisionConfig()) as analyzer:
        assert isinstance(analyzer, Vision)
        yield analyzer


@pytest.fixture
def database(tmp_path: Path, vision: Vision) -> FaceDatabase:
    e = vision.embedder
    return FaceDatabase.open(tmp_path / "faces.npz", e.model_id, e.dim)


class Recorder:
    """The pipeline's event sink in these tests: collects what it reports, from its threads."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.presences: list[tuple[str, str, bool]] = []
        self.states: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def decision(self, decision: Decision) -> None:
        with self.lock:
            self.decisions.append(decision)

    def presence(self, change: PresenceChange) -> None:
        with self.lock:
            self.presences.append((change.person_id, change.name, change.on))

    def source_state(self, state: str, detail: str) -> None:
        with self.lock:
            self.states.append((state, detail))


def build(
    source: FrameSource,
    vision: Vision,
    database: FaceDatabase,
    recorder: Recorder,
    *,
    source_config: SourceConfig,
    decision: DecisionConfig | None = None,
    spool: UnknownSpool | None = None,
    sink: EventSink | None = None,
) -> Pipeline:
    dec = decision or DecisionConfig(votes=3, embed_interval_s=0.1)
    settings = PipelineSettings.of(
        vision.embedder,
        source=source_config,
        decision=dec,
        tracker=TrackerConfig(),
        pipeline=PipelineConfig(queue_size=2),
    )
    lookup = SnapshotLookup.over(database, dec.top_k)
    return Pipeline(source, vision, lookup, settings, sink or recorder, PipelineParts(spool=spool))


def test_recognises_an_enrolled_person_and_spools_a_stranger(
    tmp_path: Path, samples_dir: Path, face_image: Callable[[str], ImageArray], vision: Vision, database: FaceDatabase
) -> None:
    obama = database.add_person("Barack Obama", {"access": True}, [vision.embed_photo(face_image("obama.jpg"))])
    spool = UnknownSpool(
        tmp_path / "unknowns",
        ttl_s=3600,
        max_clusters=10,
        samples_per_cluster=5,
        threshold=vision.embedder.default_threshold,
        keep_snapshots=False,
    )
    source = FolderSource(replay_folder(tmp_path, samples_dir, "obama2.jpg", "biden.jpg"), hold_frames=12, fps=10)
    recorder = Recorder()
    pipeline = build(
        source, vision, database, recorder, source_config=SourceConfig(realtime=False, loop=False), spool=spool
    )
    pipeline.start()
    try:
        assert sorted(t.name for t in pipeline.threads) == sorted(STAGES)
        assert all(not t.daemon for t in pipeline.threads)
        # A finite replay drains and stops the pipeline by itself.
        assert pipeline.drained.wait(60), pipeline.metrics()
        assert pipeline.stop_event.is_set()
    finally:
        pipeline.stop()
        assert pipeline.join(2.0) == []
    decisions = recorder.decisions
    assert [(d.status, d.person_id) for d in decisions] == [("known", obama.id), ("unknown", None)]
    known, stranger = decisions
    assert known.name == "Barack Obama" and known.reason == "matched" and known.grant is True
    assert known.similarity >= known.threshold == pytest.approx(vision.embedder.default_threshold)
    assert known.samples == 3
    assert {"detect", "landmarks", "track", "embed", "decide", "total"} <= set(known.stage_ms)
    assert stranger.reason == "below_threshold" and stranger.unknown_id is not None
    assert spool.get(stranger.unknown_id).sightings == 1
    assert stranger.frame_index > known.frame_index and stranger.track_id != known.track_id
    # Presence: on with the recognition, off when the replay ended.
    assert recorder.presences == [(obama.id, "Barack Obama", True), (obama.id, "Barack Obama", False)]
    assert recorder.states[0][0] == "streaming" and recorder.states[-1][0] == "ended"
    # The samples of both tracks are kept for 'enroll {track_id}' / 'reject {track_id}'.
    samples = pipeline.samples.get(stranger.track_id)
    assert (
        samples
        and samples[0][0].shape == (vision.embedder.dim,)
        and samples[0][1].shape[:2] == (vision.aligner.size,) * 2
    )
    m = pipeline.metrics()
    assert m["frames"] == 24 and m["processed"] == 24  # not paced in real time: lossless, every frame
    assert sum(m["drops"].values()) == 0
    assert m["decisions"] == 2 and m["faces"] >= 24
    assert set(m["stages"]) == {"capture", "detect", "track", "embed", "decide", "spool"}


def test_empty_database_makes_everyone_unknown(
    tmp_path: Path, samples_dir: Path, vision: Vision, database: FaceDatabase
) -> None:
    source = FolderSource(replay_folder(tmp_path, samples_dir, "obama.jpg"), hold_frames=6, fps=10)
    recorder = Recorder()
    pipeline = build(source, vision, database, recorder, source_config=SourceConfig(realtime=False, loop=False))
    pipeline.start()
    assert pipeline.drained.wait(60)
    assert pipeline.join(2.0) == []
    assert [(d.status, d.reason) for d in recorder.decisions] == [("unknown", "empty_database")]


def test_a_slow_consumer_drops_frames_but_never_grows_a_queue(
    tmp_path: Path, samples_dir: Path, face_image: Callable[[str], ImageArray], vision: Vision, database: FaceDatabase
) -> None:
    database.add_person("Barack Obama", None, [vision.embed_photo(face_image("obama.jpg"))])
    folder = replay_folder(tmp_path, samples_dir, "obama2.jpg", "biden.jpg", "obama3.jpg")
    # Live-like: a looping replay paced in real time, each photo a new track (and a new decision).
    source = FolderSource(folder, hold_frames=6, fps=30)
    calls = threading.Event()

    class SlowRecorder(Recorder):
        def decision(self, decision: Decision) -> None:
            super().decision(decision)
            calls.set()
            time.sleep(0.4)  # a publisher stuck on a slow network

    recorder = SlowRecorder()

    pipeline = build(
        source,
        vision,
        database,
        recorder,
        source_config=SourceConfig(realtime=True, loop=True, fps=30),
        decision=DecisionConfig(votes=1, embed_interval_s=0.0, cooldown_s=0.0),
    )
    pipeline.start()
    sizes: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            len(recorder.decisions) < 3 or sum(pipeline.metrics()["drops"].values()) == 0
        ):
            sizes.extend(q.qsize() for q in pipeline.queues.values())
            time.sleep(0.01)
        assert calls.is_set()
        # Every stage is alive and beating while the consumer is slow.
        beats = pipeline.heartbeats()
        assert set(beats) == set(STAGES)
        assert all(time.monotonic() - b < 2.0 for b in beats.values())
    finally:
        stopped = time.monotonic()
        pipeline.stop()
        alive = pipeline.join(2.0)
        took = time.monotonic() - stopped
    assert alive == []
    assert took < 2.0
    assert max(sizes) <= 2
    m = pipeline.metrics()
    assert sum(m["drops"].values()) > 0
    assert all(q.qsize() <= q.maxsize for q in pipeline.queues.values())
    assert m["decisions"] >= 3


def test_source_that_cannot_open_fails_fast(vision: Vision, database: FaceDatabase) -> None:
    from edgeface.errors import SourceError

    recorder = Recorder()
    pipeline = build(open_source("/dev/video99"), vision, database, recorder, source_config=SourceConfig())
    with pytest.raises(SourceError, match="/dev/video99"):
        pipeline.start()
    assert all(t.ident is None for t in pipeline.threads)
    assert pipeline.join(0.1) == []


def test_hamilton_clip_recognises_both_performers(
    shared_data: Path, tmp_path: Path, vision: Vision, database: FaceDatabase
) -> None:
    import cv2

    clip = shared_data / "video" / "short_hamilton_clip.mp4"
    if not clip.is_file():
        pytest.skip("hamilton clip absent")
    ids = {}
    for person in ("lin_manuel_miranda", "alex_lacamoire"):
        photos = sorted(p for p in (shared_data / "dev" / person).iterdir() if p.suffix in {".jpg", ".png"})
        vectors = [vision.embed_photo(np.asarray(cv2.imread(str(p)), dtype=np.uint8)) for p in photos]
        ids[database.add_person(person, None, vectors).id] = person
    recorder = Recorder()
    source = open_source(str(clip))
    pipeline = build(source, vision, database, recorder, source_config=SourceConfig(realtime=False, loop=False))
    pipeline.start()
    assert pipeline.drained.wait(120)
    assert pipeline.join(2.0) == []
    known = [d for d in recorder.decisions if d.status == "known"]
    # Lin-Manuel Miranda faces the camera for seconds. Alex Lacamoire is seen near profile (the fused
    # default names him there, just above its threshold, after an 'uncertain') and, at the end, turned
    # away and motion-blurred: those faces are gated (bad_pose / too_blurry), never guessed.
    assert "lin_manuel_miranda" in {ids[d.person_id] for d in known if d.person_id}, recorder.decisions
    assert all(d.person_id in ids for d in known)
    # One decision per track, and later ones only to name the person an 'uncertain' track turns out to be
    # (the decider's rule): never a repeat, never a second name.
    per_track: dict[int, list[Decision]] = {}
    for d in recorder.decisions:
        per_track.setdefault(d.track_id, []).append(d)
    for decisions in per_track.values():
        first, *later = decisions
        assert all(d.status == "known" for d in later) and (not later or first.status == "uncertain"), decisions
        assert len({d.person_id for d in decisions if d.status == "known"}) <= 1, decisions
    assert pipeline.metrics()["frames"] == 275
