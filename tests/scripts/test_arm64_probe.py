"""The cross-platform probe on the host: a record agrees with itself, and real faults are named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeface.config import DEFAULT_MODELS_DIR
from edgeface.vision.manifest import load_manifest
from tests.scripts.conftest import load_script

probe = load_script("arm64_probe")


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory, samples_dir: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("probe") / "host.npz"
    assert probe.main(["probe", "--photos", str(samples_dir), "--out", str(out)]) == 0
    return dict(np.load(out))


def test_record_covers_every_manifest_model(record: dict[str, Any]) -> None:
    meta = json.loads(str(record["meta"]))
    specs = load_manifest(DEFAULT_MODELS_DIR).models
    assert set(meta["quantization"]) == {s.id for s in specs}
    for spec in specs:
        assert f"raw|{spec.id}|0" in record, spec.id
        if spec.role == "embedder":
            emb = record[f"emb|{spec.id}"]
            assert emb.shape[0] >= 5  # a face in each single-face sample photo
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert meta["broker_s"] > 0  # the embedded broker round trip ran


def test_a_record_agrees_with_itself(record: dict[str, Any]) -> None:
    report = probe.compare(record, record)
    assert report.failures == []
    assert any(line.startswith("embedder dlib_resnet_v1_int8") for line in report.lines)


def test_wrong_embeddings_are_named(record: dict[str, Any]) -> None:
    bad = dict(record)
    emb = record["emb|dlib_resnet_v1_int8"]
    bad["emb|dlib_resnet_v1_int8"] = emb[::-1].copy()  # another person's vector for the first chip
    failures = probe.compare(record, bad).failures
    assert [f for f in failures if f.startswith("embedder dlib_resnet_v1_int8")], failures


def test_a_missed_face_and_moved_landmarks_are_named(record: dict[str, Any]) -> None:
    bad = dict(record)
    bad["det|blazeface_short|obama.jpg"] = record["det|blazeface_short|obama.jpg"][:0]
    key = "lm|facemesh|blazeface_full|biden.jpg"
    bad[key] = record[key] + np.float32(2.0)  # 2 px on a face of a few hundred px
    failures = probe.compare(record, bad).failures
    assert any("detector blazeface_short on obama.jpg: 0 faces" in f for f in failures), failures
    assert any(f.startswith("landmarker facemesh on biden.jpg (blazeface_full): points differ") for f in failures)


def test_a_model_missing_on_the_device_fails(record: dict[str, Any]) -> None:
    bad = {k: v for k, v in record.items() if "dlib_resnet_v1_float32" not in k}
    meta = json.loads(str(record["meta"]))
    del meta["quantization"]["dlib_resnet_v1_float32"]
    bad["meta"] = np.asarray(json.dumps(meta))
    failures = probe.compare(record, bad).failures
    assert any(f.startswith("model dlib_resnet_v1_float32: not run") for f in failures), failures
