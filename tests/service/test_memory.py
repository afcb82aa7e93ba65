"""service.memory on the real glibc allocator and kernel, each case in a fresh interpreter (both are process-wide)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeface.service.memory import _mappings
from tests.conftest import Broker, replay_folder

# A large block freed first (glibc then lifts its thresholds to that size), then 12 MB in 256 KiB
# blocks freed: how much of those 12 MB stays resident?
_SCRIPT = """
import re, sys
from edgeface.service.memory import tune_malloc

def rss_mb():
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmRSS:\\s+(\\d+)", fh.read()).group(1)) / 1024

if sys.argv[1] == "tuned" and not tune_malloc():
    sys.exit("no mallopt")
big = bytearray(20 * 1024 * 1024)
del big
before = rss_mb()
blocks = [bytearray(b"x" * (256 * 1024)) for _ in range(48)]
del blocks
print(rss_mb() - before)
"""


def _kept_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True, timeout=60)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux")
def test_tuned_malloc_returns_freed_heap_that_glibc_would_keep() -> None:
    # The control shows the behaviour the tuning exists for; without it the test could not fail.
    assert _kept_mb("default") > 8.0
    assert _kept_mb("tuned") < 2.0


# Start-up pages: a fresh interpreter imports OpenCV and numpy (their initialisation touches pages
# of code it never runs again), computes a reference result, releases, then computes it again.
_RELEASE_SCRIPT = """
import json
import cv2
import numpy as np
from edgeface.service.memory import _mappings, release_startup_pages

def totals():
    with open("/proc/self/smaps") as fh:
        maps = list(_mappings(fh.read()))
    files = [m for m in maps if m.path.startswith("/")]
    return {
        "clean_kb": sum(m.counters["Rss"] for m in files if m.clean_file_pages),
        # Relocated segments and anything written: these must survive the release untouched.
        "dirty_kb": sum(m.counters["Private_Dirty"] + m.counters.get("Anonymous", 0) for m in files),
    }

image = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
before_result = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
before = totals()
released = release_startup_pages()
after = totals()
after_result = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
ok, jpeg = cv2.imencode(".jpg", after_result)
print(json.dumps({
    "released_kb": released, "before": before, "after": after,
    "same": bool(np.array_equal(before_result, after_result)),
    "decodes": bool(ok and np.array_equal(cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape, after_result.shape)),
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise are Linux")
def test_release_startup_pages_drops_clean_library_pages_and_keeps_relocated_ones() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RELEASE_SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout)
    before, after = result["before"], result["after"]
    # OpenCV's and numpy's initialisation alone leave several MB of clean library pages resident.
    assert before["clean_kb"] > 8 * 1024
    assert result["released_kb"] >= before["clean_kb"] * 0.9
    # Released pages are gone from this process until it runs that code again.
    assert after["clean_kb"] < before["clean_kb"] * 0.3
    # Private dirty pages (the loader's relocations, copy-on-write writes) were left alone.
    assert abs(after["dirty_kb"] - before["dirty_kb"]) < 512
    # ... and the libraries still run, with the same results: their pages fault back in from the file.
    assert result["same"] and result["decodes"]


def test_smaps_parser_reads_each_mapping_and_its_counters() -> None:
    text = (
        "7f00a0000000-7f00a0200000 r-xp 00001000 08:01 1234  /usr/lib/lib with space.so\n"
        "Size:               2048 kB\nRss:                 512 kB\nPrivate_Dirty:         0 kB\n"
        "Shared_Dirty:          0 kB\nAnonymous:             0 kB\nVmFlags: rd ex mr mw me\n"
        "7f00a0200000-7f00a0204000 r--p 00201000 08:01 1234  /usr/lib/lib with space.so\n"
        "Rss:                  16 kB\nPrivate_Dirty:        16 kB\nAnonymous:            16 kB\n"
        "7f00a0300000-7f00a0400000 rw-p 00000000 00:00 0 \nRss:                 1024 kB\n"
        "7f00a0400000-7f00a0401000 r--s 00000000 00:05 7  /dev/dri/card0\nRss:                4 kB\n"
    )
    maps = list(_mappings(text))
    assert [(m.start, m.end, m.perms, m.path) for m in maps] == [
        (0x7F00A0000000, 0x7F00A0200000, "r-xp", "/usr/lib/lib with space.so"),
        (0x7F00A0200000, 0x7F00A0204000, "r--p", "/usr/lib/lib with space.so"),
        (0x7F00A0300000, 0x7F00A0400000, "rw-p", ""),
        (0x7F00A0400000, 0x7F00A0401000, "r--s", "/dev/dri/card0"),
    ]
    assert maps[0].counters == {"Size": 2048, "Rss": 512, "Private_Dirty": 0, "Shared_Dirty": 0, "Anonymous": 0}
    # Only the clean code pages qualify: not the relocated segment, anonymous memory or a device.
    assert [m.clean_file_pages for m in maps] == [True, False, False, False]


def test_the_daemon_and_its_cli_import_no_fleet_code_until_a_fleet_is_configured() -> None:
    # A fresh interpreter: this test process may hold the fleet modules already.
    script = (
        "import sys\n"
        "from edgeface.cli import _build_parser\n"
        "_build_parser()\n"
        "import edgeface.service.daemon\n"
        "print(sorted(m for m in sys.modules if m.startswith('edgeface.fleet')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps and madvise are Linux")
def test_the_daemon_releases_its_startup_pages_before_it_reports_ready(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker
) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text(
        f'[device]\nstate_dir = "{tmp_path}"\n'
        f'[source]\nuri = "{replay_folder(tmp_path, samples_dir, "obama.jpg")}"\nrealtime = true\nloop = true\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeface", "-v", "run", "--quiet", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    released: list[int] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        for line in proc.stderr:  # the daemon logs a line at least every status period: never blocks for long
            if (found := re.search(r"released (\d+) kB of clean file-backed pages", line)) is not None:
                released.append(int(found.group(1)))
            if " ready: device " in line or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    # Once, before READY, and worth it: OpenCV's, numpy's and LiteRT's start-up pages alone are tens of MB.
    assert len(released) == 1 and released[0] > 16 * 1024, released
