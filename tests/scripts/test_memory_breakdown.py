"""scripts/memory_breakdown.py: one row per thing the daemon loads, then its release, each measured in one process."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc/self/status (Linux)")
def test_breakdown_prints_a_growing_row_for_every_step() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "memory_breakdown.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line.split("|")[1:4] for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    names = [name.strip() for name, _, _ in rows]
    assert names[0] == "Python interpreter" and "landmarker (FaceMesh)" in names, names
    assert any(name.startswith("embedder (fused_dlib_sface_int8)") for name in names), names
    assert names[-2] == "command thread's full-range detector (at its first request)"
    assert names[-1] == "start-up pages released (as the daemon does before its frames flow)"
    resident = [float(total) for _, _, total in rows]
    added = [float(step) for _, step, _ in rows]
    assert all(b > a for a, b in itertools.pairwise(resident[:-1])), resident  # each loading step holds memory
    assert added[-1] < -10.0, added  # the release hands back tens of MB of library pages
    assert sum(added) == pytest.approx(resident[-1], abs=0.1 * len(rows))
