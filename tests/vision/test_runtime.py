"""TFLiteModel hands the model file's pages back once the interpreter is ready, without changing a single output."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.vision.manifest import load_manifest
from edgeface.vision.runtime import TFLiteModel, _interpreter_class, release_file_pages

from .support import ImageLoader

# The default set's models (detector, landmarker, both halves of the fused embedder, passive liveness).
MODEL_IDS = ("blazeface_short", "facemesh", "dlib_resnet_v1_int8", "sface_2021dec_int8", "minifasnet_v2_2p7_float32")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/smaps").is_file(),
    reason="page release needs Linux's /proc/self/smaps and madvise",
)


def _mapped_kb(path: Path) -> tuple[int, int]:
    """(mappings, resident kB) of every mapping of ``path`` in this process, from /proc/self/smaps."""
    target = os.path.realpath(path)
    mappings = resident = 0
    inside = False
    with open("/proc/self/smaps", encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split(maxsplit=5)
            if "-" in fields[0] and not fields[0].endswith(":"):
                inside = len(fields) == 6 and fields[5] == target
                mappings += inside
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return mappings, resident


def _input_from_photo(photo: np.ndarray, model: TFLiteModel, shape: tuple[int, ...]) -> np.ndarray:
    """A real photo resized to the model's input, in its dtype (the same array goes to both interpreters)."""
    height, width = shape[1], shape[2]
    rgb = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1]
    if model.input_dtype == np.float32:
        pixels = rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    else:
        pixels = rgb.astype(model.input_dtype)
    return np.ascontiguousarray(np.broadcast_to(pixels, shape))


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_released_model_gives_bit_identical_outputs_and_its_file_pages_leave_rss(
    models_dir: Path, face_image: ImageLoader, model_id: str
) -> None:
    spec = load_manifest(models_dir).get(model_id)
    path = models_dir / spec.file
    size_kb = path.stat().st_size // 1024
    # An interpreter as the runtime builds it, whose mapping is never released by itself.
    plain = _interpreter_class()(model_path=str(path), num_threads=1)
    plain.allocate_tensors()
    mappings, before = _mapped_kb(path)
    if mappings == 0:
        pytest.skip(f"this runtime does not map {path.name} (nothing to release)")
    assert before >= 0.9 * size_kb, f"preparing the interpreter reads the whole file: {before} of {size_kb} kB"

    model = TFLiteModel(models_dir, spec)  # releases every mapping of the file once it is ready
    _, released = _mapped_kb(path)
    assert released <= 0.1 * size_kb, f"{path.name}: {released} of {size_kb} kB still resident after the release"

    detail = plain.get_input_details()[0]
    x = _input_from_photo(face_image("obama.jpg"), model, tuple(int(v) for v in detail["shape"]))
    plain.set_tensor(int(detail["index"]), x)
    plain.invoke()
    expected = [plain.get_tensor(int(d["index"])).copy() for d in model.output_details]
    got = model.run(x)
    assert release_file_pages(path) > 0  # and once more between two runs of the same model
    again = model.run(x)
    for want, first, second in zip(expected, got, again, strict=True):
        assert np.array_equal(first, want) and np.array_equal(second, want)
    assert np.abs(expected[0]).max() > 0, "a real photo gives a non-trivial output"
    _, after = _mapped_kb(path)
    # Only the operators XNNPACK does not take read the file again (SFace int8: 0.8 of 9.4 MB).
    assert after <= 0.25 * size_kb, f"{path.name}: {after} of {size_kb} kB came back after three runs"


def test_release_of_a_file_that_is_not_mapped_advises_nothing(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\0" * 4096)
    assert release_file_pages(path) == 0
