"""Watch the database and config files and call back when one of them changes on disk; validate a new config.

Editors and our own atomic writes replace files (write temp, rename), so the parent directory is
watched and events are matched by file name; bursts of events are coalesced with a short debounce.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from edgeface.config import Settings, load_settings
from edgeface.errors import EdgefaceError

_LOGGER = logging.getLogger(__name__)

# One save produces several events (create temp, modify, move); 0.3 s joins them into one reload
# while still reacting well within a second.
DEBOUNCE_S = 0.3


class _StopRace(logging.Filter):
    """Drops watchdog's ERROR for an event read while its observer stops (``InotifyEmitter.queue_events()
    called when the thread is inactive``): the emitter returns without events then, nothing is lost,
    yet the record would read as a fault in the daemon's log and ``state.last_error``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRace())


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FileWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            path = raw.decode() if isinstance(raw, bytes) else raw
            if path:
                self._watcher.touched(Path(path))


class FileWatcher:
    """Calls ``callback(path)`` from a timer thread, once per burst of changes to a watched file."""

    def __init__(self, files: dict[Path, Callable[[Path], None]]) -> None:
        self._files = {p.resolve(): cb for p, cb in files.items()}
        self._observer = Observer()
        self._lock = threading.Lock()
        self._timers: dict[Path, threading.Timer] = {}
        self._stopped = False
        for directory in {p.parent for p in self._files}:
            directory.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(_Handler(self), str(directory), recursive=False)

    def touched(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved not in self._files:
            return
        with self._lock:
            if self._stopped:
                return
            old = self._timers.get(resolved)
            if old is not None:
                old.cancel()
            timer = threading.Timer(DEBOUNCE_S, self._fire, args=(resolved,))
            timer.name = f"reload:{resolved.name}"
            self._timers[resolved] = timer
            timer.start()

    def _fire(self, path: Path) -> None:
        with self._lock:
            self._timers.pop(path, None)
        try:
            self._files[path](path)
        except Exception:
            _LOGGER.exception("reload of %s failed; keeping the previous state", path)

    def start(self) -> None:
        self._observer.name = "reload:observer"
        self._observer.start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            timers = list(self._timers.values())
            self._timers.clear()
        for timer in timers:
            timer.cancel()
        self._observer.stop()
        self._observer.join(timeout=5)
        for timer in timers:
            timer.join(timeout=5)


class ConfigReload:
    """A config file that changed on disk: validated, and kept for the next run when it is valid and new.

    An invalid file is logged and ignored (the running configuration stays); a valid, different one
    asks the current run to stop (``stop``), and the daemon starts the next run with ``take()``.
    """

    def __init__(self, path: Path, stop: threading.Event) -> None:
        self.path = path
        self._stop = stop
        self._lock = threading.Lock()
        self._pending: Settings | None = None

    def changed(self, current: Settings) -> None:
        """The watcher saw the file change (called on the watcher's thread)."""
        try:
            new = load_settings(self.path)
        except EdgefaceError as exc:
            _LOGGER.error("config %s changed but is invalid; keeping the running configuration:\n%s", self.path, exc)
            return
        if new == current:
            return
        _LOGGER.info("config %s changed; restarting the components", self.path)
        with self._lock:
            self._pending = new
        self._stop.set()

    def take(self) -> Settings | None:
        """The settings of the next run, once: None when no valid change is pending."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
