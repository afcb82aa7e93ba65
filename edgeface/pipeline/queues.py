"""Bounded hand-over queues and rolling stage statistics shared by the pipeline threads."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

# Samples behind each rolling p50/p95: ~10-30 s of frames at Pi frame rates, enough to be stable,
# short enough to show a slowdown within a status period.
STATS_WINDOW = 300
# Frames/s are measured over this many seconds of event timestamps.
RATE_WINDOW_S = 5.0
# How long a blocking (lossless) put waits before rechecking ``stop``.
_PUT_POLL_S = 0.1


class DropQueue(Generic[T]):
    """A bounded queue whose producer never blocks: on Full the oldest item is dropped and counted.

    ``lossless=True`` makes ``put`` wait for room instead (until ``stop``): used for a file replay
    that is not paced in real time, where every frame should be processed and results must not
    depend on how fast the machine is.
    """

    def __init__(self, name: str, maxsize: int, stop: threading.Event, *, lossless: bool = False) -> None:
        self.name = name
        self.maxsize = maxsize
        self.lossless = lossless
        self._stop = stop
        self._queue: queue.Queue[T] = queue.Queue(maxsize)
        self._drops = 0
        self._lock = threading.Lock()

    def put(self, item: T) -> None:
        """Enqueue; drop the oldest item when full (or wait for room when lossless)."""
        if self.lossless:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_PUT_POLL_S)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    continue  # the consumer took one meanwhile; there is room now
                with self._lock:
                    self._drops += 1

    def get(self, timeout: float) -> T:
        """Dequeue, waiting up to ``timeout`` seconds; raises ``queue.Empty``."""
        return self._queue.get(timeout=timeout)

    @property
    def drops(self) -> int:
        with self._lock:
            return self._drops

    def qsize(self) -> int:
        return self._queue.qsize()


class RollingStats:
    """Rolling p50/p95 of the last ``STATS_WINDOW`` durations in milliseconds; thread-safe."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(ms)
            self.count += 1

    def summary(self) -> dict[str, float]:
        """{'p50_ms', 'p95_ms'} (0 before the first sample)."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        if values.size == 0:
            return {"p50_ms": 0.0, "p95_ms": 0.0}
        p50, p95 = np.percentile(values, [50, 95])
        return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


class RateMeter:
    """Events per second over the last ``RATE_WINDOW_S`` seconds; thread-safe."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(t)
            self.count += 1
            self._trim(t)

    def rate(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._trim(t)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
