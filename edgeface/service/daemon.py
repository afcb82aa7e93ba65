"""The daemon: builds every component from Settings, runs until stopped, tears down in reverse order.

``_start`` is a list of named steps, each building one part and pushing its own teardown onto one
``ExitStack``: source (built, not opened: a wrong path fails first) → models → database and unknown
spool → broker (embedded when none is configured) → MQTT link → retained state (presence, last seen,
discovery) and event publisher → pipeline (built) → health → command worker → Home Assistant controls,
then connect → fleet replication → capture (the pipeline starts) → file watcher. The retained state
and the controls subscribe before the first connection.
Teardown is the reverse. ``READY=1`` is sent once all of them are up. The main thread then only
supervises: watchdog pings while every stage's heartbeat is fresh, status/state updates, spool expiry.

A changed config file is validated first; a valid one restarts the components in-process with the
new settings (the whole object is swapped, never patched), an invalid one is logged and ignored.
The models are the one thing a reload keeps when ``[vision]`` and ``[liveness]`` did not change
(``service.models``); ``service.memory`` keeps the rest of the native heap flat.

What must survive a restart lives in the state directory (created 0700): the database, the unknown
spool and ``mqtt.sqlite3`` -- the durable outbox (events queued during an outage) and the nonce
window of signed commands, so neither a restart nor a reload loses an event or reopens a replay.

Exit codes: 0 when stopped or when a finite replay ended; a replay whose file or folder vanished
(or that fails to read) ends with the source error's 4, so that systemd restarts the unit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeface import __version__
from edgeface.config import Settings
from edgeface.errors import EdgefaceError, storage_error
from edgeface.liveness.passive import PassiveLiveness
from edgeface.liveness.policy import build_policy
from edgeface.liveness.still import StillLiveness
from edgeface.logs import LastProblem
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate
from edgeface.matching.unknowns import UnknownSpool
from edgeface.mqtt.commands import CommandDispatcher
from edgeface.mqtt.controls import HaControls, controls_enabled, controls_key
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.publisher import EventPublisher
from edgeface.mqtt.retained import RetainedState
from edgeface.mqtt.signing import load_keys
from edgeface.mqtt.topics import Topics
from edgeface.pipeline.lookup import SnapshotLookup
from edgeface.pipeline.rules import Thresholds
from edgeface.pipeline.settings import PipelineSettings
from edgeface.pipeline.stages import Pipeline, PipelineParts
from edgeface.service.broker import BrokerAddress, open_link, open_verifier, start_broker
from edgeface.service.device import Device
from edgeface.service.events import DeviceEvents, open_retained
from edgeface.service.health import Health, SourceStatus
from edgeface.service.memory import release_memory, release_startup_pages
from edgeface.service.models import ModelCache, Models
from edgeface.service.reload import ConfigReload, FileWatcher
from edgeface.service.signals import SignalStop
from edgeface.service.still import StillImages, event_attributes
from edgeface.service.supervise import supervise
from edgeface.service.systemd import Notifier
from edgeface.sources.base import FrameSource, open_source
from edgeface.vision.analyzer import FaceAnalyzer

if TYPE_CHECKING:
    from edgeface.fleet.replicator import Replicator

_LOGGER = logging.getLogger(__name__)

# How long start-up waits for the broker before going on without it (the link keeps retrying).
CONNECT_WAIT_S = 5.0


class Daemon:
    """``edgeface run``: one device, one source, one broker connection.

    The components of one start are attributes set by the ``_start_*`` steps, in order; every
    callback between them fires only once the step that builds its target has run (commands are
    accepted only after the pipeline and health exist, frames flow only after the link does).
    """

    # --- built by the start steps, rebuilt whole on a config reload ---
    topics: Topics
    _loaded: Models
    analyzer: FaceAnalyzer
    db: FaceDatabase
    spool: UnknownSpool
    enroller: Enroller
    still_analyzer: FaceAnalyzer
    passive: PassiveLiveness | None
    still_liveness: StillLiveness
    still: StillImages
    link: MqttLink
    publisher: EventPublisher
    source_status: SourceStatus
    pipeline: Pipeline
    health: Health
    retained: RetainedState
    controls: HaControls | None
    replicator: Replicator | None = None  # until ``_start_fleet`` (and when fleet.enabled is off)

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None,
        stop: threading.Event,
        echo: Callable[[str], None] | None = None,
        signals: SignalStop | None = None,
    ) -> None:
        """``echo`` receives ``"<topic> <payload>"`` for each published event (the CLI prints them);
        ``signals`` is the lock-free stop request of ``edgeface run``'s signal handlers (other
        threads, such as tests and the config watcher, set ``stop`` directly)."""
        self.settings = settings
        self.echo = echo
        self.stop = stop
        self.signals = signals
        self.notifier = Notifier()
        self._reload = ConfigReload(config_path, stop) if config_path is not None else None
        self._problems = LastProblem()  # the state document's ``last_error``, across reloads
        self._failure: EdgefaceError | None = None
        self._models = ModelCache()  # kept across reloads while [vision] and [liveness] are unchanged

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``stop`` is set (signal) or a finite replay ends; returns the exit code."""
        logging.getLogger().addHandler(self._problems)
        try:
            return self._run()
        finally:
            logging.getLogger().removeHandler(self._problems)
            self._models.close()

    def _run(self) -> int:
        while True:
            with contextlib.ExitStack() as stack:
                self._start(stack)
                self.notifier.ready(self.health.status_line())
                _LOGGER.info("edgeface %s ready: device %s", __version__, self.settings.device.id)
                self._supervise()
                self.notifier.stopping()
                _LOGGER.info("stopping")
            if self._failure is not None:
                raise self._failure
            signalled = self.signals is not None and self.signals.requested
            pending = self._reload.take() if self._reload is not None else None
            if signalled or pending is None:
                return 0
            _LOGGER.info("restarting with the reloaded configuration")
            self.settings = pending
            self.stop.clear()
            release_memory()

    def _start(self, stack: contextlib.ExitStack) -> None:
        s = self.settings
        self._start_state_dir()
        self.topics = Topics(s.mqtt.base_topic, s.device.id)
        started_at = time.time()
        source = self._start_source()
        self._start_models()
        self._start_database(stack)
        self._start_still()
        address = start_broker(s.mqtt, stack)
        self._start_link(stack, address)
        self._start_retained(stack)
        self._start_pipeline(source)
        self._start_health(started_at)
        self._start_commands(stack)
        self._start_controls()
        # Every part is built: start-up's pages go before the run's own come in, and before the device
        # shows as online (service.memory; this thread is the only one that closes models, as it needs).
        release_startup_pages()
        self._connect(address)
        self._start_fleet(stack, address)
        self._start_capture(stack)
        self._start_watcher(stack)

    # --- start steps, in order ------------------------------------------------------------------

    def _start_state_dir(self) -> None:
        state_dir = self.settings.device.state_dir
        try:
            # Owner-only: it holds faces, their embeddings and the queued events.
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, state_dir, "cannot create the state directory") from exc

    def _start_source(self) -> FrameSource:
        s = self.settings.source
        source = open_source(s.uri, width=s.width, height=s.height, fps=s.fps)
        self.source_status = SourceStatus(source.name)
        return source

    def _start_models(self) -> None:
        """Load the models, or keep the previous run's while the model settings are the same (``service.models``)."""
        self._loaded = self._models.get(self.settings)
        self.analyzer = self._loaded.analyzer
        self.still_analyzer = self._loaded.enroll_analyzer  # enrollment's and the still-image verbs': one thread
        self.passive = self._loaded.passive

    def _start_database(self, stack: contextlib.ExitStack) -> None:
        s = self.settings
        embedder = self.analyzer.embedder
        self.db = FaceDatabase.open(
            s.db_path, embedder.model_id, embedder.dim, backups=s.database.backups, keep_images=s.database.keep_images
        )
        if self.db.fallback_from is not None:
            _LOGGER.warning("database %s could not be read; running on backup %s", s.db_path, self.db.fallback_from)
        # The same resolution the pipeline makes: enrollment's duplicate check and unknown clustering
        # use the match threshold in force.
        match_threshold = Thresholds.resolve(s.decision, embedder.default_threshold).match
        self.spool = UnknownSpool.from_config(
            s.spool_dir, s.unknowns, match_threshold, embedder.model_id, keep_snapshots=s.unknowns.snapshots
        )
        stack.callback(self.spool.flush)
        gate = EnrollmentGate.from_config(s.database)
        self.enroller = Enroller(self.db, self.still_analyzer, gate, duplicate_threshold=match_threshold)

    def _start_still(self) -> None:
        """The still-image verbs and the ``liveness`` verb, on the command worker's analyzer (same thread)."""
        self.still_liveness = StillLiveness(self.still_analyzer.locate, self._loaded.still_passive)
        self.still = StillImages.from_config(
            self.settings,
            self.still_analyzer,
            self.db,
            self.spool,
            liveness=self.still_liveness.passive,
            emotion=self._loaded.still_emotion,
        )

    def _start_link(self, stack: contextlib.ExitStack, address: BrokerAddress) -> None:
        """The link (not connected yet); it outlives the pipeline so the last events and ``offline`` go out."""
        # Separate from ``self.stop``: the link keeps running until the stages drained.
        self._link_stop = threading.Event()
        self.link = open_link(self.settings, self.topics, self._on_command, self._link_stop, address, stack)

    def _start_pipeline(self, source: FrameSource) -> None:
        """The pipeline, built but not started (``_start_capture`` starts it once everything else runs)."""
        s = self.settings
        settings = PipelineSettings.of(
            self.analyzer.embedder,
            source=s.source,
            decision=s.decision,
            tracker=s.tracker,
            pipeline=s.pipeline,
            unknown_snapshots=s.unknowns.snapshots or s.unknowns.publish_snapshot,
        )
        parts = PipelineParts(
            spool=self.spool,
            liveness=build_policy(s.liveness, self.still_liveness.passive.threshold),
            passive=self.passive,
            attributes=event_attributes(self._loaded.event_emotion),
        )
        events = DeviceEvents(
            self.publisher,
            self.retained,
            self.source_status,
            controls=lambda: self.controls,
            document=self._state_document,
        )
        lookup = SnapshotLookup.over(self.db, s.decision.top_k)
        self.pipeline = Pipeline(source, self.analyzer, lookup, settings, events, parts)

    def _start_health(self, started_at: float) -> None:
        self.health = Health(
            self.settings.device.id,
            started_at,
            pipeline=self.pipeline,
            db=self.db,
            spool=self.spool,
            link=self.link,
            source=self.source_status,
            heartbeat_timeout_s=self.settings.pipeline.heartbeat_timeout_s,
            last_problem=self._problems.last,
        )

    def _start_commands(self, stack: contextlib.ExitStack) -> None:
        s = self.settings
        device = Device(
            self.db,
            self.enroller,
            self.spool,
            track_samples=self.pipeline.samples.get,
            status=self.health.document,
            on_persons_changed=self._persons_changed,
            fleet_status=self._fleet_status if s.fleet.enabled else None,
            still_liveness=self.still_liveness,
            device_id=s.device.id,
            still=self.still,
        )
        verifier = open_verifier(s, stack)
        link, topics = self.link, self.topics
        self._dispatcher = CommandDispatcher(device, link, topics, s.security, self._link_stop, verifier=verifier)
        self._dispatcher.start()
        # LIFO: the worker is told to stop and joined (answering what is queued) before the link closes.
        stack.callback(self._dispatcher.join, s.pipeline.stop_timeout_s)
        stack.callback(self._link_stop.set)

    def _connect(self, address: BrokerAddress) -> None:
        self.link.start()
        try:
            self.link.wait_connected(CONNECT_WAIT_S)
        except EdgefaceError as exc:
            _LOGGER.warning(
                "broker %s:%d not reachable yet (%s); events are queued until it is", address.host, address.port, exc
            )

    def _start_retained(self, stack: contextlib.ExitStack) -> None:
        """Retained presence, last seen and discovery (kept true on the broker); the event publisher feeding them."""
        s = self.settings
        self.retained, self.publisher = open_retained(s, self.link, self.topics, self.db, self.spool, self.echo)
        # Runs after the pipeline stopped and before the link drains: whoever is present goes 'off'.
        stack.callback(self.retained.stop)

    def _start_controls(self) -> None:
        """Home Assistant's text and buttons, as commands to the dispatcher (when offered)."""
        s = self.settings
        self.controls = None
        if controls_enabled(s.mqtt, s.security):
            key = controls_key(s.mqtt, load_keys(s.security.keys_file))
            self.controls = HaControls(self.link, self.topics, self._dispatcher, key)
            self.controls.attach()

    def _start_fleet(self, stack: contextlib.ExitStack, address: BrokerAddress) -> None:
        """Replication of the database with the fleet through the broker (``fleet.enabled``)."""
        if not self.settings.fleet.enabled:
            return
        from edgeface.fleet.service import start_replicator  # here: a device outside a fleet holds none of it

        self.replicator = start_replicator(
            self.settings,
            self.db,
            host=address.host,
            port=address.port,
            protocol=address.protocol,
            on_applied=self._persons_changed,
        )
        stack.callback(self.replicator.stop)

    def _start_capture(self, stack: contextlib.ExitStack) -> None:
        self.pipeline.start()
        stack.callback(self.pipeline.shutdown)

    def _start_watcher(self, stack: contextlib.ExitStack) -> None:
        s = self.settings
        if not s.service.reload_on_change:
            return
        db = self.db
        watched: dict[Path, Callable[[Path], None]] = {s.db_path: lambda _p: self._db_changed(db)}
        if self._reload is not None:
            reload = self._reload
            watched[reload.path] = lambda _p: reload.changed(self.settings)
        watcher = FileWatcher(watched)
        watcher.start()
        stack.callback(watcher.stop)

    # --- supervision ------------------------------------------------------------------------------

    def _supervise(self) -> None:
        failure = supervise(
            pipeline=self.pipeline,
            health=self.health,
            notifier=self.notifier,
            spool=self.spool,
            publisher=self.publisher,
            status_interval_s=self.settings.service.status_interval_s,
            source_uri=self.source_status.uri,
            wait=self._wait,
        )
        self._failure = failure
        self.stop.set()

    def _wait(self, timeout: float) -> bool:
        """Sleep one tick; True once a stop was asked for (by a signal or another thread)."""
        if self.signals is None:
            return self.stop.wait(timeout)
        if self.signals.wait(timeout):
            # The handler only flagged it: setting the event (which takes a lock) happens here.
            self.stop.set()
        return self.stop.is_set()

    # --- callbacks between the components ----------------------------------------------------------

    def _on_command(self, verb: str, payload: bytes, properties: Any) -> None:
        self._dispatcher.submit(verb, payload, properties)

    def _fleet_status(self) -> dict[str, Any]:
        if self.replicator is None:
            return {"enabled": True, "connected": False, "synced": False, "detail": "starting"}
        return self.replicator.status()

    def _state_document(self) -> dict[str, Any]:
        return self.health.document()

    def _persons_changed(self) -> None:
        self.retained.persons_changed()
        self.publisher.state(self._state_document())

    # --- reload ---------------------------------------------------------------------------------

    def _db_changed(self, db: FaceDatabase) -> None:
        if db.reload():
            _LOGGER.info("database %s changed on disk: %d persons", db.path, db.snapshot().persons)
            self._persons_changed()
