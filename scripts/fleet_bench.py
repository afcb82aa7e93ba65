"""Fleet replication measurements (docs/fleet.md): bounded, against real Mosquitto brokers on loopback.

    python scripts/fleet_bench.py delay   [--changes 100]            # delay through a bridge, p50/p95
    python scripts/fleet_bench.py sim     [--devices 100 --persons 10000 --samples 3]
    python scripts/fleet_bench.py float16 [--pairs ../shared/data/dev/pairs.csv]

``delay``: devices A and B (real databases and replicators) on two brokers joined by a Mosquitto
bridge; A enrolls persons one at a time, B's database listener stamps each arrival.
``sim``: one broker; ``--devices`` in-process MQTT clients each publish their share of
``--persons`` signed retained records (synthetic unit embeddings: the records' size and count are
what matter here, not whose face they are); then a new device (a real replicator and database)
joins and receives the whole gallery; then one device renames persons while every device is
subscribed, and each rename's arrival at all of them is timed. Broker memory is the Mosquitto
process's resident set before and after the retained records.
``float16``: what the wire's float16 embeddings cost in matching: cosine similarities of real photo
pairs with one side rounded through float16, against float32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from edgeface.config import load_settings
from edgeface.fleet.records import FleetKey, PersonState, encode_person
from edgeface.fleet.service import start_replicator
from edgeface.matching import store
from edgeface.matching.db import FaceDatabase
from edgeface.matching.records import PersonRecord, SampleRecord, new_id, now_iso

SECRET = "fleet-bench-secret-0000000001"
MODEL, DIM = "dlib_resnet_v1_int8", 128


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mosquitto(workdir: Path, extra: list[str] = ()) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:  # type: ignore[assignment]
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false", "log_dest none", *extra]
    conf.write_text("\n".join(lines) + "\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield port, proc
    finally:
        proc.terminate()
        proc.wait(10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.01)


def _device(root: Path, device_id: str, port: int, key_file: Path) -> tuple[FaceDatabase, Any]:
    settings = load_settings(
        None,
        device={"id": device_id, "state_dir": str(root)},
        mqtt={"host": "127.0.0.1", "port": port, "reconnect_max_s": 1},
        fleet={"enabled": True, "id": "bench", "key_file": str(key_file)},
    )
    root.mkdir(parents=True, exist_ok=True)
    db = FaceDatabase.open(root / "faces.npz", MODEL, DIM)
    return db, start_replicator(settings, db, host="127.0.0.1", port=port, protocol=MQTTProtocolVersion.MQTTv5)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=20, method="inclusive")
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1), "p95_ms": round(q[18], 1),
            "max_ms": round(max(values), 1)}  # fmt: skip


def _key_file(tmp: Path) -> Path:
    path = tmp / "fleet.key"
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


def cmd_delay(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key = _key_file(tmp)
        with mosquitto(tmp / "broker-a") as (port_a, _):
            bridge = ["connection b-to-a", f"address 127.0.0.1:{port_a}", "topic edgeface/fleet/# both 1",
                      "restart_timeout 1"]  # fmt: skip
            with mosquitto(tmp / "broker-b", bridge) as (port_b, _):
                time.sleep(2.0)  # the bridge connects within its restart_timeout
                db_a, rep_a = _device(tmp / "a", "door-a", port_a, key)
                db_b, rep_b = _device(tmp / "b", "door-b", port_b, key)
                arrived: dict[str, float] = {}

                def on_change(before: store.Contents, after: store.Contents) -> None:
                    now = time.monotonic()
                    for p in after.people:
                        arrived.setdefault(p.id, now)

                db_b.add_listener(on_change)
                try:
                    wait_until(lambda: rep_a.status()["synced"] and rep_b.status()["synced"], 30, "catch-up")
                    delays = []
                    for i in range(args.changes):
                        person = db_a.add_person(f"person {i}", {}, _unit(rng, 3))
                        committed = time.monotonic()
                        wait_until(lambda: person.id in arrived, 30, f"person {i} at B")  # noqa: B023
                        delays.append((arrived[person.id] - committed) * 1000)
                        time.sleep(args.spacing_s)
                finally:
                    rep_a.stop()
                    rep_b.stop()
    return {"bridge_delay": _percentiles(delays)}


def _record(rng: np.random.Generator, key: FleetKey, origin: str, samples: int) -> tuple[str, bytes]:
    now = now_iso()
    recs = tuple(SampleRecord(new_id(), "positive", now, "image", None, False) for _ in range(samples))
    person = PersonRecord(new_id(), f"{origin} person {new_id()[:6]}", '{"access":true}', now, now, recs)
    state = PersonState(person, _unit(rng, samples), origin)
    return person.id, encode_person(state, fleet_id="bench", publisher=origin, model_id=MODEL, key=key)


class _Client:
    """One simulated device: a paho client that publishes records and counts what it receives."""

    def __init__(self, port: int, name: str, subscribe: str | None) -> None:
        self.received: dict[str, float] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe:
            # Do-not-send: the simulated devices are already in step; they only time new changes.
            opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            self.client.subscribe(subscribe, options=opts)

    def _message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received[message.topic] = time.monotonic()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cmd_sim(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    key = FleetKey(SECRET.encode())
    per_device = args.persons // args.devices
    out: dict[str, Any] = {"devices": args.devices, "persons": per_device * args.devices, "samples": args.samples}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key_path = _key_file(tmp)
        # Mosquitto queues at most max_queued_messages (default 1000) per client and drops the rest of
        # a burst: a joining device's retained gallery is such a burst (docs/fleet.md).
        with mosquitto(tmp / "broker", [f"max_queued_messages {args.max_queued_messages}"]) as (port, proc):
            time.sleep(0.5)
            rss_before = rss_kib(proc.pid)
            records = [[_record(rng, key, f"door-{d:03d}", args.samples) for _ in range(per_device)]
                       for d in range(args.devices)]  # fmt: skip
            sizes = [len(payload) for device in records for _, payload in device]
            out["record_bytes_mean"] = round(statistics.mean(sizes))
            clients = [_Client(port, f"sim-{d:03d}", None) for d in range(args.devices)]
            started = time.monotonic()
            infos = []
            for device, client in zip(records, clients, strict=True):
                for person_id, payload in device:
                    topic = f"edgeface/fleet/bench/persons/{person_id}"
                    infos.append(client.client.publish(topic, payload, qos=1, retain=True))
            for info in infos:
                info.wait_for_publish(120)
            out["publish_all_s"] = round(time.monotonic() - started, 2)
            time.sleep(1.0)
            rss_after = rss_kib(proc.pid)
            out["broker_rss_mib"] = {"before": round(rss_before / 1024, 1), "after": round(rss_after / 1024, 1),
                                     "retained_records": round((rss_after - rss_before) / 1024, 1),
                                     "payload_total": round(sum(sizes) / 2**20, 1)}  # fmt: skip
            for client in clients:
                client.close()

            # A new device joins: the whole gallery arrives as retained records.
            started = time.monotonic()
            db, rep = _device(tmp / "new", "door-new", port, key_path)
            try:
                total = out["persons"]
                try:
                    wait_until(lambda: db.snapshot().persons >= total, args.join_timeout_s, "the whole gallery")
                except TimeoutError as exc:
                    out["new_device_join"] = f"{exc}: {db.snapshot().persons} persons received"
                    return {"simulation": out}
                join_s = time.monotonic() - started
                out["new_device_join_s"] = round(join_s, 1)
                out["records_per_s_applied"] = round(total / join_s)
                out["new_device_db_mib"] = round(db.path.stat().st_size / 2**20, 1)

                # Every device subscribed; one device renames persons; time their arrival everywhere.
                watchers = [_Client(port, f"watch-{d:03d}", "edgeface/fleet/bench/persons/+")
                            for d in range(args.devices - 1)]  # fmt: skip
                time.sleep(2.0)
                delays = []
                people = db.list(limit=args.renames)[1]
                for person in people:
                    topic = f"edgeface/fleet/bench/persons/{person.id}"
                    db.rename(person.id, f"{person.name} r")
                    committed = time.monotonic()
                    wait_until(lambda: all(topic in w.received for w in watchers), 60, "fan-out")  # noqa: B023
                    delays.append((max(w.received[topic] for w in watchers) - committed) * 1000)
                out["rename_to_all_devices"] = _percentiles(delays)
                for w in watchers:
                    w.close()
            finally:
                rep.stop()
    return {"simulation": out}


def cmd_float16(args: argparse.Namespace) -> dict[str, Any]:
    import cv2

    from edgeface.config import VisionConfig
    from edgeface.matching.enroll import enrollment_vision
    from edgeface.vision.analyzer import FaceAnalyzer

    root = args.pairs.parent
    rows = [line.split(",") for line in args.pairs.read_text().splitlines()[1:] if line.strip()]
    vectors: dict[str, np.ndarray] = {}
    with FaceAnalyzer.from_config(enrollment_vision(VisionConfig())) as analyzer:
        threshold = float(analyzer.embedder.default_threshold)
        for a, b, _ in rows:
            for name in (a, b):
                if name not in vectors:
                    faces = analyzer.analyze(cv2.imread(str(root / name)))
                    if faces:
                        vectors[name] = faces[0].embedding.vector.astype(np.float32)
    exact, rounded, same = [], [], []
    for a, b, s in rows:
        if a in vectors and b in vectors:
            enrolled16 = vectors[a].astype(np.float16).astype(np.float32)
            enrolled16 /= np.linalg.norm(enrolled16)
            exact.append(float(vectors[a] @ vectors[b]))
            rounded.append(float(enrolled16 @ vectors[b]))
            same.append(s.strip() in ("1", "true", "True"))
    e, r = np.array(exact), np.array(rounded)
    flips = int(np.sum((e >= threshold) != (r >= threshold)))
    change = np.abs(e - r)
    return {
        "float16": {
            "pairs": len(exact),
            "threshold": threshold,
            "max_abs_similarity_change": float(change.max()),
            "mean_abs_similarity_change": float(change.mean()),
            "decisions_flipped": flips,
        }
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    delay = sub.add_parser("delay")
    delay.add_argument("--changes", type=int, default=100)
    delay.add_argument("--spacing-s", type=float, default=0.05)
    delay.set_defaults(run=cmd_delay)
    sim = sub.add_parser("sim")
    sim.add_argument("--devices", type=int, default=100)
    sim.add_argument("--persons", type=int, default=10_000)
    sim.add_argument("--samples", type=int, default=3)
    sim.add_argument("--renames", type=int, default=50)
    sim.add_argument("--max-queued-messages", type=int, default=100_000)
    sim.add_argument("--join-timeout-s", type=float, default=600)
    sim.set_defaults(run=cmd_sim)
    f16 = sub.add_parser("float16")
    f16.add_argument("--pairs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/dev/pairs.csv")
    f16.set_defaults(run=cmd_float16)
    args = parser.parse_args()
    print(json.dumps(args.run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
