"""The MQTT link: one paho client, its Last Will, reconnects, and a bounded outbox in front of it.

Threads: paho's own network thread (``loop_start``) runs every paho callback; ``delivery.Delivery``
owns the outbox and the sender thread that feeds paho in order. Callers of ``publish`` only append
to the outbox under a lock, so they never wait for the network or for paho's locks.

Why ``loop_start`` + ``reconnect_delay_set`` rather than our own loop: paho's ``loop_forever`` already
retries the first connection, backs off exponentially, resets the delay on a CONNACK and re-sends
unacknowledged QoS>0 messages after a reconnect; writing that again would only add bugs. What paho
lacks is a bound on its queue, hence the outbox and ``delivery.MAX_IN_FLIGHT``.

MQTT v5 is the default; ``protocol=MQTTv311`` is for 3.1.1-only brokers such as the embedded amqtt
one (see ``broker.PROTOCOL``). There is no automatic fallback: amqtt does not even answer a v5
CONNECT that carries a Will, so the caller has to know. Without v5 there are no response topics,
so command replies go to ``reply/<request_id>``.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeface.config import MqttConfig, TlsConfig
from edgeface.config_sources import read_secret_file
from edgeface.errors import BrokerError
from edgeface.mqtt.delivery import Delivery
from edgeface.mqtt.outbox import MemoryOutbox, Outbox, OutboxStats, OutMessage
from edgeface.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)
_PAHO_LOGGER = logging.getLogger("edgeface.mqtt.paho")

# First reconnect delay; paho doubles it up to ``reconnect_max_s`` and resets it on a CONNACK.
RECONNECT_MIN_S = 1
# stop(): time given to drain the outbox and to get ``offline`` acknowledged.
STOP_FLUSH_S = 2.0
STATUS_QOS = 1
ONLINE = "online"
OFFLINE = "offline"

Payload = dict[str, Any] | list[Any] | str | bytes
CommandCallback = Callable[[str, bytes, Properties | None], None]
"""``on_command(verb, payload, properties)``: called on paho's thread, must return quickly."""
MessageCallback = Callable[[str, bytes, bool], None]
"""``on_message(topic, payload, retained)`` of an extra subscription: paho's thread, must return quickly."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Counters since start; ``published`` counts broker acknowledgements (QoS 0: socket writes)."""

    published: int
    dropped: int  # outbox overflow + QoS 0 lost with a connection + refused or unpublishable
    reconnects: int  # successful connections after the first
    queued: int
    in_flight: int
    connected: bool
    outbox: OutboxStats | None = None


def encode_payload(payload: Payload) -> bytes:
    """Bytes on the wire: JSON (compact, UTF-8) for dicts and lists, UTF-8 for text."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSL context for the broker connection; BrokerError naming the files when they are unusable."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerError(f"MQTT TLS setup failed (ca {tls.ca_file}, cert {tls.cert_file}): {exc}") from exc
    if tls.insecure:
        context.check_hostname = False
    return context


class MqttLink:
    """Keeps one device connected to its broker; ``publish`` is thread-safe and never blocks."""

    def __init__(
        self,
        cfg: MqttConfig,
        topics: Topics,
        device_name: str,
        on_command: CommandCallback,
        stop: threading.Event,
        *,
        host: str | None = None,
        port: int | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        outbox: Outbox | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        """``host``/``port`` override the config (the embedded broker's actual port);
        ``on_connection(connected)`` is called on paho's thread when the connection comes or goes."""
        self._cfg = cfg
        self._topics = topics
        self.device_name = device_name
        self._on_command = on_command
        # The link outlives ``stop``: the daemon disconnects MQTT last, after the stages drained, so
        # that their final events and the retained ``offline`` still go out. ``stop`` only cuts
        # ``wait_connected`` short.
        self._stop = stop
        self.host = host or cfg.host or "127.0.0.1"
        self.port = port if port is not None else (cfg.port if cfg.host else cfg.embedded_port)
        self.client_id = cfg.client_id or f"edgeface-{topics.device_id}"
        self._protocol = protocol
        self._password = self._read_password()
        self._delivery = Delivery(outbox if outbox is not None else MemoryOutbox(cfg.outbox_size), topics.device_id)
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._connected = False  # guarded by _lock
        self._connects = 0  # guarded by _lock
        self._closing = False
        self._subscribed = threading.Event()
        self._extra: dict[str, MessageCallback] = {}  # guarded by _lock
        self._sub_mids: dict[int, str] = {}  # subscribe mid -> filter, until its SUBACK; guarded by _lock
        self._listeners: list[Callable[[bool], None]] = [on_connection] if on_connection is not None else []
        self._refused: str | None = None
        self._warned_unreachable = False

    # --- public API ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        with self._lock:
            return self._connected

    @property
    def topics(self) -> Topics:
        """The device's topics."""
        return self._topics

    @property
    def protocol(self) -> MQTTProtocolVersion:
        """The MQTT version in use."""
        return self._protocol

    def stats(self) -> LinkStats:
        """A snapshot of the counters."""
        published, dropped, queued, in_flight = self._delivery.counters()
        with self._lock:
            connected, connects = self._connected, self._connects
        outbox = self._delivery.outbox_stats()
        return LinkStats(published, dropped, max(0, connects - 1), queued, in_flight, connected, outbox)

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried with backoff."""
        if self._client is not None:
            raise RuntimeError("MqttLink.start() called twice")
        self._client = self._build_client()
        _LOGGER.info("MQTT: connecting to %s:%d as %s", self.host, self.port, self.client_id)
        self._client.loop_start()
        self._delivery.start(self._client)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected and subscribed to commands; BrokerError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and not self._stop.is_set():
            if self._subscribed.wait(min(left, 0.25)):
                return
        reason = f": refused ({self._refused})" if self._refused else ""
        raise BrokerError(f"MQTT broker {self.host}:{self.port} not connected within {timeout:g}s{reason}")

    def publish(
        self,
        topic: str,
        payload: Payload,
        retain: bool = False,
        qos: int | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Queue a message; it is sent in order once connected. Never blocks; drops the oldest when full."""
        qos = self._cfg.qos if qos is None else qos
        self._delivery.put(OutMessage(topic, encode_payload(payload), qos, retain, correlation_data))

    def add_connection_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(connected)`` on paho's thread after each connect (``online`` queued) and disconnect."""
        self._listeners.append(listener)

    def subscribe(self, topic_filter: str, on_message: MessageCallback) -> None:
        """Also deliver messages matching ``topic_filter`` (retained ones included), now and after every reconnect."""
        with self._lock:
            self._extra[topic_filter] = on_message
            client = self._client if self._connected else None
        if client is not None:
            self._subscribe(client, topic_filter)

    def stop(self) -> None:
        """Drain what the broker still takes, publish retained ``offline``, disconnect cleanly (no Will)."""
        client = self._client
        if client is None or self._closing:
            return
        self._closing = True
        deadline = time.monotonic() + STOP_FLUSH_S
        unsent = self._delivery.close(deadline)
        if unsent and self._delivery.outbox_stats().durable:
            _LOGGER.info("MQTT: %d queued messages kept on disk for the next start", unsent)
        elif unsent:
            _LOGGER.warning("MQTT: %d queued messages were not delivered before shutdown", unsent)
        if self.connected:
            offline = OutMessage(self._topics.status, OFFLINE.encode(), STATUS_QOS, retain=True)
            mid = self._delivery.hand_over(client, offline, from_outbox=False)
            if not self._delivery.wait_acknowledged(mid, deadline):
                _LOGGER.warning("MQTT: 'offline' status not acknowledged before disconnecting")
        client.disconnect()
        client.loop_stop()
        _LOGGER.info("MQTT: disconnected from %s:%d", self.host, self.port)

    # --- client construction ---------------------------------------------------------------

    def _read_password(self) -> str | None:
        if self._cfg.password_file is not None:
            return read_secret_file(self._cfg.password_file, "MQTT password")
        return self._cfg.password.get_secret_value() if self._cfg.password is not None else None

    def _build_client(self) -> mqtt.Client:
        cfg = self._cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=self._protocol, transport=cfg.transport
        )
        client.reconnect_delay_set(RECONNECT_MIN_S, max(RECONNECT_MIN_S, round(cfg.reconnect_max_s)))
        client.will_set(self._topics.status, OFFLINE, qos=STATUS_QOS, retain=True)
        if cfg.username is not None or self._password is not None:
            client.username_pw_set(cfg.username, self._password)
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
            client.tls_insecure_set(cfg.tls.insecure)
        client.on_connect = guard(self._handle_connect)
        client.on_connect_fail = guard(self._handle_connect_fail)
        client.on_disconnect = guard(self._handle_disconnect)
        client.on_subscribe = guard(self._handle_subscribe)
        client.on_publish = guard(lambda _c, _u, mid, reason, _p: self._delivery.acknowledged(mid, reason))
        client.on_message = guard(self._handle_message)
        client.on_log = guard(self._handle_log)
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            client.connect_async(self.host, self.port, cfg.keepalive_s, clean_start=True)
        else:
            client.connect_async(self.host, self.port, cfg.keepalive_s)
        return client

    # --- paho callbacks (paho's network thread) ----------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: mqtt.ConnectFlags, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            self._report_refusal(str(reason), "check username/password and ACL")
            return
        self._refused = None
        self._warned_unreachable = False
        with self._lock:
            self._connected = True
            self._connects += 1
        if client.protocol == MQTTProtocolVersion.MQTTv5:
            # A retained command would be re-applied at every reconnect: never deliver those.
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            _rc, mid = client.subscribe(self._topics.command_filter, options=options)
        else:
            _rc, mid = client.subscribe(self._topics.command_filter, qos=1)
        with self._lock:
            if mid is not None:
                self._sub_mids[mid] = self._topics.command_filter
            extra = list(self._extra)
        for topic_filter in extra:
            self._subscribe(client, topic_filter)
        online = OutMessage(self._topics.status, ONLINE.encode(), STATUS_QOS, retain=True)
        self._delivery.session_started(client, online)
        _LOGGER.info("MQTT: connected to %s:%d (%s)", self.host, self.port, _version(client))
        for listener in list(self._listeners):
            listener(True)

    def _handle_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` without passing the error on. A failed TLS
        # handshake means the broker was reached but not trusted (or did not trust us): not "unreachable".
        if isinstance(error := sys.exc_info()[1], ssl.SSLError):
            self._report_tls_refusal(error)
            return
        if not self._warned_unreachable:
            _LOGGER.warning(
                "MQTT: cannot reach broker %s:%d; retrying (backoff up to %gs)",
                self.host,
                self.port,
                self._cfg.reconnect_max_s,
            )
            self._warned_unreachable = True
        else:
            _LOGGER.debug("MQTT: broker %s:%d still unreachable", self.host, self.port)

    def _handle_log(self, _client: mqtt.Client, _userdata: Any, _level: int, buf: str) -> None:
        # paho reports a dropped socket at its ERROR level; we log the disconnect ourselves, so its
        # chatter goes to DEBUG where ``-v`` shows it.
        _PAHO_LOGGER.debug("%s", buf)
        # Under TLS 1.3 a broker rejects a missing or untrusted client certificate only after the
        # handshake, on the first read; paho then logs from inside its ``except`` and just reconnects.
        if isinstance(error := sys.exc_info()[1], ssl.SSLError) and not self._closing and not self.connected:
            self._report_tls_refusal(error)

    def _report_tls_refusal(self, error: ssl.SSLError) -> None:
        self._report_refusal(f"TLS: {error}", "check tls.ca_file, tls.cert_file and tls.key_file")

    def _report_refusal(self, reason: str, hint: str) -> None:
        """Log a refusal at ERROR once per distinct reason; ``wait_connected`` quotes the latest."""
        if self._refused != reason:
            _LOGGER.error(
                "MQTT: broker %s:%d refused the connection: %s (%s); retrying", self.host, self.port, reason, hint
            )
        self._refused = reason

    def _handle_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: mqtt.DisconnectFlags, reason: ReasonCode, _props: Any
    ) -> None:
        self._subscribed.clear()
        self._delivery.session_ended()
        with self._lock:
            was_connected, self._connected = self._connected, False
        if not was_connected:
            return
        if self._closing:
            _LOGGER.debug("MQTT: disconnected (%s)", reason)
        else:
            _LOGGER.warning("MQTT: lost connection to %s:%d (%s); reconnecting", self.host, self.port, reason)
        for listener in list(self._listeners):
            listener(False)

    def _subscribe(self, client: mqtt.Client, topic_filter: str) -> None:
        _rc, mid = client.subscribe(topic_filter, qos=1)
        if mid is not None:  # None: the connection just dropped; the next connect subscribes again
            with self._lock:
                self._sub_mids[mid] = topic_filter

    def _handle_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        with self._lock:
            topic_filter = self._sub_mids.pop(mid, None)
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            _LOGGER.error("MQTT: broker refused the subscription to %s: %s", topic_filter or "a topic", failed)
            return
        if topic_filter == self._topics.command_filter:
            self._subscribed.set()

    def _handle_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            extra = [cb for flt, cb in self._extra.items() if mqtt.topic_matches_sub(flt, message.topic)]
        for callback in extra:
            callback(message.topic, bytes(message.payload), bool(message.retain))
        if extra:
            return
        verb = self._topics.verb_of(message.topic)
        if verb is None:
            _LOGGER.debug("MQTT: ignoring message on %s", message.topic)
            return
        if message.retain:
            _LOGGER.warning(
                "MQTT: ignoring retained command on %s (clear it with an empty retained message)", message.topic
            )
            return
        properties = message.properties if self._protocol == MQTTProtocolVersion.MQTTv5 else None
        self._on_command(verb, bytes(message.payload), properties)


def guard(callback: Callable[..., None], what: str = "MQTT") -> Callable[..., None]:
    """Wrap a paho callback: an exception is logged (prefixed ``what``), never raised into paho's network loop."""

    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            _LOGGER.exception("%s: %s failed", what, getattr(callback, "__name__", "callback"))

    return guarded


def _version(client: mqtt.Client) -> str:
    return "MQTT v5" if client.protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1"
