"""Fault injection against `edgeface run` and a real Mosquitto that the tests stop, kill and restart.

Each test is bounded by deadlines; the figures they print (``-s``) are the ones in README "Reliability".
``EDGEFACE_FAULT_RESTARTS`` makes the outage test restart the daemon more often (default 2: one SIGTERM,
then SIGKILLs); the README figure of 20 SIGKILLs comes from ``EDGEFACE_FAULT_RESTARTS=21``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeface.config import load_settings
from edgeface.mqtt.signing import sign
from edgeface.service.daemon import Daemon
from tests.conftest import REPO, Broker, MqttProbe

pytestmark = pytest.mark.slow

EVENT_TOPICS = ("recognition", "unknown")
KEY_ID = "door-controller"
SECRET = "a-long-shared-secret-for-the-door"


def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def _replay(tmp_path: Path, samples_dir: Path) -> Path:
    """A looping door scene: a face, an empty frame (the track ends), another face, empty again."""
    folder = tmp_path / "replay"
    folder.mkdir()
    blank = np.full((480, 640, 3), 255, np.uint8)
    shutil.copy(samples_dir / "obama.jpg", folder / "0.jpg")
    cv2.imwrite(str(folder / "1.png"), blank)
    shutil.copy(samples_dir / "biden.jpg", folder / "2.jpg")
    cv2.imwrite(str(folder / "3.png"), blank)
    return folder


def _config(tmp_path: Path, port: int, replay: Path, device: str, extra: str = "") -> Path:
    path = tmp_path / "edgeface.toml"
    path.write_text(
        f'[device]\nid = "{device}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[source]\nuri = "{replay}"\nrealtime = true\nloop = true\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreconnect_max_s = 1.0\n'
        "[decision]\ncooldown_s = 0.0\n[tracker]\nmax_age_s = 0.2\n"
        "[service]\nstatus_interval_s = 1.0\n" + extra
    )
    return path


class RunProcess:
    """`edgeface run` in a subprocess; its stdout (one line per published event) and stderr go to files."""

    def __init__(self, config: Path, name: str, *, preexec: Callable[[], None] | None = None) -> None:
        self.out = config.parent / f"{name}.out"
        self.err = config.parent / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeface", "run", "--config", str(config)],
                stdout=out,
                stderr=err,
                cwd=REPO,
                preexec_fn=preexec,  # noqa: PLW1509 -- only resource limits, before exec
            )

    def events(self) -> list[dict[str, Any]]:
        """The events this run published (echoed on stdout after they were queued durably)."""
        found = []
        for line in self.out.read_text().splitlines():
            topic, _, payload = line.partition(" ")
            if topic.rsplit("/", 1)[-1] in EVENT_TOPICS:
                found.append(json.loads(payload))
        return found

    def log(self) -> str:
        return self.err.read_text()

    def readies(self) -> int:
        return self.log().count(" ready: device ")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise AssertionError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def daemon(config: Path, name: str, **kwargs: Any) -> Iterator[RunProcess]:
    run = RunProcess(config, name, **kwargs)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)


class Collector:
    """A door controller's subscriber: persistent MQTT v5 session, so the broker queues for it while it is away."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(topic_filter, qos=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def event_ids(self) -> list[str]:
        with self._lock:
            found = list(self.messages)
        return [json.loads(p)["event_id"] for t, p in found if t.rsplit("/", 1)[-1] in EVENT_TOPICS]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_outage_with_daemon_restarts_and_kills_loses_no_event(tmp_path: Path, samples_dir: Path) -> None:
    restarts = int(os.environ.get("EDGEFACE_FAULT_RESTARTS", "2"))
    broker = Broker(tmp_path / "broker", persistent=True)
    broker.workdir.mkdir()
    broker.start()
    config = _config(tmp_path, broker.port, _replay(tmp_path, samples_dir), "outage")
    collector = Collector(broker.port, "edgeface/outage/#")
    runs: list[RunProcess] = []
    try:
        first = RunProcess(config, "run0")
        runs.append(first)
        _wait("a first event delivered live", lambda: len(collector.event_ids()) >= 1, 120)
        broker.stop()  # the outage starts (a clean stop: the broker keeps the collector's session)
        outage_started = time.monotonic()
        kills = 0
        for n in range(restarts + 1):
            run = runs[-1]
            produced_before = len(run.events())
            _wait(
                f"events queued by run {n}",
                lambda run=run, before=produced_before: len(run.events()) >= before + 2,  # type: ignore[misc]
                120,
            )
            if n == restarts:
                break
            # A clean stop (SIGTERM) first, then crashes (SIGKILL).
            sig = signal.SIGTERM if n == 0 else signal.SIGKILL
            code = run.stop(sig)
            assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), run.log()[-3000:]
            kills += sig == signal.SIGKILL
            runs.append(RunProcess(config, f"run{n + 1}"))
        outage_s = time.monotonic() - outage_started
        broker.start()  # the broker is back on the same port
        produced = [e["event_id"] for run in runs for e in run.events()]
        _wait(
            "every produced event delivered",
            lambda: set(produced) <= set(collector.event_ids()),
            120,
        )
        delivered = collector.event_ids()
        assert runs[-1].stop() == 0
    finally:
        collector.close()
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(10)
        broker.stop()
    duplicates = len(delivered) - len(set(delivered))
    print(
        f"\noutage {outage_s:.0f} s, {restarts} daemon restarts ({kills} SIGKILL): "
        f"{len(set(produced))} events produced, {len(set(produced) & set(delivered))} delivered, "
        f"{len(set(produced) - set(delivered))} lost, {duplicates} duplicates (dropped by event_id)"
    )
    assert len(produced) == len(set(produced))  # event ids are unique
    assert not set(produced) - set(delivered)


def _signed(verb: str, request_id: str) -> str:
    return json.dumps(sign({"request_id": request_id}, verb, KEY_ID, SECRET.encode()))


def test_replays_after_a_reload_and_a_restart_are_unauthorized(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe, caplog: pytest.LogCaptureFixture
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({KEY_ID: SECRET}))
    keys.chmod(0o600)
    security = f'[security]\nrequire_signature = true\nkeys_file = "{keys}"\n'
    config = _config(tmp_path, mosquitto.port, _replay(tmp_path, samples_dir), "signed", security)
    root = "edgeface/signed"
    captured = _signed("status", "captured")

    def readies() -> int:
        return sum(" ready: device " in r.getMessage() for r in caplog.records)

    def start() -> tuple[threading.Event, threading.Thread]:
        stop = threading.Event()
        thread = threading.Thread(target=Daemon(load_settings(config), config, stop).run, name="test-daemon")
        thread.start()
        return stop, thread

    def ask(payload: str, request_id: str) -> dict[str, Any]:
        mqtt_probe.publish(f"{root}/cmd/status", payload)
        return mqtt_probe.wait_json(f"{root}/reply/{request_id}", timeout=60)

    caplog.set_level("INFO")
    stop, thread = start()
    replays = 0
    try:
        _wait("the daemon ready", lambda: readies() == 1, 120)
        assert ask(captured, "captured")["ok"] is True
        # A reload: the configuration changes on disk, the components restart in-process.
        config.write_text(config.read_text().replace("status_interval_s = 1.0", "status_interval_s = 2.0"))
        _wait("the reload", lambda: readies() == 2, 120)
        reply = ask(captured, "captured")
        assert (reply["ok"], reply["error"]["code"]) == (False, "unauthorized"), reply
        assert "nonce already used" in reply["error"]["message"]
        replays += 1
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    stop, thread = start()  # a restart: a new process would read the same state file
    try:
        _wait("the restart", lambda: readies() == 3, 120)
        reply = ask(captured, "captured")
        assert (reply["ok"], reply["error"]["code"]) == (False, "unauthorized"), reply
        replays += 1
        assert ask(_signed("status", "fresh"), "fresh")["ok"] is True  # a fresh signature still works
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    print(f"\nreplays after a reload and a restart: {replays}/{replays} refused")


def test_twenty_reloads_keep_rss_flat(tmp_path: Path, samples_dir: Path, mosquitto: Broker) -> None:
    reloads = 20
    config = _config(tmp_path, mosquitto.port, _replay(tmp_path, samples_dir), "reloads")
    samples: list[float] = []
    with daemon(config, "reloads") as run:
        _wait("the daemon ready", lambda: run.readies() == 1, 120)
        base = config.read_text()
        for n in range(1, reloads + 1):
            config.write_text(base.replace("status_interval_s = 1.0", f"status_interval_s = {1.0 + n / 100}"))
            _wait(f"reload {n}", lambda n=n: run.readies() == n + 1, 120)  # type: ignore[misc]
            time.sleep(1.0)  # let the new run settle into its steady state before sampling
            samples.append(run.rss_mb())
        assert run.stop() == 0
    # Samples alternate by ~7 MB with what is in flight at that instant; the floor of 5 samples is what a leak lifts.
    first, last = min(samples[:5]), min(samples[-5:])
    print(
        f"\nRSS over {reloads} reloads (MB): {', '.join(f'{s:.0f}' for s in samples)}; "
        f"lowest of the first 5 {first:.1f}, of the last 5 {last:.1f}, growth {last - first:+.1f}"
    )
    # Before the models were kept across reloads each reload added ~36-45 MB.
    assert last - first < 10.0


def test_a_vanishing_looping_source_exits_with_the_source_error_code(
    tmp_path: Path, samples_dir: Path, mosquitto: Broker
) -> None:
    replay = _replay(tmp_path, samples_dir)
    config = _config(tmp_path, mosquitto.port, replay, "vanish")
    with daemon(config, "vanish") as run:
        _wait("the daemon ready", lambda: run.readies() == 1, 120)
        shutil.rmtree(replay)  # an unmounted share, a deleted folder
        assert run.proc.wait(60) == 4, run.log()[-3000:]
    log = run.log()
    assert "edgeface: error: source replay: the looping replay cannot start over" in log
    assert "Traceback" not in log


def test_binary_config_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgeface.cli import main

    config = tmp_path / "edgeface.toml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert main(["run", "--config", str(config)]) == 2
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"config file {config}: not UTF-8 text" in err
    assert "Traceback" not in err


def _no_bigger_files_than(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Without this the kernel kills the writer (SIGXFSZ); ignored, the write fails with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_disk_full_in_the_cli_is_a_typed_error_and_the_database_stays_intact(tmp_path: Path, samples_dir: Path) -> None:
    config = tmp_path / "edgeface.toml"
    config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n')
    cli = [sys.executable, "-m", "edgeface", "db"]
    ok = subprocess.run(
        [*cli, "enroll", "Barack Obama", str(samples_dir / "obama.jpg"), "--config", str(config)],
        check=False,
        capture_output=True,
        cwd=REPO,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    db_file = tmp_path / "state" / "faces.npz"
    before = db_file.read_bytes()
    # The next save needs a file bigger than the database is now: the "disk" is full.
    full = subprocess.run(
        [*cli, "enroll", "Joe Biden", str(samples_dir / "biden.jpg"), "--config", str(config)],
        check=False,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        preexec_fn=_no_bigger_files_than(len(before)),
    )
    err = full.stderr.decode()
    assert full.returncode == 5, err
    assert f"cannot save the database {db_file}: File too large" in err
    assert "Traceback" not in err
    assert db_file.read_bytes() == before  # untouched
    listed = subprocess.run(
        [*cli, "list", "--json", "--config", str(config)], check=False, capture_output=True, cwd=REPO, timeout=120
    )
    assert [p["name"] for p in json.loads(listed.stdout)["persons"]] == ["Barack Obama"]
    assert db_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (needs root and CAP_SYS_ADMIN; skipped elsewhere, where the RLIMIT test above still runs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_over_mqtt_is_a_storage_reply_and_the_database_stays_intact(
    small_disk: Path, tmp_path: Path, samples_dir: Path, mosquitto: Broker, mqtt_probe: MqttProbe
) -> None:
    import base64

    state = small_disk / "state"
    config = _config(tmp_path, mosquitto.port, _replay(tmp_path, samples_dir), "fulldisk")
    config.write_text(config.read_text().replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{state}"'))
    settings = load_settings(config)
    stop = threading.Event()
    thread = threading.Thread(target=Daemon(settings, None, stop).run, name="test-daemon")
    thread.start()
    root = "edgeface/fulldisk"
    try:
        mqtt_probe.wait_for(f"{root}/status", timeout=120, predicate=lambda m: m.payload == b"online")
        photo = base64.b64encode((samples_dir / "obama.jpg").read_bytes()).decode()
        mqtt_probe.publish(f"{root}/cmd/enroll", json.dumps({"request_id": "e1", "name": "Obama", "images": [photo]}))
        assert mqtt_probe.wait_json(f"{root}/reply/e1", timeout=60)["ok"] is True
        before = (state / "faces.npz").read_bytes()
        # Fill the disk to the last byte.
        with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        with contextlib.suppress(OSError), (small_disk / "filler2").open("wb") as filler:
            while True:
                filler.write(b"\0" * 512)
                filler.flush()
        photo2 = base64.b64encode((samples_dir / "biden.jpg").read_bytes()).decode()
        mqtt_probe.publish(f"{root}/cmd/enroll", json.dumps({"request_id": "e2", "name": "Biden", "images": [photo2]}))
        reply = mqtt_probe.wait_json(f"{root}/reply/e2", timeout=60)  # delivered although the outbox cannot write
        assert (reply["ok"], reply["error"]["code"]) == (False, "storage"), reply
        assert str(state / "faces.npz") in reply["error"]["message"]
        assert "No space left on device" in reply["error"]["message"]
        assert (state / "faces.npz").read_bytes() == before
        mqtt_probe.publish(f"{root}/cmd/list", json.dumps({"request_id": "l1"}))
        assert mqtt_probe.wait_json(f"{root}/reply/l1", timeout=60)["total"] == 1
        doc = mqtt_probe.wait_json(f"{root}/state", timeout=30, predicate=lambda d: d["broker"]["outbox"]["spilled"])
        assert doc["broker"]["outbox"]["durable"] is True
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
