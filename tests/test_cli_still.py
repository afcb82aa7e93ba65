"""``edgeface identify|verify|detect|analyze`` in-process on real photos: output, JSON and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeface.cli import main
from tests.test_cli_db import ok, run, write_config


@pytest.fixture
def config(tmp_path: Path, samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "[attributes]\nenabled = true\n")
    ok(capsys, "db", "enroll", "Barack Obama", samples_dir / "obama.jpg", "--config", path)
    return path


def test_identify_prints_each_face_and_json(
    config: Path, samples_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ok(capsys, "identify", samples_dir / "obama2.jpg", samples_dir / "biden.jpg", "--config", config)
    obama, biden = out.split("biden.jpg:")
    assert "known" in obama and "Barack Obama" in obama
    assert "unknown" in biden and "below_threshold" in biden
    code, out, _ = run(capsys, "identify", samples_dir / "obama3.jpg", "--config", config, "--json")
    assert code == 0
    (reply,) = json.loads(out)
    assert reply["ok"] is True and reply["results"][0]["best_match"]["name"] == "Barack Obama"


def test_verify_detect_analyze(config: Path, samples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ok(capsys, "verify", samples_dir / "obama2.jpg", samples_dir / "obama3.jpg", "--config", config)
    assert "same: similarity" in out
    out = ok(capsys, "verify", samples_dir / "obama2.jpg", samples_dir / "biden.jpg", "--config", config)
    assert "different: similarity" in out
    code, out, _ = run(capsys, "detect", samples_dir / "obama.jpg", "--config", config, "--json")
    assert code == 0 and json.loads(out)[0]["faces"] == 1
    code, out, _ = run(capsys, "analyze", samples_dir / "obama.jpg", "--config", config, "--json")
    probabilities = json.loads(out)[0]["results"][0]["emotion"]["probabilities"]
    assert len(probabilities) == 7 and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)


def test_an_image_without_a_face_fails_only_itself(
    config: Path, samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    code, out, err = run(capsys, "identify", text, samples_dir / "obama2.jpg", "--config", config, "--json")
    assert code == 7 and "could not be answered" in err
    bad, good = json.loads(out)
    assert bad["ok"] is False and bad["error"]["code"] == "bad_request"
    assert good["ok"] is True
    assert main(["verify", str(samples_dir / "obama2.jpg"), "--config", str(config)]) == 7
