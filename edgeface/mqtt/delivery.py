"""Delivery: moves messages from the outbox into paho in order, a bounded number at a time.

One sender thread (``mqtt-outbox:<device>``) takes messages from the outbox and hands them to the
current paho client, keeping at most ``MAX_IN_FLIGHT`` unacknowledged. ``put`` only appends under a
lock, so producers never wait for the network or for paho's locks.

Ordering across a reconnect: paho calls ``on_connect`` *before* it re-sends the QoS>0 messages that
were in flight when the connection dropped. So each connection starts with a *session message*
(the retained ``online``) and the sender resumes only once the broker acknowledged it -- by then
paho's re-sends are on the wire ahead of anything new.

Locking: paho calls ``on_publish`` (our ``acknowledged``) while holding its own message lock, so
``client.publish`` is never called with our lock held.
"""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgeface.mqtt.outbox import Outbox, OutboxStats, OutMessage

_LOGGER = logging.getLogger(__name__)

# Messages handed to paho but not yet acknowledged. Small, so that an outage strands at most this
# many in paho's unbounded queue, and below paho's own default (20) so that paho never queues them.
MAX_IN_FLIGHT = 10


class Delivery:
    """The outbox, the in-flight accounting and the sender thread of one link. Thread-safe."""

    def __init__(self, outbox: Outbox, name: str) -> None:
        self._outbox = outbox
        self._name = name
        self._cond = threading.Condition()
        # --- guarded by _cond ---
        self._client: mqtt.Client | None = None
        self._ready = False  # the session message was acknowledged: the sender may run
        self._session_mid: int | None = None
        self._pending: dict[int, tuple[OutMessage, bool]] = {}  # mid -> (message, from the outbox)
        self._early: set[int] = set()  # mids acknowledged before ``client.publish`` returned them
        self._handing_over = 0
        self._published = 0
        self._dropped = 0
        self._closing = False
        self._closed = False
        # ---
        self._thread: threading.Thread | None = None

    # --- producer side ---------------------------------------------------------------------------

    def put(self, message: OutMessage) -> None:
        """Queue ``message`` (drop-oldest when full); never blocks."""
        with self._cond:
            if self._closed:
                self._dropped += 1
                _LOGGER.debug("MQTT: link stopped, dropping message on %s", message.topic)
                return
            self._outbox.put(message)
            self._cond.notify_all()

    def counters(self) -> tuple[int, int, int, int]:
        """(published, dropped, queued, in flight), consistent with each other."""
        with self._cond:
            in_flight = len(self._pending) + self._handing_over
            return self._published, self._dropped + self._outbox.dropped, len(self._outbox), in_flight

    def outbox_stats(self) -> OutboxStats:
        """The outbox's own counters (queued excludes the in-flight messages)."""
        with self._cond:
            return self._outbox.stats()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, client: mqtt.Client) -> None:
        """Start the sender thread for ``client``."""
        with self._cond:
            self._client = client
        self._thread = threading.Thread(target=self._run, name=f"mqtt-outbox:{self._name}")
        self._thread.start()

    def close(self, deadline: float) -> int:
        """Drain while connected until ``deadline``, then stop the sender; returns messages left queued."""
        with self._cond:
            while (
                self._ready
                and (len(self._outbox) or self._pending or self._handing_over)
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            self._closed = True
            return len(self._outbox)

    # --- paho events (paho's network thread) -------------------------------------------------------

    def session_started(self, client: mqtt.Client, session_message: OutMessage) -> None:
        """A connection is up: send ``session_message`` first; the outbox follows once it is acknowledged."""
        with self._cond:
            self._ready = False
        mid = self.hand_over(client, session_message, from_outbox=False)
        with self._cond:
            self._session_mid = mid

    def session_ended(self) -> None:
        """The connection dropped: pause, and count the QoS 0 messages paho forgot with the socket."""
        with self._cond:
            self._ready = False
            # paho re-sends QoS>0 messages after reconnecting; QoS 0 ones are gone.
            lost = [mid for mid, (message, _) in self._pending.items() if message.qos == 0]
            for mid in lost:
                del self._pending[mid]
            self._dropped += len(lost)
            # ``_early`` is kept: an ack that raced this disconnect still belongs to a ``hand_over``
            # that is about to register its mid.
            self._cond.notify_all()

    def acknowledged(self, mid: int, reason: ReasonCode | None) -> None:
        """paho's ``on_publish``: the broker acknowledged ``mid`` (QoS 0: it was written)."""
        with self._cond:
            entry = self._pending.pop(mid, None)
            if entry is None:
                self._early.add(mid)
            else:
                self._settle(entry[0], entry[1], reason)
            if mid == self._session_mid:
                self._ready = True
            self._cond.notify_all()

    # --- handing over --------------------------------------------------------------------------------

    def hand_over(self, client: mqtt.Client, message: OutMessage, *, from_outbox: bool) -> int | None:
        """``client.publish`` with accounting; returns the mid, or None when paho did not take it."""
        properties = None
        if message.correlation_data is not None and client.protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation_data
        with self._cond:
            self._handing_over += 1
        try:
            info = client.publish(message.topic, message.payload, message.qos, message.retain, properties)
        except (ValueError, TypeError) as exc:
            with self._cond:
                self._handing_over -= 1
                self._dropped += 1
                self._cond.notify_all()
            _LOGGER.warning("MQTT: cannot publish on %r: %s; message dropped", message.topic, exc)
            return None
        with self._cond:
            self._handing_over -= 1
            self._cond.notify_all()
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos == 0:
                # Neither sent nor kept by paho: back to the front, it keeps its place.
                if from_outbox:
                    self._outbox.requeue(message)
                return None
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._dropped += 1
                _LOGGER.warning("MQTT: publish on %s failed: %s", message.topic, mqtt.error_string(info.rc))
                return None
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._settle(message, from_outbox, None)
            else:
                self._pending[info.mid] = (message, from_outbox)
            return info.mid

    def wait_acknowledged(self, mid: int | None, deadline: float) -> bool:
        """Wait until ``mid`` is acknowledged; False at ``deadline`` (or when it was never handed over)."""
        with self._cond:
            while mid in self._pending and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            return mid is not None and mid not in self._pending

    def _settle(self, message: OutMessage, from_outbox: bool, reason: ReasonCode | None) -> None:
        """Count an acknowledged message (caller holds ``_cond``)."""
        if reason is not None and reason.is_failure:
            self._dropped += 1
            _LOGGER.warning("MQTT: broker refused a message on %s: %s", message.topic, reason)
        else:
            self._published += 1
        if from_outbox:
            self._outbox.done(message)

    # --- sender thread ---------------------------------------------------------------------------

    def _can_send(self) -> bool:
        in_flight = len(self._pending) + self._handing_over
        return self._ready and len(self._outbox) > 0 and in_flight < MAX_IN_FLIGHT

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    while not (self._closing or self._can_send()):
                        self._cond.wait()
                    if self._closing:
                        return
                    message = self._outbox.take()
                    client = self._client
                if message is not None and client is not None:
                    self.hand_over(client, message, from_outbox=True)
            except Exception:
                # Top of the thread: log and keep serving; the next message may well succeed.
                _LOGGER.exception("MQTT: outbox sender failed")
