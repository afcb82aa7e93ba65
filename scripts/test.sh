#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian / Ubuntu / Raspberry Pi OS machine
# (venv with the dev, mediapipe-oracle and dlib-reference extras; the Mosquitto broker), then run
# lint, type checks and the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
    echo "test: installing mosquitto with apt" >&2
    sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_ apt-get install -y -qq mosquitto >/dev/null
fi
scripts/setup.sh dev,mediapipe,reference
echo "== ruff"; .venv/bin/ruff check edgeface tests scripts
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -q "$@"
