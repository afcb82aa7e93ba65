"""Side threads for the model calls of one frame that do not depend on each other.

The embed stage pays, on the frame that decides, every model a face needs: the fused embedder's
components (dlib twice with its mirror, SFace) and the passive liveness pair. They are independent
and LiteRT releases the GIL while it invokes, so running them at once turns their sum into about
their longest (measured on the shared 2-core box: 20.5 -> 13.0 ms p50 for that set). Vision stays
free of threads: the stage hands the embedder :meth:`SideThreads.run` as its runner.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

from edgeface.data import FloatArray
from edgeface.vision.embed import ModelCall

T = TypeVar("T")

# One thread for the embedder's second component, one for the passive liveness check: the embed
# stage's own thread runs the first component. More would only queue on a Pi's four cores.
WORKERS = 2


class SideThreads:
    """A small pool of named threads (``<name>:<i>``), started on first use and joined by :meth:`close`."""

    def __init__(self, name: str, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on a side thread; the caller takes its result (or exception) from the future."""
        return self._pool.submit(fn)

    def run(self, calls: Sequence[ModelCall]) -> list[FloatArray]:
        """Every call's result in order: the first on this thread while the others run beside it."""
        if not calls:
            return []
        futures = [self._pool.submit(call) for call in calls[1:]]
        try:
            first = calls[0]()
        finally:
            # Never leave a call running behind an exception: the next frame would queue behind it.
            wait(futures)
        return [first, *(future.result() for future in futures)]

    def close(self) -> None:
        """Wait for running calls and end the threads."""
        self._pool.shutdown(wait=True)
