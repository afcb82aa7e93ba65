"""Dropping a range of this process's pages: the one binding of ``madvise(MADV_DONTNEED)`` (Linux only).

Used for read-only file mappings whose pages the process no longer reads (a model file after XNNPACK
packed its weights, library code only start-up ran): the kernel then reads them back from the page
cache at the next access, so nothing is lost. The caller decides which ranges are safe.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import os
import sys
from typing import Any

_LOGGER = logging.getLogger(__name__)


@functools.cache
def _madvise() -> tuple[Any, int] | None:
    """libc's madvise and MADV_DONTNEED, or None off Linux or where libc has no madvise."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if not sys.platform.startswith("linux") or advice is None:
        return None
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise, advice


def own_mappings(name: str) -> str | None:
    """The text of ``/proc/self/<name>`` (``maps`` or ``smaps``) where ``drop_pages`` can work; else None.

    None off Linux, without madvise, or when the file cannot be read: there is nothing to release then.
    """
    if _madvise() is None:
        return None
    try:
        with open(f"/proc/self/{name}", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def drop_pages(start: int, end: int, what: str) -> bool:
    """``madvise(MADV_DONTNEED)`` on ``[start, end)``; False (logged at debug, naming ``what``) when it fails."""
    binding = _madvise()
    if binding is None:
        return False
    madvise, advice = binding
    if madvise(start, end - start, advice) == 0:
        return True
    _LOGGER.debug("madvise on %s failed: %s", what, os.strerror(ctypes.get_errno()))
    return False
