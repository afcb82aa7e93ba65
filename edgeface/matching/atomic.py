"""Crash-safe file replacement and an inter-process lock, shared by the database and the unknowns spool.

A replacement is: write a temp file in the target's directory, fsync it, ``os.replace`` it over
the target, fsync the directory. POSIX rename is atomic, so a reader (or a crash) sees the old or
the new file, never a mix; the fsyncs make the new content survive a power cut once we return.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TMP_MARKER = ".tmp-"
# Polling rather than a blocking flock() so a wedged writer turns into an error the user can read
# instead of a hung daemon thread; 10 ms keeps the added latency of a contended lock negligible.
_LOCK_POLL_S = 0.01


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(target: Path) -> Path:
    """A fresh hidden temp name next to ``target`` (same filesystem, so the rename is atomic)."""
    return target.with_name(f".{target.name}{TMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")


def write_temp(target: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write and fsync a temp file beside ``target``; returns its path (removed again on failure)."""
    tmp = temp_path(target)
    # Owner-only from the first byte (faces are personal data), whatever the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit_temp(tmp: Path, target: Path) -> None:
    """Rename a fsynced temp file over ``target`` and make the rename durable."""
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_atomic(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``target`` with what ``write`` produces, atomically and durably."""
    commit_temp(write_temp(target, write), target)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """``write_atomic`` for a ready byte string."""

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    write_atomic(target, write)


def remove_stale_temps(target: Path) -> int:
    """Delete temp files a killed writer left beside ``target``; call only while holding its lock."""
    removed = 0
    for stale in target.parent.glob(f".{target.name}{TMP_MARKER}*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed += 1
    return removed


class LockTimeoutError(Exception):
    """Raised by ``FileLock`` when another holder keeps the lock past the timeout."""


class FileLock:
    """Exclusive ``flock`` on a lock file; serialises writers across processes.

    flock locks belong to an open file description, so two instances in one process exclude each
    other too. The kernel drops the lock when its holder dies, so a kill -9 never leaves it stuck.
    """

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block; raises ``LockTimeoutError`` after ``timeout_s``."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeoutError(
                            f"{self.path} held by another process for {self.timeout_s:.0f}s"
                        ) from exc
                    time.sleep(_LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
