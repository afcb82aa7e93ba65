"""``edgeface bench``: the daemon's real ``Pipeline`` end to end, as fast as the machine allows.

The run wires what ``edgeface run`` wires -- the ``Vision`` boundary over the configured models, a
database (enrolled from ``--gallery``), the unknowns spool, an MQTT link to a real broker -- with
each step of the vision boundary timed (``instrument.TimedVision``). Frames are resized to
``--width`` by the capture thread. By default the replay is not paced and its queues are lossless,
so fps is throughput with every frame processed; ``--realtime`` paces it at the file's rate with
the live (dropping) queues, which gives the latency a camera would see.

Measured: end-to-end fps, per-stage p50/p95/max, frame-captured -> MQTT-delivered latency (a
separate subscriber receives each event; see ``latency``), drops, peak RSS and CPU use. With
``--compare face_recognition`` the dlib reference then runs on the same frames (``compare``).
"""

from __future__ import annotations

import contextlib
import importlib
import resource
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeface.config import Settings
from edgeface.data import Decision, FloatArray
from edgeface.errors import SourceError
from edgeface.liveness.passive import open_passive
from edgeface.liveness.policy import build_policy, uses_passive
from edgeface.matching.db import FaceDatabase
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.publisher import EventPublisher
from edgeface.mqtt.topics import Topics
from edgeface.pipeline.lookup import SnapshotLookup
from edgeface.pipeline.presence import PresenceChange
from edgeface.pipeline.rules import Thresholds
from edgeface.pipeline.settings import PipelineSettings
from edgeface.pipeline.stages import Pipeline, PipelineParts
from edgeface.service.memory import release_startup_pages
from edgeface.sources.base import open_source
from edgeface.tools import metrics
from edgeface.tools.compare import compare
from edgeface.tools.dataset import person_folders
from edgeface.tools.instrument import (
    STAGES,
    LimitedSource,
    StageTimes,
    TimedVision,
)
from edgeface.tools.latency import BrokerAddress, LatencyProbe, bench_broker
from edgeface.tools.progress import Progress
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.imageio import load_image

# A camera or stream never ends by itself: without --frames, stop after ~10 s at 30 fps.
DEFAULT_LIVE_FRAMES = 300
# Matching is replayed on at most this many of the run's embeddings (each takes well under 1 ms).
MATCH_REPLAY_MAX = 1000
# How long the bench waits for the broker before giving up: it is local, so this is generous.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    source: str | None
    frames: int | None
    width: int
    gallery: Path | None = None
    compare: bool = False
    broker: str = "auto"
    realtime: bool = False
    loop: bool = False  # replay a finite source from its start until ``frames`` are processed
    show_progress: bool = True


def _enrol(db: FaceDatabase, analyzer: FaceAnalyzer, gallery: Path | None) -> dict[str, int]:
    """Add each gallery person with the subject of each photo; photos used per person."""
    enrolled: dict[str, int] = {}
    for name, paths in (person_folders(gallery) if gallery is not None else {}).items():
        vectors: list[FloatArray] = []
        for path in paths:
            faces = analyzer.analyze(load_image(path))  # the subject first
            if faces:
                vectors.append(faces[0].embedding.vector)
        if vectors:
            db.add_person(name, None, vectors)
            enrolled[name] = len(vectors)
    return enrolled


def _rss() -> dict[str, float | None]:
    # ru_maxrss is kilobytes on Linux: the peak of the whole process so far.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        # Not a runtime dependency (and untyped): used when installed, for the resident size at the end.
        psutil = importlib.import_module("psutil")
    except ImportError:
        return {"peak_mb": peak, "end_mb": None}
    return {"peak_mb": peak, "end_mb": float(psutil.Process().memory_info().rss) / 2**20}


def _replay_matches(db: FaceDatabase, settings: Settings, vectors: list[FloatArray], times: StageTimes) -> None:
    """Time the pipeline's own lookup over the final database on the embeddings the run produced.

    The lookup is built inside ``Pipeline``; replaying it here on the same snapshot and the same
    vectors costs what it cost in the run, without reaching into the pipeline's internals.
    """
    lookup = SnapshotLookup.over(db, settings.decision.top_k)
    for vector in vectors[:MATCH_REPLAY_MAX]:
        started = time.perf_counter()
        lookup(vector)
        times.add("match", started)


def _spool(directory: Path, settings: Settings, analyzer: FaceAnalyzer) -> UnknownSpool:
    """The unknowns spool as the daemon configures it (without snapshots)."""
    threshold = Thresholds.resolve(settings.decision, analyzer.embedder.default_threshold).match
    return UnknownSpool.from_config(directory, settings.unknowns, threshold, analyzer.model_id, keep_snapshots=False)


def _connect(stack: contextlib.ExitStack, settings: Settings, topics: Topics, address: BrokerAddress) -> MqttLink:
    """The daemon's MQTT link, connected; stopped (after draining) when ``stack`` closes."""
    link_stop = threading.Event()
    link = MqttLink(
        settings.mqtt,
        topics,
        settings.device.name,
        lambda _verb, _payload, _props: None,  # the bench answers no commands
        link_stop,
        host=address.host,
        port=address.port,
        protocol=address.protocol,
    )
    link.start()
    stack.callback(link.stop)
    stack.callback(link_stop.set)
    link.wait_connected(CONNECT_TIMEOUT_S)
    return link


class _Publisher:
    """The pipeline's event sink: tells the probe the frame, then publishes as the daemon does, timed."""

    def __init__(self, publisher: EventPublisher, probe: LatencyProbe, times: StageTimes) -> None:
        self.publisher, self.probe, self.times = publisher, probe, times
        self.decided: list[dict[str, Any]] = []

    def decision(self, decision: Decision) -> None:
        started = time.perf_counter()
        self.probe.expect(decision.track_id, decision.frame_index, decision.captured_at)
        self.publisher.decision(decision)
        self.times.add("publish", started)
        self.decided.append(
            {
                "track_id": decision.track_id,
                "frame": decision.frame_index,
                "status": decision.status,
                "reason": decision.reason,
                "name": decision.name,
                "similarity": round(decision.similarity, 4),
                # Where the deciding frame's time went (``total``: captured -> handed to this sink).
                "stage_ms": {stage: round(ms, 2) for stage, ms in decision.stage_ms.items()},
            }
        )

    def presence(self, change: PresenceChange) -> None:
        self.publisher.presence(change.person_id, change.name, change.on)

    def source_state(self, state: str, detail: str) -> None:
        """A bench run reports the source's end in its figures, not as state documents."""


def run_bench(settings: Settings, options: BenchOptions) -> dict[str, Any]:
    """Run the pipeline over the source and return the report (JSON-ready)."""
    from edgeface.samples import ensure_samples

    uri = options.source or str(ensure_samples())
    inner = open_source(uri, width=settings.source.width, height=settings.source.height)
    limit = options.frames or (DEFAULT_LIVE_FRAMES if inner.is_live else None)
    times = StageTimes()
    progress = Progress("bench", limit, enabled=options.show_progress)
    source = LimitedSource(inner, limit, times, progress)
    source_config = settings.source.model_copy(
        update={
            "uri": uri,
            "realtime": options.realtime,
            "loop": options.loop,
            "fps": None,
            "resize_width": options.width,
        }
    )
    with contextlib.ExitStack() as stack:
        analyzer = stack.enter_context(FaceAnalyzer.from_config(settings.vision))
        vision = TimedVision(analyzer, times)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeface-bench-")))
        db = FaceDatabase.open(tmp / "faces.npz", analyzer.model_id, analyzer.embedder.dim, backups=0)
        address = stack.enter_context(bench_broker(options.broker))
        topics = Topics(settings.mqtt.base_topic, settings.device.id)
        link = _connect(stack, settings, topics, address)
        probe = LatencyProbe(address, topics)
        stack.callback(probe.close)
        publisher = _Publisher(EventPublisher(link, topics, settings.device.id), probe, times)
        # The configured liveness, as the daemon runs it: `bench` with and without shows its cost.
        passive = open_passive(settings.liveness, settings.vision) if uses_passive(settings.liveness.mode) else None
        parts = PipelineParts(
            spool=_spool(tmp / "unknowns", settings, analyzer),
            liveness=build_policy(settings.liveness, passive.threshold if passive is not None else None),
            passive=passive,
        )
        pipeline_settings = PipelineSettings.of(
            analyzer.embedder,
            source=source_config,
            decision=settings.decision,
            tracker=settings.tracker,
            pipeline=settings.pipeline,
        )
        # Everything is started, as the daemon is when its capture starts: the start-up pages go, as there.
        # The gallery then comes in as enrollments into a running daemon do; the run pays for what faults back.
        release_startup_pages()
        enrolled = _enrol(db, analyzer, options.gallery)
        lookup = SnapshotLookup.over(db, settings.decision.top_k)
        pipeline = Pipeline(source, vision, lookup, pipeline_settings, publisher, parts)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        pipeline.start()
        try:
            while not pipeline.stop_event.wait(0.25):
                pass
        finally:
            pipeline.stop()
            pipeline.join()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        progress.close(source.read_count)
        if not pipeline.drained.is_set():
            raise SourceError(f"bench: the pipeline on {uri} stopped before the end of the source (see the log)")
        lost = probe.settle()
        run = pipeline.metrics()
        _replay_matches(db, settings, vision.vectors, times)
        report = _report(settings, options, uri, run, times, wall, cpu)
        report["gallery"] = enrolled
        report["decisions"] = publisher.decided
        report["mqtt"] = {
            "broker": address.kind,
            "received": probe.received,
            "lost": lost,
            "unmatched": probe.unmatched,
            "latency_ms": metrics.latency_summary(probe.latencies_ms).as_dict(),
        }
    if options.compare:
        report["compare"] = compare(
            settings.vision,
            settings.decision,
            uri,
            frames=source.read_count,
            width=options.width,
            gallery=options.gallery,
            loop=options.loop,
            show_progress=options.show_progress,
        )
        reference_fps = report["compare"]["reference"]["fps"]
        report["compare"]["speedup_pipeline"] = report["fps"] / reference_fps if reference_fps > 0 else None
    return report


def _report(
    settings: Settings,
    options: BenchOptions,
    uri: str,
    run: dict[str, Any],
    times: StageTimes,
    wall: float,
    cpu: float,
) -> dict[str, Any]:
    summaries = times.summaries()
    stages: dict[str, dict[str, Any]] = {
        name: {"per": per, **summaries[name].as_dict()} for name, per in STAGES.items()
    }
    # Track, decide and spool are timed by the pipeline itself (rolling window of its last items, no max).
    for name in ("track", "decide", "spool"):
        own = run["stages"].get(name, {})
        per = "event" if name == "spool" else "frame"  # the spool stage sees unknown decisions only
        stages[name] = {"per": per, "n": None, "p50": own.get("p50_ms"), "p95": own.get("p95_ms"), "max": None}
    processed = int(run["processed"])
    return {
        "source": uri,
        "frames": int(run["frames"]),
        "processed": processed,
        "width": options.width,
        "realtime": options.realtime,
        "loop": options.loop,
        "embedder": settings.vision.embedder,
        "detector": settings.vision.detector,
        "threads": settings.vision.threads,
        "wall_s": wall,
        "fps": processed / wall if wall > 0 else 0.0,
        "faces": int(run["faces"]),
        "landmarked": int(run["landmarked"]),
        "unaligned": int(run["unaligned"]),
        "embeddings": int(run["embeddings"]),
        "drops": dict(run["drops"]),
        "dropped": sum(int(v) for v in run["drops"].values()),
        "stages": stages,
        "pipeline_latency_ms": run["latency_ms"],
        "liveness": {
            "mode": settings.liveness.mode,
            "passive_checks": int(run["passive_checks"]),
            "passive_ms": run["passive_ms"],
            "liveness_failed": int(run["liveness_failed"]),
        },
        "cpu_percent": 100.0 * cpu / wall if wall > 0 else 0.0,
        "rss_mb": _rss(),
    }


def _fmt(value: float | None, spec: str = "8.2f") -> str:
    width = int(spec.split(".", maxsplit=1)[0])
    return f"{value:{spec}}" if value is not None else f"{'-':>{width}}"


def _liveness_line(live: dict[str, Any]) -> str:
    line = f"liveness   mode {live['mode']}, {live['liveness_failed']} refused as not live"
    if live["passive_checks"]:
        ms = live["passive_ms"]
        line += f"; {live['passive_checks']} passive checks, p50 {ms['p50_ms']:.2f} / p95 {ms['p95_ms']:.2f} ms each"
    return line


def format_report(report: dict[str, Any]) -> str:
    """The end-of-run summary table."""
    rss = report["rss_mb"]
    lines = [
        f"source     {report['source']}  ({report['processed']}/{report['frames']} frames, "
        f"{report['width']} px wide, {'real time' if report['realtime'] else 'unpaced'})",
        f"model      {report['embedder']}, detector {report['detector']}, {report['threads']} thread(s)",
        f"fps        {report['fps']:.1f} end to end ({report['wall_s']:.1f} s)",
        f"faces      {report['faces']} detected, FaceMesh on {report['landmarked']} "
        f"({report['unaligned']} rejected), {report['embeddings']} embedded",
        f"decisions  {_decision_summary(report['decisions'])}",
        _liveness_line(report["liveness"]),
        f"dropped    {report['dropped']} {report['drops']}",
        f"cpu        {report['cpu_percent']:.0f} % of one core (process time / wall)",
        f"rss        peak {rss['peak_mb']:.0f} MB" + (f", at end {rss['end_mb']:.0f} MB" if rss["end_mb"] else ""),
    ]
    mqtt = report["mqtt"]
    lat, own = mqtt["latency_ms"], report["pipeline_latency_ms"]
    lines += [
        f"latency    captured->decided p50 {own['p50_ms']:.1f} / p95 {own['p95_ms']:.1f} ms (the pipeline's "
        "own rolling figure over its last <=300 frames)",
        f"mqtt       {mqtt['broker']} broker: {mqtt['received']} events, captured->delivered "
        f"p50 {lat['p50']:.1f} / p95 {lat['p95']:.1f} / max {lat['max']:.1f} ms (n={lat['n']}, lost {mqtt['lost']})",
        _deciding_line(report["decisions"]),
    ]
    lines += ["", f"{'stage':<10} {'per':<6} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    for name, s in report["stages"].items():
        n = "-" if s["n"] is None else str(s["n"])
        lines.append(f"{name:<10} {s['per']:<6} {n:>6} {_fmt(s['p50'])} {_fmt(s['p95'])} {_fmt(s['max'])}")
    if "compare" in report:
        lines += ["", *_format_compare(report["compare"], report["fps"])]
    return "\n".join(lines)


def _deciding_line(decisions: list[dict[str, Any]]) -> str:
    """Where the published decisions' frames spent their time before the sink (their ``stage_ms``)."""
    parts = []
    for stage in ("total", "embed", "spool"):
        values = [d["stage_ms"][stage] for d in decisions if stage in d["stage_ms"]]
        if values:
            s, label = metrics.latency_summary(values), "captured->sink" if stage == "total" else stage
            parts.append(f"{label} p50 {s.p50:.1f} / p95 {s.p95:.1f} (n={s.n})")
    return "deciding   " + ("; ".join(parts) + " ms" if parts else "no decision published")


def _decision_summary(decisions: list[dict[str, Any]]) -> str:
    counts = Counter(f"{d['status']}:{d['name']}" if d["status"] == "known" else d["status"] for d in decisions)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common()) or "none"


def _format_compare(c: dict[str, Any], pipeline_fps: float) -> list[str]:
    e, r = c["edgeface"], c["reference"]
    agreement = "-" if c["agreement"] is None else f"{100 * c['agreement']:.1f} %"
    outcome = "-" if c["agreement_outcome"] is None else f"{100 * c['agreement_outcome']:.1f} %"
    pipeline_ratio = "-" if c["speedup_pipeline"] is None else f"{c['speedup_pipeline']:.1f}x"
    sequential_ratio = "-" if c["speedup_sequential"] is None else f"{c['speedup_sequential']:.1f}x"
    return [
        f"compare on the same {c['frames']} frames: edgeface vs face_recognition (dlib HOG + ResNet)",
        f"  fps        pipeline {pipeline_fps:.1f}, edgeface sequential {e['fps']:.1f}, "
        f"face_recognition {r['fps']:.2f}",
        f"  speed-up   {pipeline_ratio} (pipeline), {sequential_ratio} (sequential, same thread)",
        f"  faces      edgeface {e['faces']} in {e['frames_with_face']} frames, "
        f"face_recognition {r['faces']} in {r['frames_with_face']} frames; "
        f"{c['paired_faces']} found by both, {c['only_edgeface']} only by edgeface, "
        f"{c['only_reference']} only by face_recognition",
        f"  named      edgeface {e['named_faces']} faces {e['named']}",
        f"             face_recognition {r['named_faces']} faces {r['named']}",
        f"  fallback   edgeface aligned {e['keypoint_aligned']} faces FaceMesh rejected on detector keypoints, "
        f"named {e['keypoint_named']} of them",
        f"  agreement  {agreement} of {c['paired_faces']} faces found by both (IoU >= 0.3) have the same label, "
        f"{outcome} the same outcome (same person, or nobody named by either)"
        + (f"; differ: {c['disagreements']}" if c["disagreements"] else ""),
    ]
