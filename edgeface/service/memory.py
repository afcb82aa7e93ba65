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

Once started, about 30 MB of the process's resident memory are clean pages of shared-library code
and read-only data that only start-up ran: each extension module's initialisation (OpenCV
registering its bindings, OpenSSL loading its providers, LiteRT preparing every kind of operator),
and FFmpeg trying every demuxer's probe on the first open. They stay mapped, and counted as
resident, until the kernel runs short of memory. ``release_startup_pages`` hands them back to the
page cache once the device is built, before its frames flow; the code the pipeline runs comes back
at its next use as minor faults (no disk read while the page cache holds it; measured: no change
in fps). This moves accounting, not memory: the kernel's figure of available memory does not move
(it counts the page cache as available either way), nor does systemd's ``MemoryCurrent`` (the
unit's cgroup is still charged for those cached pages until they are reclaimed); the anonymous
memory is untouched. What changes is the process's RSS (what ``ps``/``top`` and the OOM killer's
score see), which then holds its working set, and the released pages are reclaimed without
unmapping them from a live process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from edgeface.pages import drop_pages, own_mappings

_LOGGER = logging.getLogger(__name__)

# mallopt(3) parameter numbers in glibc's <malloc.h>.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1
ARENAS = 2
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 2 * 1024 * 1024
_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
_COUNTER = re.compile(r"^(\w+):\s+(\d+) kB$")


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


@dataclass(frozen=True, slots=True)
class _Mapping:
    """One line of /proc/self/smaps and the page counters below it (kB)."""

    start: int
    end: int
    perms: str
    path: str
    counters: dict[str, int]

    @property
    def clean_file_pages(self) -> bool:
        """Only clean pages of a file, none written or copied: dropping them loses nothing a fault cannot read back."""
        c = self.counters
        return (
            self.path.startswith("/")
            and not self.path.startswith("/dev/")  # device memory (GPU, camera buffers) is not page cache
            and "w" not in self.perms
            and c.get("Rss", 0) > 0
            # A relocated read-only segment (RELRO) or a copy-on-write page is private dirty or anonymous:
            # dropping it would bring back the file's bytes, not the ones the loader wrote.
            and c.get("Private_Dirty", 0) == 0
            and c.get("Shared_Dirty", 0) == 0
            and c.get("Anonymous", 0) == 0
        )


def _mappings(text: str) -> Iterator[_Mapping]:
    """The mappings of an smaps text, each with its ``kB`` counters."""
    head: list[str] | None = None
    counters: dict[str, int] = {}
    for line in text.splitlines():
        if _HEADER.match(line):
            if head is not None:
                yield _mapping(head, counters)
            head, counters = line.split(maxsplit=5), {}
        elif (counter := _COUNTER.match(line)) is not None:
            counters[counter.group(1)] = int(counter.group(2))
    if head is not None:
        yield _mapping(head, counters)


def _mapping(head: list[str], counters: dict[str, int]) -> _Mapping:
    # address perms offset dev inode pathname; the pathname may itself hold spaces.
    start, end = (int(part, 16) for part in head[0].split("-"))
    return _Mapping(start, end, head[1], head[5] if len(head) > 5 else "", counters)


def release_startup_pages() -> int:
    """Give this process's resident clean file-backed pages back to the page cache; kB released (0 off Linux).

    Call it from the thread that owns the models once start-up is over. No other thread may map or
    unmap files while it runs (close a model, load a shared library: the loader maps a library's
    writable segments over its first mapping), since ``madvise(MADV_DONTNEED)`` on a range that
    meanwhile held something else would discard that. Where the daemon and ``bench`` call it, the
    threads already running are the MQTT client's, the broker's and the idle command worker's.
    """
    smaps = own_mappings("smaps")
    if smaps is None:
        return 0
    released = 0
    for mapping in _mappings(smaps):
        if mapping.clean_file_pages and drop_pages(mapping.start, mapping.end, mapping.path):
            released += mapping.counters["Rss"]
    _LOGGER.debug("released %d kB of clean file-backed pages", released)
    return released
