"""The broker the daemon talks to (configured, or embedded on loopback), its link, and the signed-command check."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import MqttConfig, Settings
from edgeface.errors import BrokerError
from edgeface.mqtt.broker import PROTOCOL as EMBEDDED_PROTOCOL
from edgeface.mqtt.broker import EmbeddedBroker
from edgeface.mqtt.durable import DurableOutbox
from edgeface.mqtt.link import CommandCallback, MqttLink
from edgeface.mqtt.nonces import SqliteNonces
from edgeface.mqtt.outbox import Outbox
from edgeface.mqtt.signing import DEFAULT_NONCE_CACHE, Verifier, load_keys
from edgeface.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the link and the fleet replicator connect, and with which MQTT version."""

    host: str
    port: int
    protocol: MQTTProtocolVersion


def start_broker(mqtt: MqttConfig, stack: contextlib.ExitStack) -> BrokerAddress:
    """The configured broker's address, or start the embedded one (stopped by ``stack``) and return its address."""
    if mqtt.host is not None:
        return BrokerAddress(mqtt.host, mqtt.port, MQTTProtocolVersion.MQTTv5)
    broker = _embedded_broker(mqtt.embedded_port)
    stack.callback(broker.stop)
    # amqtt speaks 3.1.1 only; command replies then go to reply/<request_id>.
    _LOGGER.info("no broker configured: embedded MQTT broker on 127.0.0.1:%d", broker.port)
    return BrokerAddress("127.0.0.1", broker.port, EMBEDDED_PROTOCOL)


def _embedded_broker(port: int) -> EmbeddedBroker:
    broker = EmbeddedBroker("127.0.0.1", port)
    try:
        broker.start()
    except BrokerError as exc:
        if port == 0:
            raise
        # Typically a system Mosquitto already owns 1883: the demo still runs, on a free port.
        _LOGGER.warning("%s; starting the embedded broker on a free port instead", exc)
        broker = EmbeddedBroker("127.0.0.1", 0)
        broker.start()
    return broker


def open_link(
    settings: Settings,
    topics: Topics,
    on_command: CommandCallback,
    stop: threading.Event,
    address: BrokerAddress,
    stack: contextlib.ExitStack,
) -> MqttLink:
    """The daemon's link to ``address`` (not connected yet), with the durable outbox when configured.

    ``stack`` stops the link, and closes the outbox after the link stopped using it.
    """
    mqtt = settings.mqtt
    outbox: Outbox | None = None
    if mqtt.outbox_durable:
        durable = DurableOutbox(
            settings.mqtt_state_path,
            max_messages=mqtt.outbox_size,
            max_bytes=mqtt.outbox_max_bytes,
            max_age_s=mqtt.outbox_max_age_s,
        )
        stack.callback(durable.close)
        outbox = durable
    link = MqttLink(
        mqtt,
        topics,
        settings.device.name,
        on_command,
        stop,
        host=address.host,
        port=address.port,
        protocol=address.protocol,
        outbox=outbox,
    )
    stack.callback(link.stop)
    return link


def open_verifier(settings: Settings, stack: contextlib.ExitStack) -> Verifier | None:
    """The signed-command check when ``security.require_signature`` is on; its nonce window lives in the
    state file, so neither a reload nor a restart reopens a captured command (closed by ``stack``)."""
    security = settings.security
    if not security.require_signature:
        return None
    nonces = SqliteNonces(settings.mqtt_state_path, DEFAULT_NONCE_CACHE)
    stack.callback(nonces.close)
    return Verifier(load_keys(security.keys_file), security.max_skew_s, nonces=nonces)
