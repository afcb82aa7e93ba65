#!/usr/bin/env bash
# Set up edgeface in ./.venv on Debian / Ubuntu / Raspberry Pi OS (bookworm or newer).
# Usage: scripts/setup.sh [extra,...]   e.g. scripts/setup.sh dev,mediapipe,reference
# PYTHON=python3.11 picks the interpreter when the system python3 is older (Jetson's Ubuntu 22.04).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing ${missing[*]} with apt" >&2
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
}

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: edgeface needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=python3.11" >&2
    exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install "$(basename "$python")-venv"  # python3-venv, or python3.11-venv
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e "$spec"
# Packages whose declared dependencies include what edgeface never uses (why: scripts/nodeps.txt).
.venv/bin/python -m pip install --quiet --no-deps -c scripts/constraints.txt -r scripts/nodeps.txt
# Real sample photos (pinned, checksummed) for the replay source used when no camera is present.
.venv/bin/python -c 'from edgeface.samples import ensure_samples; print("setup: sample photos in", ensure_samples())'
