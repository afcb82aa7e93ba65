"""``edgeface eval``: real runs on tiny labelled sets built from the sample photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeface.cli import main
from edgeface.config import DEFAULT_MODELS_DIR as MODELS_DIR
from edgeface.tools import reference
from edgeface.vision.manifest import load_manifest

INT8 = "dlib_resnet_v1_int8"


def _write_pairs(persons_dir: Path) -> Path:
    """A pairs list beside the person folders (its paths are relative to its own folder)."""
    csv = persons_dir / "pairs.csv"
    rows = [
        "file_a,file_b,same",
        "obama/obama.jpg,obama/obama2.jpg,1",
        "obama/obama2.jpg,obama/obama3.jpg,1",
        "obama/obama.jpg,biden/biden.jpg,0",
        "obama/obama3.jpg,biden/biden.jpg,0",
    ]
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_eval_folder_per_person(persons_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, plot = tmp_path / "report.json", tmp_path / "roc.png"
    code = main(["eval", str(persons_dir), "--models", INT8, "--json", str(out), "--plot", str(plot), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "folder per person, 4 images" in printed
    assert INT8 in printed and "TAR@1e-3" in printed
    report = json.loads(out.read_text())
    assert report["kind"] == "persons"
    (model,) = report["models"]
    assert model["model_id"] == INT8 and model["metric"] == "cosine"
    assert model["images"] == 4
    obama = [o for o in model["per_image"] if o["file"].startswith("obama/")]
    assert all(o["faces"] >= 1 and o["described"] >= 1 for o in obama)
    # All pairs of 4 images: obama x3 gives 3 genuine pairs, obama-biden 3 impostor pairs.
    assert (model["pairs"], model["genuine"], model["impostor"]) == (6, 3, 3)
    assert 0.0 <= model["at_threshold"]["value"] <= model["best"]["value"] <= 1.0
    assert 0.0 <= model["eer"]["value"] <= 1.0
    assert set(model["tar_at_far"]) == {"0.01", "0.001", "0.0001"}
    # Gallery: obama.jpg and biden.jpg; probes obama2 and obama3.
    assert (model["gallery"], model["probes"]) == (2, 2)
    assert model["rank1"] == model["rank1_correct"] / 2
    assert len(model["roc_far"]) == len(model["roc_tar"]) >= 2
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_eval_pairs_csv(persons_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _write_pairs(persons_dir)
    out = tmp_path / "pairs.json"
    assert main(["eval", str(csv), "--models", INT8, "--json", str(out), "--quiet"]) == 0
    assert "pairs, 4 images" in capsys.readouterr().out
    (model,) = json.loads(out.read_text())["models"]
    assert (model["pairs"], model["genuine"], model["impostor"]) == (4, 2, 2)
    assert model["unscored_pairs"] == 0
    assert model["rank1"] is None
    assert model["threshold"] == pytest.approx(load_manifest(MODELS_DIR).get(INT8).default_threshold)


@pytest.mark.reference
@pytest.mark.skipif(not reference.available(), reason="dlib reference not installed (extra 'reference')")
def test_eval_with_the_dlib_reference(persons_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ref.json"
    assert main(["eval", str(persons_dir), "--models", "dlib", "--json", str(out), "--quiet"]) == 0
    (model,) = json.loads(out.read_text())["models"]
    assert model["model_id"] == "dlib_reference" and model["metric"] == "neg_euclidean"
    assert model["threshold"] == -0.6
    assert model["with_face"] == 4


def test_eval_refuses_bad_input(tmp_path: Path, persons_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["eval", str(persons_dir), "--models", "no_such_model", "--quiet"]) == 3
    assert "no_such_model" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    assert main(["eval", str(bad)]) == 1
    assert "file_a,file_b,same" in capsys.readouterr().err
