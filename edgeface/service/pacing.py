"""Pacing of on-demand work so that it leaves the camera pipeline its share of the CPU."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Longest pause before one request: a burst of slow requests is spread out, never held for long.
MAX_PACE_S = 1.0


class Pacer:
    """Keeps a stream of requests to at most ``share`` of wall-clock time.

    After a request that kept the worker busy for ``t``, the next one starts no sooner than
    ``t * (1 / share - 1)`` later. The camera pipeline runs on the same few cores; its own
    interpreters keep requests from touching its models, and this keeps them from taking its CPU.
    """

    def __init__(
        self,
        share: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._idle_per_busy = 1.0 / share - 1.0
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = 0.0

    @contextmanager
    def turn(self) -> Iterator[float]:
        """Wait for this request's turn; yields the seconds waited."""
        delay = min(MAX_PACE_S, self._next - self._monotonic())
        if delay > 0:
            self._sleep(delay)
        started = self._monotonic()
        try:
            yield max(0.0, delay)
        finally:
            ended = self._monotonic()
            self._next = ended + (ended - started) * self._idle_per_busy
