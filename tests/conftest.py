"""Shared fixtures: a real Mosquitto broker, a real MQTT probe client, real face photos.

Autouse guards fail a test that leaks a thread or logs at ERROR without declaring it expects to
(``@pytest.mark.expect_errors``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgeface.samples import ensure_samples

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "expect_errors: the test expects ERROR log records")


# --- real photos ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """Real photos from the pinned face_recognition==1.3.0 sdist (fetched once, checksummed)."""
    return ensure_samples()


@pytest.fixture(scope="session")
def face_image(samples_dir: Path):  # type: ignore[no-untyped-def]
    """Load a sample photo by file name as a BGR uint8 array."""

    def load(name: str) -> np.ndarray:
        image = cv2.imread(str(samples_dir / name), cv2.IMREAD_COLOR)
        assert image is not None, name
        return image

    return load


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The labelled evaluation set beside the repo; tests needing it skip when it is absent."""
    if not (SHARED_DATA / "dev" / "pairs.csv").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def replay_folder(tmp_path: Path, samples_dir: Path, *names: str) -> Path:
    """A folder replaying these sample photos in this order (named so that they sort that way)."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for i, name in enumerate(names):
        shutil.copy(samples_dir / name, folder / f"{i:02d}_{name}")
    return folder


# --- a real broker -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"mosquitto did not accept connections on port {port} within {timeout}s")


@dataclass
class Broker:
    """A Mosquitto process on a loopback port that a test may kill and start again."""

    workdir: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None
    password_file: Path | None = None
    extra: list[str] = field(default_factory=list)  # more mosquitto.conf lines, e.g. a bridge
    # Keep sessions and their queued QoS 1 messages across a clean stop/start (fault tests).
    persistent: bool = False

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        persistence = ["persistence true", f"persistence_location {self.workdir}/"] if self.persistent else []
        lines = [f"listener {self.port} 127.0.0.1", *(persistence or ["persistence false"])]
        lines += ["log_dest stderr", "log_type error"]
        if os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", who cannot read a password file in our tmp dir.
            lines.append("user root")
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        lines += self.extra
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_port(self.port, 10.0)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole session (tests must not kill it; use ``broker`` for that)."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test's own, which it may kill and restart."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class MqttProbe:
    """A real paho client subscribed to a filter; messages land in a queue for ``wait_for``."""

    def __init__(
        self,
        port: int,
        topic_filter: str = "#",
        *,
        protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5,
        host: str = "127.0.0.1",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.seen: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("probe could not subscribe")

    def wait_for(self, topic: str, timeout: float = 10.0, predicate=None) -> mqtt.MQTTMessage:  # type: ignore[no-untyped-def]
        """Return the first message on ``topic`` (already seen or arriving before the deadline)."""
        for msg in self.seen:
            if msg.topic == topic and (predicate is None or predicate(msg)):
                self.seen.remove(msg)
                return msg
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if msg.topic == topic and (predicate is None or predicate(msg)):
                return msg
            self.seen.append(msg)
        topics = sorted({m.topic for m in self.seen})
        raise AssertionError(f"no message on {topic} within {timeout}s; saw {topics}")

    def wait_json(self, topic: str, timeout: float = 10.0, predicate=None) -> dict:  # type: ignore[no-untyped-def, type-arg]
        """Like ``wait_for`` but decodes the payload as JSON and matches ``predicate`` on the dict."""
        msg = self.wait_for(topic, timeout, None if predicate is None else lambda m: predicate(json.loads(m.payload)))
        return json.loads(msg.payload)  # type: ignore[no-any-return]

    def publish(self, topic: str, payload: bytes | str, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.client.publish(topic, payload, qos=1, **kwargs).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def mqtt_probe(mosquitto: Broker) -> Iterator[MqttProbe]:
    probe = MqttProbe(mosquitto.port)
    yield probe
    probe.close()


# --- guards --------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        # paho's own loop thread of a fixture that is torn down after us is not ours to judge
        leaked = [t for t in leaked if not t.name.startswith(("paho-mqtt-client", "asyncio_"))]
        if not leaked:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads leaked by the test: {[t.name for t in leaked]}")


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _ErrorCollector()
    root = logging.getLogger()
    root.addHandler(handler)
    yield
    root.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("expect_errors") is None:
        lines = [f"{r.name}: {r.getMessage()}" for r in handler.records]
        raise AssertionError("unexpected ERROR log records:\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """In-process CLI runs configure logging on the test's captured stderr; undo it after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
