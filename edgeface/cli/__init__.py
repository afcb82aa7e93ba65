"""Command line: ``edgeface VERB ...``. Each verb group lives in its own module and registers itself.

Logging is configured here and nowhere else. Errors derived from EdgefaceError end the process
with their exit code and a one-line message; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from edgeface import __version__
from edgeface.errors import EdgefaceError
from edgeface.logs import setup_logging

Handler = Callable[[argparse.Namespace], int]


def _build_parser() -> argparse.ArgumentParser:
    # Imported here so `edgeface --help` does not pay for numpy/cv2 imports of every verb.
    from edgeface.cli import bench, cmd, config_cmd, db, fleet, liveness, run, still

    parser = argparse.ArgumentParser(prog="edgeface", description="Offline face recognition daemon for edge devices.")
    parser.add_argument("--version", action="version", version=f"edgeface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in (run, db, cmd, fleet, bench, config_cmd, liveness, still):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    # Set before the verbs import numpy. The daemon's matrix products are one query at a time; an
    # OpenBLAS worker thread only spins between them: at 30 fps it took the process from 35 % to
    # 119 % of a core with identical fps and latency (docs/benchmarks.md).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser = _build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    verb = next((i for i, word in enumerate(words) if not word.startswith("-")), len(words))
    if words[verb : verb + 2] == ["eval", "liveness"]:
        from edgeface.cli.liveness import EVAL_VERB

        words[verb : verb + 2] = [EVAL_VERB]
    args = parser.parse_args(words)
    setup_logging("DEBUG" if args.verbose else getattr(args, "log_level", "INFO"), json_format=False)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgefaceError as exc:
        print(f"edgeface: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("interrupted")
        return 130
