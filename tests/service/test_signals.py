"""SignalStop: the handler flags and wakes, the main loop sees it; no lock is taken in the handler."""

from __future__ import annotations

import os
import signal
import threading
import time

from edgeface.service.signals import SignalStop


def test_a_signal_wakes_the_waiting_main_thread() -> None:
    stop = SignalStop()
    previous = signal.getsignal(signal.SIGUSR1)
    stop.install([signal.SIGUSR1])
    try:
        assert stop.wait(0.01) is False  # nothing yet: the timeout passes
        # From another thread, as systemd's SIGTERM arrives at any moment of the main loop.
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        while not stop.wait(30.0):
            assert time.monotonic() - started < 30.0
        assert (stop.requested, stop.signum) == (True, signal.SIGUSR1)
        assert stop.wait(30.0) is True  # stays requested; returns at once
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.close()


def test_many_signals_never_block_the_handler() -> None:
    stop = SignalStop()
    previous = signal.getsignal(signal.SIGUSR1)
    stop.install([signal.SIGUSR1])
    try:
        for _ in range(100_000 // 64):  # far more bytes than a pipe holds, never drained meanwhile
            for _ in range(64):
                stop._handle(signal.SIGUSR1, None)
        assert stop.wait(0) is True
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.close()
