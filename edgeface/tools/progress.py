"""A one-line progress bar on stderr for the bench and eval commands (CLI output, not logging)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Redrawing more often than this costs terminal time and shows nothing new to a human.
REDRAW_S = 0.2
BAR_WIDTH = 28


class Progress:
    """``update(done)`` redraws ``label [#####.....] done/total extra``; ``close()`` ends the line."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.total = total
        self._stream = stream if stream is not None else sys.stderr
        self._last = 0.0
        self._started = time.perf_counter()
        self._drawn = False
        # Erase-to-end-of-line only on a terminal; a redirected stream gets plain text.
        self._clear = "\x1b[K" if self._stream.isatty() else ""

    def update(self, done: int, extra: str = "", *, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < REDRAW_S):
            return
        self._last = now
        if self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // self.total)
            bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total}"
        else:
            bar = f"{done}"
        elapsed = now - self._started
        self._stream.write(f"\r{self.label} {bar} {elapsed:5.1f}s {extra}".rstrip() + self._clear)
        self._stream.flush()
        self._drawn = True

    def close(self, done: int, extra: str = "") -> None:
        self.update(done, extra, force=True)
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
