"""The replication connection: one paho client for the fleet's retained records.

Its own connection rather than the command link's: a joining device receives the whole gallery at
once (10,000 retained records in docs/fleet.md), which must not queue behind or delay commands and
events. It shares the link's settings (host, TLS, credentials) and its reconnect policy.

Catch-up: every connection starts clean, so the broker sends every retained record again. After the
subscriptions are acknowledged the client publishes a marker on its own ``sync/<device>`` topic; the
broker delivers it after the retained records it queued at subscription, so its arrival means
"caught up" (``on_synced``). Callbacks run on paho's thread and must return quickly.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgeface.config import MqttConfig
from edgeface.config_sources import read_secret_file
from edgeface.mqtt.link import RECONNECT_MIN_S, guard, tls_context
from edgeface.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)
QOS = 1


class FleetClient:
    """Subscribes to a fleet's person records, publishes retained ones; thread-safe ``publish``."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        fleet_id: str,
        *,
        host: str,
        port: int,
        protocol: MQTTProtocolVersion,
        on_record: Callable[[str, bytes], None],
        on_synced: Callable[[], None],
        on_connection: Callable[[bool], None],
        on_acknowledged: Callable[[int], None],
    ) -> None:
        self._cfg = cfg
        self._topics = topics
        self._fleet_id = fleet_id
        self.host, self.port = host, port
        self._protocol = protocol
        self._on_record = on_record
        self._on_synced = on_synced
        self._on_connection = on_connection
        self._on_acknowledged = on_acknowledged
        self._lock = threading.Lock()
        self._connected = False
        self._marker = b""
        self._pending_subs: set[int] = set()
        self._client: mqtt.Client | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def start(self) -> None:
        """Connect in the background (paho's thread retries with backoff)."""
        cfg = self._cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.client_id or 'edgeface-' + self._topics.device_id}-fleet",
            protocol=self._protocol,
            transport=cfg.transport,
        )
        client.reconnect_delay_set(RECONNECT_MIN_S, max(RECONNECT_MIN_S, round(cfg.reconnect_max_s)))
        password = None
        if cfg.password_file is not None:
            password = read_secret_file(cfg.password_file, "MQTT password")
        elif cfg.password is not None:
            password = cfg.password.get_secret_value()
        if cfg.username is not None or password is not None:
            client.username_pw_set(cfg.username, password)
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
            client.tls_insecure_set(cfg.tls.insecure)
        client.on_connect = guard(self._handle_connect, "fleet")
        client.on_disconnect = guard(self._handle_disconnect, "fleet")
        client.on_subscribe = guard(self._handle_subscribe, "fleet")
        client.on_message = guard(self._handle_message, "fleet")
        client.on_publish = guard(lambda _c, _u, mid, _reason, _p: self._on_acknowledged(mid), "fleet")
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            client.connect_async(self.host, self.port, cfg.keepalive_s, clean_start=True)
        else:
            client.connect_async(self.host, self.port, cfg.keepalive_s)
        self._client = client
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        client.disconnect()
        client.loop_stop()

    def resend_marker(self) -> None:
        """Publish the catch-up marker again (the broker may have dropped the first one, see replicator)."""
        client = self._client
        with self._lock:
            marker, ready = self._marker, self._connected and not self._pending_subs
        if client is not None and ready:
            client.publish(self._topics.fleet_sync(self._fleet_id), marker, qos=QOS, retain=False)

    def publish(self, topic: str, payload: bytes) -> int | None:
        """Publish a retained QoS 1 message; its mid (acknowledged later), None when not connected."""
        client = self._client
        if client is None or not self.connected:
            return None
        info = client.publish(topic, payload, qos=QOS, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    # --- paho callbacks -----------------------------------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            _LOGGER.warning("fleet: broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        with self._lock:
            self._connected = True
            self._marker = secrets.token_hex(8).encode()
        records = self._topics.fleet_persons_filter(self._fleet_id)
        # Our own records come back too (no noLocal): at a restart they tell which persons the broker
        # already holds in their current version, so they need not be published again.
        _, mid = client.subscribe(records, qos=QOS)
        _, sync_mid = client.subscribe(self._topics.fleet_sync(self._fleet_id), qos=QOS)
        with self._lock:
            self._pending_subs = {m for m in (mid, sync_mid) if m is not None}
        _LOGGER.info("fleet %s: connected to %s:%d", self._fleet_id, self.host, self.port)
        self._on_connection(True)

    def _handle_subscribe(
        self, client: mqtt.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            _LOGGER.warning("fleet: broker refused a subscription (%s); check the ACL for edgeface/fleet/#", reasons)
            return
        with self._lock:
            self._pending_subs.discard(mid)
            done, marker = not self._pending_subs, self._marker
        if done:
            client.publish(self._topics.fleet_sync(self._fleet_id), marker, qos=QOS, retain=False)

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was and not self._closing:
            _LOGGER.warning("fleet %s: lost the broker (%s); reconnecting", self._fleet_id, reason)
        if was:
            self._on_connection(False)

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._topics.fleet_sync(self._fleet_id):
            with self._lock:
                mine = bytes(message.payload) == self._marker
            if mine:
                self._on_synced()
            return
        person_id = self._topics.fleet_person_of(self._fleet_id, message.topic)
        if person_id is not None:
            self._on_record(person_id, bytes(message.payload))
