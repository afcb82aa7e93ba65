"""Fleet fixtures: two real Mosquitto brokers joined by a real Mosquitto bridge, and device stacks
(a real database file, a real replicator and its real MQTT connection) attached to either broker.

Stacks rather than whole daemons for most tests: replication needs no camera pipeline, and a stack
can be stopped, edited behind its back and restarted within a second on a loaded 2-core machine.
``test_daemons.py`` runs two real daemons for the end-to-end recognition through the bridge.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import VisionConfig, load_settings
from edgeface.fleet.replicator import Replicator
from edgeface.fleet.service import start_replicator
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import enrollment_vision
from edgeface.vision.analyzer import FaceAnalyzer
from edgeface.vision.manifest import load_manifest
from tests.conftest import Broker, MqttProbe

FLEET_SECRET = "fleet-secret-of-the-test-site-0001"
PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


# Width of the default embedder's vectors (the embeddings below).
_DEFAULT = load_manifest(VisionConfig().models_dir).embedder(VisionConfig().embedder)
assert _DEFAULT.output is not None
DIM = _DEFAULT.output.size


@pytest.fixture(scope="session")
def embeddings(samples_dir: Path) -> dict[str, np.ndarray]:
    """Real embeddings of the sample photos (the default embedder), by file name."""
    out = {}
    with FaceAnalyzer.from_config(enrollment_vision(VisionConfig())) as analyzer:
        for name in PHOTOS:
            image = cv2.imread(str(samples_dir / name))
            out[name] = analyzer.analyze(image)[0].embedding.vector.astype(np.float32)
        out["model_id"] = np.array(analyzer.model_id)
    return out


@dataclass
class Bridged:
    a: Broker
    b: Broker


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


@pytest.fixture
def bridged(tmp_path: Path) -> Iterator[Bridged]:
    """Broker A, and broker B bridging ``edgeface/fleet/#`` both ways to A (as two sites would)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Broker(tmp_path / "a")
    a.start()
    b = Broker(tmp_path / "b")
    b.extra = [
        "connection site-b-to-a",
        f"address 127.0.0.1:{a.port}",
        "topic edgeface/fleet/# both 1",
        "cleansession true",
        "restart_timeout 1",
        f"remote_clientid bridge-{uuid.uuid4().hex[:8]}",
    ]
    b.start()
    # The bridge is up once a message published on B arrives on A.
    probe = MqttProbe(a.port, "edgeface/fleet/bridge-check")
    try:
        sender = MqttProbe(b.port, "edgeface/fleet/none")
        try:
            deadline = time.monotonic() + 20
            while True:
                sender.publish("edgeface/fleet/bridge-check", b"up")
                try:
                    probe.wait_for("edgeface/fleet/bridge-check", timeout=0.5)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
        finally:
            sender.close()
    finally:
        probe.close()
    yield Bridged(a, b)
    b.stop()
    a.stop()


@dataclass
class Stack:
    """One device's replication: its database file and a replicator connected to ``port``."""

    root: Path
    device_id: str
    port: int
    model_id: str
    key_file: Path
    fleet_id: str = "site"
    horizon_s: float = 90 * 86400.0
    max_record_bytes: int = 256 * 1024
    replicator: Replicator | None = None
    db: FaceDatabase = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = FaceDatabase.open(self.root / "faces.npz", self.model_id, DIM)

    def settings(self) -> Any:
        return load_settings(
            None,
            device={"id": self.device_id, "state_dir": str(self.root)},
            mqtt={"host": "127.0.0.1", "port": self.port, "reconnect_max_s": 1},
            fleet={
                "enabled": True,
                "id": self.fleet_id,
                "key_file": str(self.key_file),
                "tombstone_horizon_s": self.horizon_s,
                "max_record_bytes": self.max_record_bytes,
            },
        )

    def start(self) -> Stack:
        self.db = FaceDatabase.open(self.root / "faces.npz", self.model_id, DIM)
        self.replicator = start_replicator(
            self.settings(), self.db, host="127.0.0.1", port=self.port, protocol=MQTTProtocolVersion.MQTTv5
        )
        wait_until(lambda: self.status()["synced"], what=f"{self.device_id} caught up")
        return self

    def stop(self) -> None:
        if self.replicator is not None:
            self.replicator.stop()
            self.replicator = None

    def status(self) -> dict[str, Any]:
        assert self.replicator is not None
        return self.replicator.status()

    def people(self) -> dict[str, Any]:
        """The database as a comparable value: persons by id with their samples by id (and rows)."""
        self.db.reload()
        contents = self.db.contents()
        out: dict[str, Any] = {}
        row = 0
        for p in contents.people:
            samples = {}
            for s in p.samples:
                samples[s.id] = (s.kind, s.created, s.source, contents.matrix[row])
                row += 1
            out[p.id] = (p.name, p.metadata_text, p.created, p.updated, samples)
        return out


def same_gallery(x: dict[str, Any], y: dict[str, Any]) -> bool:
    """Equal persons and samples; embeddings equal up to the float16 rounding of the wire."""
    if x.keys() != y.keys():
        return False
    for person_id, (name, meta, created, updated, samples) in x.items():
        other = y[person_id]
        if (name, meta, created, updated) != other[:4] or samples.keys() != other[4].keys():
            return False
        for sample_id, (kind, s_created, source, row) in samples.items():
            o = other[4][sample_id]
            if (kind, s_created, source) != o[:3] or not np.allclose(row, o[3], atol=2e-3):
                return False
    return True


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.key"
    path.write_text(FLEET_SECRET)
    path.chmod(0o600)
    return path


@pytest.fixture
def make_stack(tmp_path: Path, key_file: Path, embeddings: dict[str, np.ndarray]) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(device_id: str, port: int) -> Stack:
        stack = Stack(tmp_path / device_id, device_id, port, str(embeddings["model_id"]), key_file)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
