"""Keeping a long-running process's native heap small and flat (glibc's malloc; a no-op elsewhere).

A reload tears down and rebuilds every per-run component on new threads. glibc gives each new
thread that allocates concurrently an arena of its own (up to 8 per core) and keeps freed arena
memory mapped, so RSS crept up by ~1 MB per reload until every arena existed (+22 MB over 20
reloads on 2 cores, with the models already kept). Two arenas are plenty for a handful of stage
threads that mostly run inside numpy and LiteRT, and kept RSS within +1 MB over 20 reloads.

glibc also raises its mmap threshold to the size of every large block it frees (up to 32 MB), and
its trim threshold to twice that: after one big photo (an enrollment, the bench's gallery) or one
1080p frame, up to 64 MB of freed heap stays resident for good. Both are pinned instead. Blocks of
8 MB and more (photos, 4K frames) get mappings of their own, returned when freed, while frames up to
1080p (6.2 MB) stay on the heap and cost no page faults per frame; the heap's top is given back
once 2 MB of it are free. A lower trim threshold cost CPU: each frame's temporaries were returned
and faulted in again (+1 point of a core on the crowd clip at 30 fps with the default 128 KiB).
Measured with ``edgeface bench``: 3 MB less resident on the door clip, 6-7 MB on the crowd clip,
the same CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

_LOGGER = logging.getLogger(__name__)

# mallopt(3) parameter numbers in glibc's <malloc.h>.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
ARENAS = 2
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 2 * 1024 * 1024


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name is not None else None


def tune_malloc() -> bool:
    """Cap glibc's malloc arenas and pin its thresholds (call before the models and threads); False without mallopt."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    settings = ((_M_ARENA_MAX, ARENAS), (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    ok = all([bool(mallopt(param, value)) for param, value in settings])
    _LOGGER.debug("malloc: %d arenas, mmap/trim thresholds %d/%d bytes: %s", ARENAS, MMAP_THRESHOLD, TRIM_THRESHOLD, ok)
    return ok


def release_memory() -> None:
    """Collect garbage and give the freed heap of a torn-down run back to the OS."""
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)
