"""Which broker the daemon talks to: the configured one, or an embedded broker on loopback when none is."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import MqttConfig
from edgeface.errors import BrokerError
from edgeface.mqtt.broker import PROTOCOL as EMBEDDED_PROTOCOL
from edgeface.mqtt.broker import EmbeddedBroker

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
