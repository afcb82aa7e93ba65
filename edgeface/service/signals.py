"""Stop requests from signals, without a lock in the handler.

A Python signal handler runs in the main thread between two bytecodes -- possibly while that thread
is inside ``threading.Event.wait()`` holding the event's internal lock. ``Event.set()`` in the
handler then waits for that lock forever (observed: one SIGTERM in five froze an emulated ARM
board). So the handler only sets a plain attribute and writes one byte to a pipe; the main loop
sleeps in ``select`` on that pipe and turns the request into ``stop.set()`` itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterable
from types import FrameType


class SignalStop:
    """A self-pipe the signal handler writes to; ``wait`` sleeps until it is written or a timeout."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.requested = False  # written only by the handler; a bool store is atomic
        self.signum: int | None = None

    def install(self, signums: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Route these signals to this stop (call from the main thread)."""
        for signum in signums:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        self.signum = signum
        # Full pipe: a wake-up is already pending, which is all the byte is for.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until a signal arrives; True once one was requested."""
        if not self.requested:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 64):
                pass
        return self.requested

    def close(self) -> None:
        """Close the pipe (after the handlers were restored)."""
        os.close(self._read)
        os.close(self._write)
