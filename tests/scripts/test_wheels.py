"""The lighter install and the platform tags used for the aarch64 resolution."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires, version

from tests.scripts.conftest import REPO, load_script

wheels = load_script("wheels")

# amqtt's declared dependencies that the embedded broker never imports (its command-line tools and
# the $SYS statistics plugin): scripts/nodeps.txt installs amqtt without them.
AMQTT_UNUSED = {"typer", "psutil"}
_BLOCKED = ("typer", "rich", "pygments", "psutil", "markdown_it", "shellingham")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_platform_tags_include_every_manylinux_up_to_the_device_glibc() -> None:
    args = wheels.Target("3.12", "aarch64", "2.36").pip_args()
    platforms = [a.split("=", 1)[1] for a in args if a.startswith("--platform=")]
    # ai-edge-litert >= 2.0 has only manylinux_2_27 aarch64 wheels: without it pip picks 1.4.0.
    assert "manylinux_2_27_aarch64" in platforms
    assert platforms[0] == "manylinux_2_36_aarch64"
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"} <= set(platforms)
    assert "--abi=cp312" in args and "--python-version=3.12" in args


def test_amqtt_pin_and_its_run_time_dependencies_are_declared() -> None:
    pins = dict(line.split("==") for line in wheels.nodeps_requirements())
    assert pins["amqtt"] == version("amqtt"), "scripts/setup.sh installs amqtt from scripts/nodeps.txt"
    declared = {_name(r) for r in wheels.runtime_requirements()}
    needed = {_name(r) for r in requires("amqtt") or [] if "extra ==" not in r} - AMQTT_UNUSED
    assert needed <= declared, f"amqtt {version('amqtt')} needs {needed - declared}: add them to pyproject.toml"


def test_embedded_broker_works_without_amqtt_command_line_dependencies() -> None:
    # A fresh interpreter in which the modules amqtt's CLI and $SYS plugin need cannot be imported,
    # whether or not they happen to be installed here.
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {_BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(REPO / "scripts")!r})
import arm64_probe
print("round trip", arm64_probe._broker_round_trip())
print("loaded", sorted(m for m in sys.modules if m.split(".")[0] in {_BLOCKED!r}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "round trip" in proc.stdout and "loaded []" in proc.stdout
