"""An embedded MQTT broker (amqtt) for installs without one: used when ``mqtt.host`` is unset.

amqtt runs in a thread of its own with its own asyncio loop, so the rest of the daemon stays
synchronous. We open the listening socket ourselves and hand accepted connections to amqtt as an
"external" listener: that way port 0 works (the OS picks a free port and ``port`` tells which) and we
know the socket listens before ``start`` returns, without probing it (amqtt logs an ERROR for a
connection that sends no CONNECT).

What amqtt 0.12 supports, checked by tests/mqtt/test_broker.py with paho 2.x:

* MQTT 3.1.1 only. A plain v5 CONNECT is refused with "Unsupported protocol version" (``edgeface
  cmd`` falls back to 3.1.1 on that), but a v5 CONNECT carrying a Will is misparsed and the socket
  closed without any CONNACK -- so the daemon must give ``MqttLink`` ``protocol=PROTOCOL`` below.
  Without v5 there are no response topics or correlation data: command replies go to
  ``reply/<request_id>``.
* QoS 0/1/2 publish/subscribe, retained messages and the Last Will (retained) work.
* Quirk: a retained message may be delivered twice to a new subscriber; consumers of retained
  state (``status``, ``state``, presence) are idempotent, so this is harmless.
* Anonymous access only, loopback by default: it is meant for a single box, not as a LAN broker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.errors import BrokerError

_LOGGER = logging.getLogger(__name__)

PROTOCOL = MQTTProtocolVersion.MQTTv311
"""The MQTT version clients should use against the embedded broker."""

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_LISTENER = "default"


class EmbeddedBroker:
    """amqtt in a background thread: ``start()`` returns once it accepts connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start serving; BrokerError if the port cannot be bound or amqtt fails to start."""
        if self._thread is not None:
            raise RuntimeError("EmbeddedBroker.start() called twice")
        # amqtt and its state machine log every connection and state change at INFO; keep the
        # daemon's INFO log about edgeface unless someone configured these loggers on purpose.
        for name in ("amqtt", "transitions"):
            chatty = logging.getLogger(name)
            if chatty.level == logging.NOTSET:
                chatty.setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="mqtt-broker")
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise BrokerError(
                f"embedded MQTT broker on {self.host}:{self.port} did not start within {START_TIMEOUT_S}s"
            )
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise BrokerError(f"embedded MQTT broker on {self.host}:{self.port}: {self._error}") from self._error
        _LOGGER.info("embedded MQTT broker listening on %s:%d (MQTT 3.1.1)", self.host, self.port)

    def stop(self) -> None:
        """Close every session and the listener; joins the broker thread."""
        if self._thread is None:
            return
        loop, shutdown = self._loop, self._shutdown
        if loop is not None and shutdown is not None:
            loop.call_soon_threadsafe(shutdown.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            _LOGGER.warning("embedded MQTT broker thread did not stop within %ss", STOP_TIMEOUT_S)
        self._thread = None
        _LOGGER.info("embedded MQTT broker stopped")

    # --- broker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:
            if self._started.is_set():
                _LOGGER.exception("embedded MQTT broker failed")
            else:
                self._error = exc
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self) -> None:
        # Imported here: amqtt pulls in websockets/transitions, which only the embedded case needs.
        from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
        from amqtt.broker import Broker

        config: dict[str, Any] = {
            "listeners": {_LISTENER: {"type": "external"}},
            # Only anonymous auth: the default set adds $SYS publishing and per-packet logging.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        self._shutdown = asyncio.Event()
        await broker.start()

        # Connections amqtt has not finished with; closed at shutdown so no socket outlives the loop
        # (amqtt only closes those that completed CONNECT).
        open_writers: set[asyncio.StreamWriter] = set()
        handlers: set[asyncio.Task[Any]] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            open_writers.add(writer)
            handlers.add(task)
            try:
                await broker.external_connected(StreamReaderAdapter(reader), StreamWriterAdapter(writer), _LISTENER)
            except Exception:
                _LOGGER.exception("embedded MQTT broker: client session failed")
            finally:
                open_writers.discard(writer)
                handlers.discard(task)
                writer.close()

        try:
            server = await asyncio.start_server(on_connection, self.host, self.port)
        except OSError as exc:
            await broker.shutdown()
            raise BrokerError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self.port = int(server.sockets[0].getsockname()[1])
        self._started.set()
        try:
            await self._shutdown.wait()
        finally:
            server.close()
            await broker.shutdown()
            for writer in list(open_writers):
                writer.close()
            if handlers:
                await asyncio.wait(set(handlers), timeout=STOP_TIMEOUT_S / 2)
            await server.wait_closed()
