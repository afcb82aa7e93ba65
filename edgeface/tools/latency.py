"""A broker for the bench and a subscriber that times frame-captured -> MQTT-delivered latency.

``bench_broker`` yields a broker address: the one given, a Mosquitto started on a free loopback port
when the binary is installed, or edgeface's embedded broker. ``LatencyProbe`` is a separate paho
client subscribed to the recognition and unknown topics; each event it receives is paired with the
decision that produced it (``expect``, called from the pipeline's decision callback just before
publishing), and the latency is the monotonic time of arrival minus the frame's ``captured_at``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeface.errors import BrokerError
from edgeface.mqtt.topics import Topics

START_TIMEOUT_S = 10.0
# Events still in flight when the pipeline ends get this long to arrive before they count as lost.
SETTLE_S = 3.0


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    kind: str  # "external", "mosquitto" or "embedded"
    protocol: MQTTProtocolVersion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"mosquitto exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"mosquitto did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S}s")


@contextlib.contextmanager
def _mosquitto(exe: str) -> Iterator[BrokerAddress]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="edgeface-bench-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port, proc)
            yield BrokerAddress("127.0.0.1", port, "mosquitto", MQTTProtocolVersion.MQTTv5)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def _embedded() -> Iterator[BrokerAddress]:
    from edgeface.mqtt.broker import PROTOCOL, EmbeddedBroker

    broker = EmbeddedBroker("127.0.0.1", 0)
    broker.start()
    try:
        yield BrokerAddress("127.0.0.1", broker.port, "embedded", PROTOCOL)
    finally:
        broker.stop()


@contextlib.contextmanager
def bench_broker(spec: str) -> Iterator[BrokerAddress]:
    """``HOST:PORT`` (external), ``mosquitto``, ``embedded``, or ``auto`` (mosquitto when installed)."""
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).is_file()), None)
    if spec in {"auto", "mosquitto"}:
        if exe is not None:
            with _mosquitto(exe) as address:
                yield address
            return
        if spec == "mosquitto":
            raise BrokerError("--broker mosquitto: no mosquitto binary on PATH")
        spec = "embedded"
    if spec == "embedded":
        with _embedded() as address:
            yield address
        return
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerError(f"--broker {spec!r}: expected HOST:PORT, 'mosquitto', 'embedded' or 'auto'")
    yield BrokerAddress(host, int(port), "external", MQTTProtocolVersion.MQTTv5)


class LatencyProbe:
    """Subscribes to the device's event topics and times each event against its frame."""

    def __init__(self, address: BrokerAddress, topics: Topics) -> None:
        self._topics = (topics.recognition, topics.unknown)
        self._lock = threading.Lock()
        self._expected: dict[tuple[int, int], float] = {}  # (track_id, frame_index) -> captured_at
        self.latencies_ms: list[float] = []
        self.received = 0
        self.unmatched = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=address.protocol)
        self._client.on_connect = lambda c, *_a: c.subscribe([(t, 1) for t in self._topics])
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        try:
            self._client.connect(address.host, address.port)
        except OSError as exc:
            raise BrokerError(f"bench probe cannot connect to {address.host}:{address.port}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            self.close()
            raise BrokerError(f"bench probe could not subscribe on {address.host}:{address.port}")

    def expect(self, track_id: int, frame_index: int, captured_at: float) -> None:
        """Register a decision about to be published (call before publishing it)."""
        with self._lock:
            self._expected[(track_id, frame_index)] = captured_at

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        arrived = time.monotonic()
        try:
            payload = json.loads(message.payload)
            key = (int(payload["track_id"]), int(payload["frame"]["index"]))
        except (ValueError, KeyError, TypeError):
            key = None
        with self._lock:
            self.received += 1
            captured_at = self._expected.pop(key, None) if key is not None else None
            if captured_at is None:
                self.unmatched += 1
            else:
                self.latencies_ms.append((arrived - captured_at) * 1000.0)

    def settle(self, timeout: float = SETTLE_S) -> int:
        """Wait until every expected event arrived or ``timeout``; the number still missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._expected:
                    return 0
            time.sleep(0.02)
        with self._lock:
            return len(self._expected)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
