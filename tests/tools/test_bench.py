"""``edgeface bench``: short real runs of the pipeline, the comparison, matching and embedding.

Only structure and sanity are checked (frames counted, faces found, events delivered): speed is
what the command measures, never what a test asserts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeface.cli import main
from edgeface.config import VisionConfig
from edgeface.tools import reference
from edgeface.tools.encoders import embedder_ids
from edgeface.tools.instrument import STAGES

needs_reference = pytest.mark.skipif(not reference.available(), reason="dlib reference not installed")


def test_bench_pipeline_end_to_end(
    video_file: Path, gallery_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--source", str(video_file), "--gallery", str(gallery_dir), "--broker", "embedded"]
    assert main([*argv, "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for label in ("fps", "mqtt", "embedded broker", "stage", "detect", "publish"):
        assert label in printed
    report = json.loads(out.read_text())
    assert report["frames"] == report["processed"] == 20
    assert report["fps"] > 0 and report["cpu_percent"] > 0
    assert report["rss_mb"]["peak_mb"] > 0
    assert report["dropped"] == 0  # an unpaced file replay is lossless
    assert report["gallery"] == {"biden": 1, "obama": 2}
    assert report["faces"] >= 10  # obama.jpg fills the first 10 frames
    assert set(report["stages"]) == {*STAGES, "track", "decide", "spool"}
    assert report["stages"]["detect"]["n"] == 20
    assert report["stages"]["capture"]["n"] == 20
    assert report["stages"]["embed"]["n"] >= 1
    assert report["stages"]["match"]["n"] == report["embeddings"]
    known = {d["name"] for d in report["decisions"] if d["status"] == "known"}
    assert "obama" in known
    mqtt = report["mqtt"]
    assert mqtt["broker"] == "embedded"
    # Every decision reached the subscriber, each timed from its frame's capture.
    assert mqtt["received"] == len(report["decisions"]) == mqtt["latency_ms"]["n"]
    assert mqtt["lost"] == mqtt["unmatched"] == 0
    assert 0 < mqtt["latency_ms"]["p50"] <= mqtt["latency_ms"]["max"]


def test_bench_loops_to_the_frame_count_through_an_external_broker(
    video_file: Path,
    mosquitto: Any,  # conftest.Broker
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--source", str(video_file), "--frames", "25", "--loop", "--realtime"]
    assert main([*argv, "--broker", f"127.0.0.1:{mosquitto.port}", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 25  # the 20-frame clip, then 5 frames of its second pass
    assert report["processed"] + report["dropped"] == 25
    assert report["mqtt"]["broker"] == "external"
    assert report["gallery"] == {}
    assert main(["bench", "--source", str(video_file), "--loop"]) == 2
    assert "--loop needs --frames" in capsys.readouterr().err


@pytest.mark.reference
@needs_reference
def test_bench_compare_face_recognition(
    video_file: Path, gallery_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare.json"
    argv = ["bench", "--source", str(video_file), "--frames", "12", "--gallery", str(gallery_dir)]
    assert main([*argv, "--compare", "face_recognition", "--json", str(out), "--quiet"]) == 0
    assert "speed-up" in capsys.readouterr().out
    compare = json.loads(out.read_text())["compare"]
    assert compare["frames"] == 12
    edge, ref = compare["edgeface"], compare["reference"]
    assert edge["faces"] >= 1 and ref["faces"] >= 1
    assert edge["fps"] > 0 and ref["fps"] > 0
    assert compare["speedup_pipeline"] > 0 and compare["speedup_sequential"] > 0
    # Frames 0-9 show obama.jpg: both pipelines find that face, so some faces pair up.
    assert compare["paired_faces"] >= 1
    assert 0.0 <= compare["agreement"] <= compare["agreement_outcome"] <= 1.0
    assert ref["named"].get("obama", 0) >= 1
    # Named faces are counted without the not-named labels; sharp frontal photos need no keypoint fallback.
    assert edge["named_faces"] == sum(v for k, v in edge["named"].items() if k not in ("unknown", "unaligned", "gated"))
    assert edge["named"].get("obama", 0) >= 1 and edge["keypoint_aligned"] == edge["keypoint_named"] == 0


def test_bench_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "match.json"
    assert main(["bench", "match", "--identities", "100,1000", "--repeats", "5", "--json", str(out)]) == 0
    assert "identities" in capsys.readouterr().out
    rows = json.loads(out.read_text())["match"]
    assert [r["identities"] for r in rows] == [100, 1000]
    assert all(r["p50_ms"] > 0 for r in rows)


def test_bench_embed(persons_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = persons_dir / "obama"
    out = tmp_path / "embed.json"
    argv = ["bench", "embed", "--photos", str(photos), "--threads", "1,2", "--repeats", "2"]
    assert main([*argv, "--json", str(out), "--quiet"]) == 0
    assert "embedder" in capsys.readouterr().out
    rows = json.loads(out.read_text())["embedders"]
    edge = [r for r in rows if r["model_id"] != "dlib_reference"]
    assert {(r["model_id"], r["threads"]) for r in edge} == {
        (m, t) for m in embedder_ids(VisionConfig().models_dir) for t in (1, 2)
    }
    assert {"dlib_resnet_v1_int8", "sface_2021dec_int8", VisionConfig().embedder} <= {r["model_id"] for r in edge}
    assert all(r["faces"] == 3 and r["ms_per_face"]["p50"] > 0 for r in rows)
    assert any(r["model_id"] == "dlib_reference" for r in rows) == reference.available()


def test_bench_refuses_a_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--source", str(tmp_path / "nope.mp4"), "--quiet"]) == 4
    assert "nope.mp4" in capsys.readouterr().err
