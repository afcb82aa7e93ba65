"""``edgeface run``: the daemon."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from edgeface.config import load_settings
from edgeface.logs import setup_logging


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the recognition daemon (Ctrl-C / SIGTERM stops it)")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: embedded defaults + EDGEFACE_ env)")
    parser.add_argument("--source", help="override source.uri (camera index, device, URL, pipeline, file or folder)")
    parser.add_argument("--quiet", action="store_true", help="do not print published events on stdout")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from edgeface.service.daemon import Daemon
    from edgeface.service.memory import tune_malloc
    from edgeface.service.signals import SignalStop

    overrides: dict[str, dict[str, Any]] = {}
    if args.source:
        overrides["source"] = {"uri": args.source}
    settings = load_settings(args.config, **overrides)
    if not args.verbose:
        setup_logging(settings.logging.level, json_format=settings.logging.json_format)
    tune_malloc()  # before any stage thread exists: see service.memory
    stop = threading.Event()
    # The handlers only flag the stop (no lock, see service.signals); teardown runs in the main thread.
    signals = SignalStop()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signals.install(previous)
    echo = None if args.quiet else lambda line: print(line, flush=True)
    try:
        return Daemon(settings, config_path=args.config, stop=stop, echo=echo, signals=signals).run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signals.close()
