"""Error hierarchy: every failure the user can act on is an EdgefaceError with an exit code.

Command errors additionally carry a stable ``code`` that is sent in MQTT replies, so clients can
branch on it without parsing messages.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Literal

ErrorCode = Literal[
    "bad_request",
    "not_found",
    "no_face",
    "multiple_faces",
    "low_quality",
    "conflict",
    "unauthorized",
    "too_large",
    "busy",
    "storage",
    "internal",
]


class EdgefaceError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with when this error ends a command."""

    exit_code = 1


class ConfigError(EdgefaceError):
    """The configuration file or environment is invalid."""

    exit_code = 2


class ModelError(EdgefaceError):
    """A model file is missing, corrupt or does not match its manifest entry."""

    exit_code = 3


class SourceError(EdgefaceError):
    """A frame source cannot be opened or stopped delivering frames."""

    exit_code = 4


class DatabaseError(EdgefaceError):
    """The embedding database cannot be read or written."""

    exit_code = 5


class StorageError(DatabaseError):
    """The disk refused a write (full, read-only, not permitted); ``path`` names what failed.

    Replies carry the ``storage`` code. Same exit code as any database failure (5): the unit's
    ``Restart=`` policy treats both alike, and the message says which path and why.
    """

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


# The errnos that mean "the storage refuses", as opposed to a bug or a corrupt file.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


def storage_error(exc: OSError, path: Path, what: str) -> EdgefaceError:
    """``StorageError`` for a refused write (disk full, read-only, permission), else ``DatabaseError``."""
    reason = exc.strerror or str(exc)
    message = f"{what} {path}: {reason}"
    if exc.errno in STORAGE_ERRNOS:
        return StorageError(message, path)
    return DatabaseError(message)


class BrokerError(EdgefaceError):
    """The MQTT broker cannot be reached or refused the connection."""

    exit_code = 6


class CommandError(EdgefaceError):
    """A command was refused; ``code`` is the stable machine-readable reason sent in replies."""

    exit_code = 7

    def __init__(self, code: ErrorCode, message: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        # Fields the reply carries beside ``error`` (e.g. ``face_detected: false`` with ``no_face``).
        self.extra: dict[str, object] = dict(extra or {})


class ImageError(EdgefaceError):
    """Bytes that are not a decodable image, or an image of an unusable shape."""

    exit_code = 8
