"""``edgeface eval`` with a ``fold`` column, several pairs files, --target-far and --cache; bad fold values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeface.cli import main
from edgeface.tools.dataset import DatasetError, PairSet, load_dataset, load_pairs

INT8 = "dlib_resnet_v1_int8"
FOLDED = [
    "file_a,file_b,same,fold",
    "obama/obama.jpg,obama/obama2.jpg,1,1",
    "obama/obama.jpg,biden/biden.jpg,0,1",
    "obama/obama2.jpg,obama/obama3.jpg,1,2",
    "obama/obama3.jpg,biden/biden.jpg,0,2",
]
# LFW subset for the end-to-end test: this many genuine and impostor pairs from each of two folds.
LFW_PER_KIND = 4


def _write(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fold_column_gives_kfold_and_target_far(
    persons_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _write(persons_dir, "folded.csv", FOLDED)
    out, cache = tmp_path / "report.json", tmp_path / "cache"
    argv = ["eval", str(csv), "--models", INT8, "--target-far", "1e-3", "--cache", str(cache), "--json", str(out)]
    assert main([*argv, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2-fold accuracy" in printed and "target FAR 0.001 -> threshold" in printed
    assert "below 1/2 impostor pairs: means no false accept" in printed
    (model,) = json.loads(out.read_text())["models"]
    folds = model["kfold"]["folds"]
    assert [f["fold"] for f in folds] == [1, 2] and [f["pairs"] for f in folds] == [2, 2]
    assert model["kfold"]["mean"] == pytest.approx(sum(f["accuracy"] for f in folds) / 2)
    (far,) = model["target_far"]
    assert far["target"] == 1e-3 and far["false_accepts"] == 0 and far["zero_fa_only"]
    assert set(model["tar_at_far"]) == {"0.01", "0.001", "0.0001"}
    assert model["cached_images"] == 0
    assert (cache / f"{INT8}.npz").is_file()

    # Second run: every vector from the cache, the same figures.
    assert main([*argv, "--quiet"]) == 0
    (again,) = json.loads(out.read_text())["models"]
    assert again["cached_images"] == 4
    assert again["kfold"] == model["kfold"] and again["target_far"] == model["target_far"]


def test_several_pairs_files_are_one_set(persons_dir: Path) -> None:
    plain = ["file_a,file_b,same", *(",".join(r.split(",")[:3]) for r in FOLDED[1:])]
    a = _write(persons_dir, "part_a.csv", plain[:3])
    b = _write(persons_dir, "part_b.csv", [plain[0], *plain[3:]])
    merged = load_dataset(a, b)
    assert isinstance(merged, PairSet)
    assert len(merged.pairs) == 4 and len(merged.images) == 4 and merged.sources == (a, b)
    folded = _write(persons_dir, "folded_part.csv", FOLDED)
    with pytest.raises(DatasetError, match="have a fold column and the others do not"):
        load_dataset(a, folded)


@pytest.mark.parametrize(
    ("value", "line"),
    [("x", 3), ("0", 3), ("", 3), ("-2", 3), ("1.5", 3)],
)
def test_an_unknown_fold_value_names_file_row_and_fix(persons_dir: Path, value: str, line: int) -> None:
    rows = [*FOLDED]
    rows[2] = rows[2].rsplit(",", 1)[0] + f",{value}"
    csv = _write(persons_dir, "bad_fold.csv", rows)
    with pytest.raises(DatasetError) as caught:
        load_pairs(csv)
    message = str(caught.value)
    assert str(csv) in message and f"line {line}" in message and f"unknown fold {value!r}" in message
    assert "write the fold number (1, 2, ...) of every pair, or drop the column" in message


def test_one_fold_only_is_refused(persons_dir: Path) -> None:
    csv = _write(persons_dir, "one_fold.csv", [FOLDED[0], *(r[:-1] + "1" for r in FOLDED[1:])])
    with pytest.raises(DatasetError, match="every pair is in fold 1; k-fold needs at least two folds"):
        load_pairs(csv)


def test_bad_fold_exits_with_the_message(persons_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = _write(persons_dir, "bad_fold_cli.csv", [*FOLDED[:2], FOLDED[2].rsplit(",", 1)[0] + ",ten", *FOLDED[3:]])
    assert main(["eval", str(csv), "--models", INT8, "--quiet"]) != 0
    assert "unknown fold 'ten'" in capsys.readouterr().err


def test_target_far_must_be_a_rate(persons_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", str(persons_dir), "--target-far", "2"])
    assert "between 0 and 1" in capsys.readouterr().err


def _lfw_subset(lfw: Path, out: Path) -> Path:
    """The first LFW_PER_KIND genuine and impostor pairs of View 2 folds 1 and 2 (absolute paths)."""
    lines = (lfw / "view2.csv").read_text().splitlines()
    picked, seen = [lines[0]], {}
    for row in lines[1:]:
        a, b, same, fold = row.split(",")
        key = (fold, same)
        if fold in {"1", "2"} and seen.get(key, 0) < LFW_PER_KIND:
            seen[key] = seen.get(key, 0) + 1
            picked.append(f"{lfw / a},{lfw / b},{same},{fold}")
    return _write(out, "lfw_subset.csv", picked)


def test_lfw_subset_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    csv = _lfw_subset(shared_data / "lfw", tmp_path)
    out = tmp_path / "lfw.json"
    assert main(["eval", str(csv), "--models", INT8, "--target-far", "1e-3", "--json", str(out), "--quiet"]) == 0
    (model,) = json.loads(out.read_text())["models"]
    assert (model["genuine"], model["impostor"]) == (2 * LFW_PER_KIND, 2 * LFW_PER_KIND)
    assert model["with_face"] == model["images"]  # LFW photos are centred portraits
    # dlib's ResNet verifies LFW at ~99 %: on 16 pairs at most one error per fold at the other's threshold.
    assert model["kfold"]["mean"] >= 0.875
    assert model["tar_at_far"]["0.001"]["value"] >= 0.75
