"""The device's SQLite state file (``<state_dir>/mqtt.sqlite3``): the durable outbox and the nonce window.

SQLite from the standard library: WAL journal with ``synchronous=FULL``, so a committed transaction
survives a power cut and a reader never sees a torn write; the file is created 0600 in a 0700
directory. Several connections (the outbox's, the verifier's) may share the file.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

from edgeface.errors import StorageError, storage_error

_LOGGER = logging.getLogger(__name__)

FILE_NAME = "mqtt.sqlite3"
# A second connection waits this long for another's write lock instead of failing at once.
BUSY_TIMEOUT_S = 5.0


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating 0600) the store at ``path`` with WAL and full sync; StorageError naming the path."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # Created by us with owner-only permissions before SQLite opens it.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except OSError as exc:
        raise storage_error(exc, path, "cannot create the MQTT state file") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"MQTT state file {path}: cannot open: {exc}", path) from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_full(exc):
            raise StorageError(f"MQTT state file {path}: no space left on the device", path) from exc
        return _replace_corrupt(path, exc)
    return conn


def _replace_corrupt(path: Path, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
    """A file that is not a database (not one of ours, or destroyed): keep it aside, start empty."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    _LOGGER.warning("MQTT state file %s is unreadable (%s); moved to %s, starting empty", path, exc, aside)
    try:
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    except OSError as move_exc:
        raise storage_error(move_exc, path, "cannot move aside the unreadable MQTT state file") from move_exc
    return connect(path)


def is_full(exc: sqlite3.Error) -> bool:
    """True for SQLite's "disk full" (ENOSPC, a quota or a file-size limit)."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def storage_message(exc: sqlite3.Error, path: Path) -> str:
    """What failed, for a log line: disk full, read-only or the SQLite message."""
    if is_full(exc):
        return f"{path}: {os.strerror(errno.ENOSPC)}"
    return f"{path}: {exc}"
