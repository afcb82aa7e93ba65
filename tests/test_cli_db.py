"""``edgeface db ...`` in-process: output, exit codes, and the database it leaves behind."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.cli import main
from edgeface.matching.db import FaceDatabase


def write_config(tmp_path: Path, embedder: str = "dlib_resnet_v1_int8") -> Path:
    config = tmp_path / f"{embedder}.toml"
    config.write_text(
        f'[device]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[vision]\nembedder = "{embedder}"\n'
        "[database]\nbackups = 3\nkeep_images = true\n"
    )
    return config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def photos(tmp_path: Path, samples_dir: Path, face_image) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    out = {name: samples_dir / name for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")}
    left, right = face_image("obama.jpg"), face_image("biden.jpg")
    right = cv2.resize(right, (round(right.shape[1] * left.shape[0] / right.shape[0]), left.shape[0]))
    out["pair.jpg"] = tmp_path / "pair.jpg"
    cv2.imwrite(str(out["pair.jpg"]), np.hstack([left, right]))
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def run_json(capsys: pytest.CaptureFixture[str], *argv: object) -> object:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_enroll_list_get_rename_delete(
    capsys: pytest.CaptureFixture[str], config: Path, photos: dict[str, Path]
) -> None:
    code, out, err = run(
        capsys, "db", "enroll", "Barack", photos["obama.jpg"], "--config", config, "--meta", '{"access": true}'
    )
    assert code == 0, err
    assert out.startswith("enrolled new person Barack (id ") and out.rstrip().endswith("1 new samples")
    added = run_json(capsys, "db", "enroll", "barack", photos["obama2.jpg"], photos["obama3.jpg"], "--config", config)
    assert isinstance(added, dict) and added["created"] is False and len(added["sample_ids"]) == 2
    barack = added["person"]["id"]
    joe = run_json(capsys, "db", "enroll", "Joe", photos["biden.jpg"], "--config", config)["person"]["id"]  # type: ignore[index]

    out = ok(capsys, "db", "list", "--config", config)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SAMPLES", "CREATED", "METADATA"]
    assert lines[1].split()[:3] == [barack, "Barack", "3+0"] and '{"access": true}' in lines[1]
    assert lines[-1] == "2 of 2 persons"
    page = run_json(capsys, "db", "list", "--skip", 1, "--limit", 1, "--config", config)
    assert page == {"total": 2, "skip": 1, "persons": [page["persons"][0]]}  # type: ignore[index]
    assert page["persons"][0]["name"] == "Joe" and "samples" not in page["persons"][0]  # type: ignore[index]

    out = ok(capsys, "db", "get", barack, "--config", config)
    assert f"id:        {barack}" in out and out.count("positive") == 3 and "image" in out
    person = run_json(capsys, "db", "get", barack, "--config", config)
    sample = person["samples"][0]["id"]  # type: ignore[index]

    out = ok(capsys, "db", "rename", joe, "Joseph", "--config", config)
    assert out.strip() == f"renamed {joe} to Joseph"
    out = ok(capsys, "db", "delete", barack, "--sample", sample, "--config", config)
    assert out.startswith(f"deleted sample {sample} of Barack")
    out = ok(capsys, "db", "delete", joe, "--config", config)
    assert out.startswith("deleted Joseph") and "next 3 saves" in out
    assert run_json(capsys, "db", "list", "--config", config)["total"] == 1  # type: ignore[index]


def test_refusals_exit_7_with_the_reason(
    capsys: pytest.CaptureFixture[str], config: Path, photos: dict[str, Path]
) -> None:
    code, out, err = run(capsys, "db", "enroll", "Barack", photos["obama.jpg"], photos["pair.jpg"], "--config", config)
    assert code == 7 and out == ""
    assert err.strip() == f"edgeface: error: image 1 ({photos['pair.jpg']}): 2 faces found; send a photo of one person"
    assert run(capsys, "db", "enroll", "Barack", photos["obama.jpg"], "--config", config)[0] == 0
    code, _, err = run(capsys, "db", "enroll", "Someone", photos["obama2.jpg"], "--config", config)
    assert code == 7 and "matches 'Barack'" in err
    assert run(capsys, "db", "enroll", "Someone", photos["obama2.jpg"], "--force", "--config", config)[0] == 0
    code, _, err = run(capsys, "db", "enroll", "X", Path("/nonexistent.jpg"), "--config", config)
    assert code == 7 and "cannot be read" in err
    code, _, err = run(capsys, "db", "get", "nope", "--config", config)
    assert code == 7 and "no person with id 'nope'" in err
    code, _, err = run(capsys, "db", "reset", "--config", config)
    assert code == 7 and "--yes" in err
    with pytest.raises(SystemExit) as exc:
        main(["db", "enroll", "X", str(photos["obama.jpg"]), "--meta", "[1]", "--config", str(config)])
    assert exc.value.code == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_backups_restore_reset_export(
    capsys: pytest.CaptureFixture[str], config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    run(capsys, "db", "enroll", "Barack", photos["obama.jpg"], "--config", config)
    run(capsys, "db", "enroll", "Joe", photos["biden.jpg"], "--config", config)
    out = ok(capsys, "db", "reset", "--yes", "--config", config)
    assert out.strip() == "database emptied; the previous contents are backup 3"
    out = ok(capsys, "db", "backups", "--config", config)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["BACKUP", "CREATED", "PERSONS", "BYTES", "STATUS"]
    assert [(r[0], r[2], r[4]) for r in rows[1:]] == [("3", "2", "ok"), ("2", "1", "ok"), ("1", "0", "ok")]
    assert run_json(capsys, "db", "backups", "--config", config)[0]["persons"] == 2  # type: ignore[index]
    out = ok(capsys, "db", "restore", "3", "--config", config)
    assert out.strip() == "restored backup 3 as generation 5 (2 persons)"
    assert run(capsys, "db", "restore", "42", "--config", config)[0] == 7

    out_file = tmp_path / "copy.npz"
    out = ok(capsys, "db", "export", out_file, "--config", config)
    assert out.strip() == f"exported 2 persons to {out_file}"
    copy = FaceDatabase.open(out_file, "dlib_resnet_v1_int8", 128)
    assert [p.name for p in copy.list()[1]] == ["Barack", "Joe"]
    assert copy.chip(copy.list()[1][0].samples[0].id) is not None


def test_import_shows_progress_and_a_summary(
    capsys: pytest.CaptureFixture[str], config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "known"
    (root / "Barack").mkdir(parents=True)
    (root / "Barack" / "a.jpg").write_bytes(photos["obama.jpg"].read_bytes())
    (root / "Barack" / "b.jpg").write_bytes(photos["pair.jpg"].read_bytes())
    (root / "Joe.jpg").write_bytes(photos["biden.jpg"].read_bytes())
    code, out, err = run(capsys, "db", "import", root, "--config", config)
    assert code == 0
    assert "import [" in err and "3/3" in err
    lines = out.splitlines()
    assert lines[0] == "3 images: 2 faces added; 2 persons created, 0 updated; 1 rejected"
    assert lines[1].startswith("  multiple_faces: Barack/b.jpg: 2 faces found")
    # a second run stores nothing new: every face is already enrolled
    summary = run_json(capsys, "db", "import", root, "--config", config)
    assert summary["persons_updated"] == [] and summary["faces_added"] == 0  # type: ignore[index]
    reasons = sorted(r["reason"] for r in summary["rejected"] if r["code"] == "conflict")  # type: ignore[index]
    assert len(reasons) == 2
    assert "already enrolled for 'Barack'" in reasons[0] and "already enrolled for 'Joe'" in reasons[1]


def test_rebuild_after_a_model_change(
    capsys: pytest.CaptureFixture[str], config: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    run(capsys, "db", "enroll", "Barack", photos["obama.jpg"], photos["obama2.jpg"], "--config", config)
    float32 = write_config(tmp_path, "dlib_resnet_v1_float32")
    code, _, err = run(capsys, "db", "list", "--config", float32)
    assert code == 5 and "edgeface db rebuild" in err
    code, out, err = run(capsys, "db", "rebuild", "--config", float32)
    assert code == 0, err
    assert out.strip() == "rebuilt for dlib_resnet_v1_float32: 1 persons, 2 samples"
    assert "rebuild [" in err
    assert run_json(capsys, "db", "list", "--config", float32)["total"] == 1  # type: ignore[index]
