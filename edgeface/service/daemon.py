"""The daemon: builds every component from Settings, runs until stopped, tears down in reverse order.

Start order (teardown is the reverse, through one ExitStack): models → database and unknown spool
→ embedded broker (when no broker is configured) → MQTT link and command worker → pipeline →
file watcher. ``READY=1`` is sent once all of them are up. The main thread then only supervises:
watchdog pings while every stage's heartbeat is fresh, status/state updates, spool expiry.

A changed config file is validated first; a valid one restarts the components in-process with the
new settings (the whole object is swapped, never patched), an invalid one is logged and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion

from edgeface import __version__
from edgeface.config import Settings, load_settings
from edgeface.data import Decision
from edgeface.errors import BrokerError, EdgefaceError
from edgeface.liveness.policy import build_policy
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate, enrollment_vision
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt import events
from edgeface.mqtt.broker import PROTOCOL as EMBEDDED_PROTOCOL
from edgeface.mqtt.broker import EmbeddedBroker
from edgeface.mqtt.commands import CommandDispatcher
from edgeface.mqtt.discovery import Discovery, DiscoveryBuilder
from edgeface.mqtt.link import MqttLink, encode_payload
from edgeface.mqtt.signing import Verifier, load_keys
from edgeface.mqtt.topics import Topics
from edgeface.pipeline.rules import Thresholds
from edgeface.pipeline.stages import Pipeline
from edgeface.service.device import Device
from edgeface.service.reload import FileWatcher
from edgeface.service.systemd import Notifier
from edgeface.sources.base import open_source
from edgeface.vision.analyzer import FaceAnalyzer

_LOGGER = logging.getLogger(__name__)

# Supervisor tick: fast enough for a 2 s stop and for watchdog intervals down to a few seconds.
TICK_S = 0.5
# How long start-up waits for the broker before going on without it (the link keeps retrying).
CONNECT_WAIT_S = 5.0


@dataclass
class _Running:
    """What one start of the components produced; rebuilt whole on a config reload."""

    settings: Settings
    topics: Topics
    link: MqttLink
    pipeline: Pipeline
    device: Device
    db: FaceDatabase
    spool: UnknownSpool
    discovery: Discovery | None
    started_at: float
    source_state: dict[str, Any]


class Daemon:
    """``edgeface run``: one device, one source, one broker connection."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        stop: threading.Event,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        """``echo`` receives ``"<topic> <payload>"`` for each published event (the CLI prints them)."""
        self.settings = settings
        self.echo = echo
        self.config_path = config_path
        self.stop = stop
        self.notifier = Notifier()
        self._reload_requested = threading.Event()
        self._pending: Settings | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``stop`` is set (signal) or a finite replay ends; returns the exit code."""
        while True:
            with contextlib.ExitStack() as stack:
                running = self._start(stack)
                self.notifier.ready(self._status_line(running))
                _LOGGER.info("edgeface %s ready: device %s", __version__, running.settings.device.id)
                self._supervise(running)
                self.notifier.stopping()
                _LOGGER.info("stopping")
            if not self._reload_requested.is_set() or self._pending is None:
                return 0
            _LOGGER.info("restarting with the reloaded configuration")
            self.settings, self._pending = self._pending, None
            self._reload_requested.clear()
            self.stop.clear()

    def _start(self, stack: contextlib.ExitStack) -> _Running:
        s = self.settings
        s.device.state_dir.mkdir(parents=True, exist_ok=True)
        topics = Topics(s.mqtt.base_topic, s.device.id)
        started_at = time.time()

        # Built (not opened) first: a wrong path fails before anything else starts.
        source = open_source(s.source.uri, width=s.source.width, height=s.source.height, fps=s.source.fps)
        analyzer = FaceAnalyzer.from_config(s.vision)
        stack.callback(analyzer.close)
        embedder = analyzer.embedder
        db = FaceDatabase.open(
            s.db_path, embedder.model_id, embedder.dim, backups=s.database.backups, keep_images=s.database.keep_images
        )
        if db.fallback_from is not None:
            _LOGGER.warning("database %s could not be read; running on backup %s", s.db_path, db.fallback_from)
        # The same resolution the pipeline makes: enrollment's duplicate check and unknown clustering
        # use the match threshold in force.
        match_threshold = Thresholds.resolve(s.decision, embedder.default_threshold).match
        spool = UnknownSpool.from_config(
            s.spool_dir, s.unknowns, match_threshold, embedder.model_id, keep_snapshots=s.unknowns.snapshots
        )
        stack.callback(spool.flush)
        # Its own analyzer: the pipeline's is not thread-safe, and enrollment uses the full-range
        # detector so a second, smaller face in a photo is seen and refused.
        enroll_analyzer = FaceAnalyzer.from_config(enrollment_vision(s.vision))
        stack.callback(enroll_analyzer.close)
        gate = EnrollmentGate.from_config(s.database)
        enroller = Enroller(db, enroll_analyzer, gate, duplicate_threshold=match_threshold)

        host, port, protocol = s.mqtt.host, s.mqtt.port, MQTTProtocolVersion.MQTTv5
        if host is None:
            broker = self._embedded_broker(s.mqtt.embedded_port)
            stack.callback(broker.stop)
            # amqtt speaks 3.1.1 only; command replies then go to reply/<request_id>.
            host, port, protocol = "127.0.0.1", broker.port, EMBEDDED_PROTOCOL
            _LOGGER.info("no broker configured: embedded MQTT broker on %s:%d", host, port)

        source_state: dict[str, Any] = {"uri": source.name, "state": "starting", "detail": ""}
        pipeline_box: list[Pipeline] = []
        running_box: list[_Running] = []

        def status() -> dict[str, Any]:
            return self._state_document(running_box[0]) if running_box else {"state": "starting"}

        device = Device(
            db,
            enroller,
            spool,
            track_samples=lambda track_id: pipeline_box[0].track_samples(track_id) if pipeline_box else [],
            status=status,
            on_persons_changed=lambda: self._persons_changed(running_box[0]) if running_box else None,
        )
        # The link outlives the pipeline so the last decisions and the retained ``offline`` go out.
        link_stop = threading.Event()
        verifier = (
            Verifier(load_keys(s.security.keys_file), s.security.max_skew_s) if s.security.require_signature else None
        )
        dispatcher_box: list[CommandDispatcher] = []

        def on_command(verb: str, payload: bytes, properties: Any) -> None:
            dispatcher_box[0].submit(verb, payload, properties)

        link = MqttLink(s.mqtt, topics, s.device.name, on_command, link_stop, host=host, port=port, protocol=protocol)
        stack.callback(link.stop)
        dispatcher = CommandDispatcher(device, link, topics, s.security, link_stop, verifier=verifier)
        dispatcher_box.append(dispatcher)
        dispatcher.start()
        # LIFO: the worker is told to stop and joined (answering what is queued) before the link closes.
        stack.callback(dispatcher.join, s.pipeline.stop_timeout_s)
        stack.callback(link_stop.set)
        link.start()
        try:
            link.wait_connected(CONNECT_WAIT_S)
        except EdgefaceError as exc:
            _LOGGER.warning("broker %s:%d not reachable yet (%s); events are queued until it is", host, port, exc)

        def on_source_state(state: str, detail: str) -> None:
            source_state.update(state=state, detail=detail)
            _LOGGER.info("source %s: %s %s", source_state["uri"], state, detail)
            if running_box:
                self._publish_state(running_box[0])

        pipeline_stop = threading.Event()
        pipeline = Pipeline.from_analyzer(
            source,
            analyzer,
            db,
            spool=spool,
            liveness=build_policy(s.liveness),
            source_config=s.source,
            decision_config=s.decision,
            tracker_config=s.tracker,
            pipeline_config=s.pipeline,
            on_decision=lambda decision: self._publish_decision(running_box[0], decision),
            on_presence=lambda person_id, name, on: self._publish_presence(running_box[0], person_id, name, on),
            on_source_state=on_source_state,
            unknown_snapshots=s.unknowns.snapshots or s.unknowns.publish_snapshot,
            stop=pipeline_stop,
        )
        pipeline_box.append(pipeline)
        discovery = (
            Discovery(link, DiscoveryBuilder(topics, s.mqtt.discovery_prefix, s.device.name, __version__))
            if s.mqtt.discovery
            else None
        )
        running = _Running(s, topics, link, pipeline, device, db, spool, discovery, started_at, source_state)
        running_box.append(running)
        if discovery is not None:
            discovery.announce((p.id, p.name) for p in db.list()[1])
        pipeline.start()
        stack.callback(self._stop_pipeline, pipeline)

        if s.service.reload_on_change:
            watched = {s.db_path: lambda _p: self._db_changed(running)}
            if self.config_path is not None:
                watched[self.config_path] = lambda _p: self._config_changed()
            watcher = FileWatcher(watched)
            watcher.start()
            stack.callback(watcher.stop)
        return running

    @staticmethod
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

    def _stop_pipeline(self, pipeline: Pipeline) -> None:
        pipeline.stop()
        alive = pipeline.join()
        if alive:
            _LOGGER.warning("threads still alive after %.1fs: %s", pipeline.config.stop_timeout_s, ", ".join(alive))

    def _supervise(self, running: _Running) -> None:
        s = running.settings
        next_status = 0.0
        next_ping = 0.0
        ping_every = self.notifier.watchdog_interval_s or TICK_S
        while not self.stop.wait(TICK_S):
            now = time.monotonic()
            if running.pipeline.drained.is_set():
                _LOGGER.info("source %s ended; stopping", running.source_state["uri"])
                self.stop.set()
                break
            if now >= next_ping:
                stale = self._stale_stages(running, now)
                if stale:
                    _LOGGER.warning("no watchdog ping: stages without progress: %s", ", ".join(stale))
                else:
                    self.notifier.watchdog()
                next_ping = now + ping_every
            if now >= next_status:
                running.spool.expire(time.time())
                self._publish_state(running)
                self.notifier.status(self._status_line(running))
                next_status = now + s.service.status_interval_s

    def _stale_stages(self, running: _Running, now: float) -> list[str]:
        limit = running.settings.pipeline.heartbeat_timeout_s
        return sorted(name for name, beat in running.pipeline.heartbeats().items() if now - beat > limit)

    # --- reload ---------------------------------------------------------------------------------

    def _db_changed(self, running: _Running) -> None:
        if running.db.reload():
            _LOGGER.info("database %s changed on disk: %d persons", running.db.path, running.db.snapshot().persons)
            self._persons_changed(running)

    def _config_changed(self) -> None:
        assert self.config_path is not None
        try:
            new = load_settings(self.config_path)
        except EdgefaceError as exc:
            _LOGGER.error(
                "config %s changed but is invalid; keeping the running configuration:\n%s", self.config_path, exc
            )
            return
        if new == self.settings:
            return
        _LOGGER.info("config %s changed; restarting the components", self.config_path)
        self._pending = new
        self._reload_requested.set()
        self.stop.set()

    # --- publishing -----------------------------------------------------------------------------

    def _publish(self, running: _Running, topic: str, payload: dict[str, Any] | str, retain: bool = False) -> None:
        running.link.publish(topic, payload, retain=retain)
        if self.echo is not None:
            self.echo(f"{topic} {encode_payload(payload).decode()}")

    def _publish_decision(self, running: _Running, decision: Decision) -> None:
        device_id = running.settings.device.id
        total_ms = (time.monotonic() - decision.captured_at) * 1000.0
        if decision.status == "known":
            self._publish(
                running, running.topics.recognition, events.recognition_event(decision, device_id, total_ms=total_ms)
            )
            return
        snapshot = None
        if running.settings.unknowns.publish_snapshot and decision.unknown_id is not None:
            snapshot = running.spool.snapshot(decision.unknown_id)
        payload = events.unknown_event(decision, device_id, snapshot=snapshot, total_ms=total_ms)
        self._publish(running, running.topics.unknown, payload)

    def _publish_presence(self, running: _Running, person_id: str, name: str, on: bool) -> None:
        self._publish(running, running.topics.presence(person_id), events.presence_payload(on), retain=True)

    def _persons_changed(self, running: _Running) -> None:
        if running.discovery is not None:
            running.discovery.announce((p.id, p.name) for p in running.db.list()[1])
        self._publish_state(running)

    def _state_document(self, running: _Running) -> dict[str, Any]:
        metrics = running.pipeline.metrics()
        return events.state_document(
            device_id=running.settings.device.id,
            version=__version__,
            started_at=running.started_at,
            fps=float(metrics.get("fps", 0.0)),
            persons=running.db.snapshot().persons,
            broker=running.link.stats(),
            source={**running.source_state, "frames": metrics.get("frames", 0)},
            drops=metrics.get("drops", {}),
            db_fallback=running.db.fallback_from is not None,
            extra={"pipeline": metrics, "unknowns": len(running.spool.list())},
        )

    def _publish_state(self, running: _Running) -> None:
        running.link.publish(running.topics.state, self._state_document(running), retain=True)

    def _status_line(self, running: _Running) -> str:
        metrics = running.pipeline.metrics()
        broker = "connected" if running.link.connected else "disconnected"
        return (
            f"{metrics.get('fps', 0.0):.1f} fps, {running.db.snapshot().persons} persons, broker {broker}, "
            f"source {running.source_state['state']}"
        )
