"""Resident memory (VmRSS) after each thing the daemon loads, in the order it loads them.

    python scripts/memory_breakdown.py [--config FILE]

Run it in a venv with only the runtime dependencies (no dev or models extras) for the figures in
docs/benchmarks.md: every step is measured in this one process, so each row is what that step adds
on top of the rows above it (a model's row includes the runtime's pages it is the first to touch).
The last row hands back the clean library pages that only start-up ran (``service.memory``); the
code a running pipeline needs faults back in from there (about +25 MB in the daemon).
Linux only (``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """This process's resident set size, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="TOML settings (default: the built-in defaults + EDGEFACE_ env)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, float]] = [("Python interpreter", rss_mb())]
    kept: list[Any] = []  # every loaded model stays loaded, as in the daemon

    def step(name: str, action: Callable[[], Any]) -> None:
        kept.append(action())
        rows.append((name, rss_mb()))

    step("import numpy", lambda: importlib.import_module("numpy"))
    step("import cv2 (OpenCV with FFmpeg)", lambda: importlib.import_module("cv2"))
    from edgeface.config import load_settings

    settings = load_settings(args.config)
    rows.append(("import pydantic, load the settings", rss_mb()))
    step("import ai_edge_litert", lambda: importlib.import_module("ai_edge_litert.interpreter"))
    daemon = "edgeface.service.daemon"
    step("import the daemon (paho, asyncio, watchdog, sqlite3)", lambda: importlib.import_module(daemon))

    from edgeface.liveness.passive import open_passive
    from edgeface.liveness.policy import uses_passive
    from edgeface.matching.enroll import enrollment_vision
    from edgeface.service.memory import release_startup_pages, tune_malloc
    from edgeface.vision.backends import create_landmarker, detector_for
    from edgeface.vision.fused import create_embedder

    tune_malloc()
    vision = settings.vision

    step(f"detector ({vision.detector} range)", lambda: detector_for(vision))
    step("landmarker (FaceMesh)", lambda: create_landmarker(vision.backend, vision.models_dir, vision.threads))
    step(f"embedder ({vision.embedder})", lambda: create_embedder(vision.models_dir, vision.embedder, vision.threads))
    if uses_passive(settings.liveness.mode):
        models = " + ".join(settings.liveness.passive_models)
        step(f"passive liveness ({models})", lambda: open_passive(settings.liveness, vision))
    step("command thread's full-range detector (at its first request)", lambda: detector_for(enrollment_vision(vision)))
    step("start-up pages released (as the daemon does before its frames flow)", release_startup_pages)

    print("| step | adds MB | resident MB |")
    print("|---|---:|---:|")
    previous = 0.0
    for name, value in rows:
        print(f"| {name} | {value - previous:+.1f} | {value:.1f} |")
        previous = value
    return 0


if __name__ == "__main__":
    sys.exit(main())
