"""The embed stage's side threads: a frame's independent model calls at once, results in order, nothing left running."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from edgeface.config import VisionConfig
from edgeface.pipeline.fanout import SideThreads
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.embed import ModelCall

WAIT_S = 30.0


def test_fused_components_on_side_threads_give_the_in_order_vectors(
    face_image: Callable[[str], np.ndarray],
) -> None:
    side = SideThreads("test-side")
    try:
        # The default embedder: the fused dlib + SFace entry, two components to run at once.
        with FaceAnalyzer.from_config(VisionConfig()) as analyzer:
            aligned = []
            for name in ("obama.jpg", "biden.jpg"):
                image = face_image(name)
                aligned += analyzer.align(image, analyzer.locate(image))[:1]
            assert len(aligned) == 2
            alone = analyzer.embedder.embed([a.chip for a in aligned])
            beside = analyzer.embed(aligned, side.run)
    finally:
        side.close()
    np.testing.assert_array_equal(np.stack([e.vector for e in beside]), alone)


def test_calls_run_at_once_and_come_back_in_order() -> None:
    # Each call waits until all three have started: in order on one thread, this would time out.
    started = threading.Barrier(3, timeout=WAIT_S)
    names: list[str] = []

    def call(value: float) -> ModelCall:
        def run() -> np.ndarray:
            names.append(threading.current_thread().name)
            started.wait()
            return np.full((1, 2), value, dtype=np.float32)

        return run

    side = SideThreads("test-side")
    try:
        results = side.run([call(1.0), call(2.0), call(3.0)])
    finally:
        side.close()
    assert [float(r[0, 0]) for r in results] == [1.0, 2.0, 3.0]
    assert threading.current_thread().name in names
    assert sum(name.startswith("test-side") for name in names) == 2


def test_a_failing_call_is_raised_after_the_others_have_finished() -> None:
    finished = threading.Event()

    def slow() -> np.ndarray:
        finished.wait(0.2)  # long enough to still be running when the first call fails
        finished.set()
        return np.zeros((1, 2), dtype=np.float32)

    def failing() -> np.ndarray:
        raise ValueError("chip 0: not a face")

    side = SideThreads("test-side")
    try:
        with pytest.raises(ValueError, match="not a face"):
            side.run([failing, slow])
        assert finished.is_set()
        with pytest.raises(ValueError, match="not a face"):
            side.run([slow, failing])
    finally:
        side.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("test-side")]
