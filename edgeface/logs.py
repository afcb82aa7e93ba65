"""Logging setup: plain lines for a terminal, one JSON object per line for journald/Loki."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Structured records: time, level, logger, message, plus any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str, *, json_format: bool) -> None:
    """Configure the root logger once; later calls replace the handler (config reload)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        fmt.converter = time.localtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_edgeface", False)]:
        root.removeHandler(old)
    handler._edgeface = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # paho and amqtt are chatty at INFO/DEBUG; their warnings still reach us.
    for noisy in ("amqtt", "transitions", "watchdog"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LastProblem(logging.Handler):
    """Remembers the newest WARNING-or-worse record, for the ``last_error`` field of the state document."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._last: dict[str, Any] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # A plain assignment of a new dict: readers on other threads see the old or the new one, whole.
        self._last = {
            "message": record.getMessage(),
            "level": record.levelname,
            "logger": record.name,
            "at": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="seconds"),
        }

    def last(self) -> dict[str, Any] | None:
        """``{message, level, logger, at}`` of the newest problem, or None."""
        return self._last
