"""Resolve or install edgeface's runtime dependencies for another platform, from wheels only.

A Raspberry Pi or a Jetson must install edgeface without a compiler, so every runtime dependency needs a
wheel for its CPU and Python, or must be a pure-Python source distribution (built here into a
``py3-none-any`` wheel, exactly what pip does on the device). pip is told the platform tags the
device's pip accepts: manylinux_2_17 .. manylinux_2_<glibc> and linux for the architecture. Listing
them all matters: ai-edge-litert >= 2.0 ships only manylinux_2_27 aarch64 wheels, and a resolver given
only manylinux2014 silently falls back to ai-edge-litert 1.4.

    python scripts/wheels.py check --python 3.11 3.12 --arch aarch64 --glibc 2.35
    python scripts/wheels.py install --python 3.11 --arch aarch64 --glibc 2.36 --target DIR --wheelhouse DIR

The requirements are ``[project] dependencies`` in pyproject.toml, with scripts/constraints.txt, plus
scripts/nodeps.txt (installed without their declared dependencies, as scripts/setup.sh does).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "scripts" / "constraints.txt"
NODEPS = REPO / "scripts" / "nodeps.txt"
OLDEST_MANYLINUX = 17  # manylinux2014: the oldest tag any of our dependencies still ships
MAX_SDIST_BUILDS = 8  # pure-Python sdists built locally in one resolution; more means something is wrong
PIP_TIMEOUT_S = 900
_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
_PURE = re.compile(r"-py[23](\.py3)?-none-any\.whl$")


class ResolveError(Exception):
    """A requirement has no usable wheel for the platform; the message names it."""


@dataclass(frozen=True)
class Target:
    python: str  # "3.11"
    arch: str  # "aarch64"
    glibc: str  # "2.36"

    @property
    def label(self) -> str:
        return f"cp{self.python.replace('.', '')} {self.arch} glibc {self.glibc}"

    def pip_args(self) -> list[str]:
        """--platform/--python-version/--implementation/--abi options for pip."""
        major, minor = (int(v) for v in self.glibc.split("."))
        if major != 2 or minor < OLDEST_MANYLINUX:
            raise ValueError(f"glibc {self.glibc}: expected 2.{OLDEST_MANYLINUX} or newer")
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(minor, OLDEST_MANYLINUX - 1, -1)]
        tags += [f"manylinux2014_{self.arch}", f"linux_{self.arch}"]
        cp = "cp" + self.python.replace(".", "")
        args = [f"--platform={tag}" for tag in tags]
        return [*args, f"--python-version={self.python}", "--implementation=cp", f"--abi={cp}", "--abi=abi3"]


def runtime_requirements() -> list[str]:
    """pyproject.toml's ``[project] dependencies``."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def nodeps_requirements() -> list[str]:
    """scripts/nodeps.txt: packages installed without their declared dependencies."""
    lines = NODEPS.read_text(encoding="utf-8").splitlines() if NODEPS.is_file() else []
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _host_wheel(requirement: str) -> str | None:
    """The wheel this machine's pip would take for the requirement, or None when there is only a source."""
    with tempfile.TemporaryDirectory(prefix="edgeface-host-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--no-deps"]
        cmd += ["--only-binary=:all:", f"--report={report}", requirement]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if proc.returncode != 0:
            return None
        items = json.loads(report.read_text(encoding="utf-8"))["install"]
        return str(items[0]["download_info"]["url"].rsplit("/", 1)[-1]) if items else None


def _build_pure_wheel(requirement: str, wheelhouse: Path, target: Target) -> str:
    """Build an sdist-only requirement into ``wheelhouse``; ResolveError unless it is pure Python."""
    # A package with compiled wheels for other platforms is not pure Python: say so at once rather
    # than spend minutes compiling its source here (numpy for armv7, say).
    host = _host_wheel(requirement)
    if host is not None and not _PURE.search(host):
        raise ResolveError(
            f"{target.label}: no wheel for {requirement} (it ships compiled wheels for other platforms, e.g. {host}): "
            "a device would need a compiler"
        )
    with tempfile.TemporaryDirectory(prefix="edgeface-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-binary=:all:", "-w", tmp]
        proc = subprocess.run([*cmd, requirement], check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if proc.returncode != 0:
            raise ResolveError(
                f"{target.label}: {requirement} has no wheel and its source does not build: {proc.stderr[-800:]}"
            )
        built = sorted(Path(tmp).glob("*.whl"))
        if len(built) != 1 or not _PURE.search(built[0].name):
            names = ", ".join(p.name for p in built)
            raise ResolveError(
                f"{target.label}: {requirement} has no wheel for this platform and its source builds a "
                f"platform wheel ({names}): a device would need a compiler"
            )
        wheelhouse.mkdir(parents=True, exist_ok=True)
        built[0].replace(wheelhouse / built[0].name)
        return built[0].name


def _pip_install(
    target: Target, requirements: list[str], wheelhouse: Path, extra: list[str], *, no_deps: bool = False
) -> None:
    """``pip install`` for the target platform, building pure-Python sdists into the wheelhouse as needed."""
    for _ in range(MAX_SDIST_BUILDS + 1):
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--ignore-installed", "--only-binary=:all:"]
        cmd += [*target.pip_args(), f"--find-links={wheelhouse}", "-c", str(CONSTRAINTS), *extra]
        if no_deps:
            cmd.append("--no-deps")
        proc = subprocess.run([*cmd, *requirements], check=False, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if proc.returncode == 0:
            return
        missing = _NO_MATCH.findall(proc.stderr)
        if not missing:
            raise ResolveError(f"{target.label}: pip failed: {proc.stderr.strip()[-1500:]}")
        built = _build_pure_wheel(missing[0], wheelhouse, target)
        print(f"wheels: {target.label}: {missing[0]} has only a source distribution; built {built} (pure Python)")
    raise ResolveError(f"{target.label}: more than {MAX_SDIST_BUILDS} source-only requirements")


def resolve(target: Target, wheelhouse: Path) -> list[tuple[str, str, str]]:
    """(name, version, file) of every distribution pip would install on the target, or ResolveError."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeface-resolve-") as tmp:
        for reqs, no_deps in ((runtime_requirements(), False), (nodeps_requirements(), True)):
            if not reqs:
                continue
            report = Path(tmp) / "report.json"
            extra = ["--dry-run", f"--report={report}", f"--target={tmp}/site"]
            _pip_install(target, reqs, wheelhouse, extra, no_deps=no_deps)
            for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
                url = item["download_info"]["url"]
                rows.append((item["metadata"]["name"], item["metadata"]["version"], url.rsplit("/", 1)[-1]))
    return rows


def install(target: Target, site: Path, wheelhouse: Path) -> None:
    """Install the runtime requirements for the target platform into ``site`` (a --target directory)."""
    _pip_install(target, runtime_requirements(), wheelhouse, [f"--target={site}"])
    if nodeps := nodeps_requirements():
        _pip_install(target, nodeps, wheelhouse, [f"--target={site}"], no_deps=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "install"):
        p = sub.add_parser(name)
        p.add_argument("--python", nargs="+" if name == "check" else None, required=True)
        p.add_argument("--arch", default="aarch64")
        p.add_argument("--glibc", default="2.36")
        p.add_argument("--wheelhouse", type=Path, default=Path(tempfile.gettempdir()) / "edgeface-wheelhouse")
        if name == "install":
            p.add_argument("--target", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(Target(args.python, args.arch, args.glibc), args.target, args.wheelhouse)
            return 0
        for python in args.python:
            target = Target(python, args.arch, args.glibc)
            rows = resolve(target, args.wheelhouse)
            print(f"wheels: {target.label}: {len(rows)} distributions resolve from wheels:")
            for dist, version, file in sorted(rows, key=lambda r: r[0].lower()):
                print(f"wheels:   {dist}=={version}  {file}")
    except ResolveError as exc:
        print(f"wheels: FAILED {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
