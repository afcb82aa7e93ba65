"""``edgeface liveness`` and ``edgeface eval liveness`` on the real spoof samples."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.cli import main
from edgeface.tools.eval_liveness import equal_error, load_liveness_set


def test_liveness_verb_judges_each_face(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spoof = shared_data / "spoof"
    files = [spoof / "real" / "silentface_image_T1.jpg", *sorted((spoof / "fake").glob("*.jpg"))]
    assert main(["liveness", *map(str, files), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    verdicts = [[face["live"] for face in image["faces"]] for image in report["images"]]
    assert verdicts == [[True], [False], [False]]


def test_eval_liveness_rates_on_the_spoof_set(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text('[liveness]\nmode = "passive"\n')
    out = tmp_path / "report.json"
    assert main(["eval", "liveness", str(shared_data / "spoof"), "--config", str(config), "--json", str(out)]) == 0
    assert "passive" in capsys.readouterr().out
    report = json.loads(out.read_text())
    still = report["summary"]["still"]
    for check in ("passive", "combined"):
        assert (still[check]["bona_fide"], still[check]["attacks"]) == (1, 2)
        assert still[check]["apcer"] == 0.0 and still[check]["bpcer"] == 0.0
        assert still[check]["eer"] == 0.0
    assert len(report["items"]) == 3


def test_replay_gives_a_track_verdict_per_check(tmp_path: Path, samples_dir: Path) -> None:
    # A digital photo held still for 4 s at 10 fps: the model sees a real capture of a face (no print,
    # no screen) and passes it; blink and motion see a frozen face and refuse it.
    frame = cv2.resize(np.asarray(cv2.imread(str(samples_dir / "obama.jpg")), dtype=np.uint8), (640, 480))
    video = tmp_path / "still.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for _ in range(40):
        writer.write(frame)
    writer.release()
    out = tmp_path / "replay.json"
    assert main(["eval", "liveness", "--replay", str(video), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["live"]["blink"] is False and report["live"]["motion"] is False
    assert report["live"]["passive"] is True and report["scores"]["passive"] >= 1.0


def test_equal_error_and_set_layout(tmp_path: Path) -> None:
    assert equal_error([0.9, 0.8, 0.7], [0.1, 0.2]) == (0.0, 0.7)
    eer, _ = equal_error([0.9, 0.3], [0.5, 0.1])
    assert eer == 0.5
    (tmp_path / "real" / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "real" / "a" / "b" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    assert [(s.path.name, s.label) for s in load_liveness_set(tmp_path)] == [("x.png", "real")]
