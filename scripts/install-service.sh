#!/usr/bin/env bash
# Install edgeface as a systemd service: /opt/edgeface (code + venv), an `edgeface` system user in
# the `video` group, /etc/edgeface/edgeface.toml, state in /var/lib/edgeface (StateDirectory=).
# Run as root from a checkout: sudo scripts/install-service.sh
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "install-service: run as root (sudo)" >&2; exit 1; }
src="$(cd "$(dirname "$0")/.." && pwd)"
id edgeface >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgeface --shell /usr/sbin/nologin edgeface
usermod -a -G video edgeface
if [ "$src" != /opt/edgeface ]; then
    mkdir -p /opt/edgeface
    cp -a "$src"/{edgeface,models,config,scripts,systemd,pyproject.toml,README.md} /opt/edgeface/
fi
cd /opt/edgeface
EDGEFACE_SAMPLES_DIR=/opt/edgeface/samples scripts/setup.sh
install -d -m 0755 /etc/edgeface
[ -f /etc/edgeface/edgeface.toml ] || install -m 0644 config/edgeface.example.toml /etc/edgeface/edgeface.toml
# Secrets (EDGEFACE_MQTT__PASSWORD=..., EDGEFACE_COMMAND_KEYS=...) go here, readable by root only.
[ -f /etc/edgeface/secrets.env ] || install -m 0600 /dev/null /etc/edgeface/secrets.env
.venv/bin/edgeface config check /etc/edgeface/edgeface.toml
install -m 0644 systemd/edgeface.service /etc/systemd/system/edgeface.service
systemctl daemon-reload
systemctl enable --now edgeface
systemctl --no-pager status edgeface || true
