"""Building a running replicator from the settings (the daemon's ``_start_fleet`` step calls this)."""

from __future__ import annotations

from collections.abc import Callable

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import Settings
from edgeface.config_sources import read_secret_file
from edgeface.errors import ConfigError
from edgeface.fleet.client import FleetClient
from edgeface.fleet.records import FleetKey
from edgeface.fleet.replicator import Replicator
from edgeface.matching.db import FaceDatabase
from edgeface.mqtt.topics import Topics


def load_key(settings: Settings) -> FleetKey:
    """The fleet key from ``fleet.key_file`` (mode 0600); ConfigError naming the file otherwise."""
    path = settings.fleet.key_file
    if path is None:
        raise ConfigError("fleet.enabled needs fleet.key_file")
    try:
        return FleetKey(read_secret_file(path, "fleet key").encode("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"fleet key file {path}: {exc}") from exc


def start_replicator(
    settings: Settings,
    db: FaceDatabase,
    *,
    host: str,
    port: int,
    protocol: MQTTProtocolVersion,
    on_applied: Callable[[], None] = lambda: None,
) -> Replicator:
    """Connect to the broker at ``host:port`` and replicate ``db`` with the fleet; ``stop()`` it.

    ``on_applied`` runs on the replicator's thread after records of other devices were stored."""
    fleet = settings.fleet
    topics = Topics(settings.mqtt.base_topic, settings.device.id)
    replicator = Replicator(
        db,
        load_key(settings),
        topics,
        fleet.id,
        settings.device.state_dir / f"fleet-{fleet.id}.json",
        horizon_s=fleet.tombstone_horizon_s,
        max_record_bytes=fleet.max_record_bytes,
        on_applied=on_applied,
    )
    client = FleetClient(
        settings.mqtt,
        topics,
        fleet.id,
        host=host,
        port=port,
        protocol=protocol,
        on_record=replicator.mailbox.record,
        on_synced=replicator.mailbox.synced,
        on_connection=replicator.mailbox.connection,
        on_acknowledged=replicator.mailbox.acknowledged,
    )
    replicator.start(client)
    return replicator
