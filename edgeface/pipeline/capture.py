"""The capture thread: reads a FrameSource, paces replays, caps the rate, downscales, reconnects.

A finite replay ends with END. It ends *failed* (``failure`` says why; the daemon exits with the
source error's code 4 so that systemd's ``Restart=on-failure`` brings it back) when a read fails or
when a looping replay cannot start over -- its file or folder vanished or holds no image any more.
A live source that reopens but delivers no frame keeps backing off: the reconnect delay only
returns to its initial value once a frame arrived.

Each frame gets two clocks. ``Frame.captured_at`` is ``time.monotonic()`` when it was read and
drives latency metrics. The *frame clock* ``t`` that tracking and decisions run on is media time for
a finite replay (frame number / native fps, continuing across loops) and the monotonic time for a
live source -- so a file replayed as fast as possible yields the same tracks and decisions as one
replayed in real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edgeface.data import Frame, ImageArray
from edgeface.errors import SourceError
from edgeface.pipeline.queues import DropQueue, RateMeter, RollingStats
from edgeface.pipeline.settings import CaptureSettings
from edgeface.sources.base import FrameSource

_LOGGER = logging.getLogger(__name__)

SourceState = Callable[[str, str], None]
STREAMING, RECONNECTING, ENDED = "streaming", "reconnecting", "ended"

# Frame clock of a replay whose container does not state its rate.
DEFAULT_REPLAY_FPS = 25.0
# A real-time replay that fell further behind than this (a slow disk, a suspended process) restarts
# its pacing from now instead of racing through the backlog.
RESYNC_S = 1.0
# Sleeps are cut into slices this long so the heartbeat stays fresh while waiting (reconnect backoff,
# slow replays): a lost camera is not a hung process and must not stop the watchdog pings.
HEARTBEAT_SLICE_S = 0.5


@dataclass(frozen=True, slots=True)
class Captured:
    """A frame and its frame clock ``t`` (seconds)."""

    frame: Frame
    t: float


class EndOfStream:
    """Sentinel passed down the stages when a finite replay ends."""

    def __repr__(self) -> str:
        return "END"


END = EndOfStream()


class CaptureThread(threading.Thread):
    """Named ``capture:<source>``; puts ``Captured`` items (and finally END) on ``out``.

    The source must already be open (the pipeline opens it before starting, so a bad URI fails
    fast); this thread closes it on exit.
    """

    def __init__(
        self,
        source: FrameSource,
        out: DropQueue[Captured | EndOfStream],
        stop: threading.Event,
        settings: CaptureSettings,
        *,
        on_source_state: SourceState | None = None,
    ) -> None:
        super().__init__(name=f"capture:{source.name}", daemon=False)
        self.source = source
        self.out = out
        self.stop = stop
        self.settings = settings
        self._on_state = on_source_state
        self.heartbeat = time.monotonic()
        self.stats = RollingStats()  # read + resize ms, pacing excluded
        self.rate = RateMeter()
        self.frames = 0
        self.skipped = 0  # frames read but not passed on because of the fps cap
        self.failure: str | None = None  # why a finite replay ended early; set before END is queued
        self._next_delay = settings.reconnect_initial_s  # backoff of the next reconnect; reset by a frame

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            _LOGGER.exception("capture from %s failed; stopping the pipeline", self.source.name)
            self.stop.set()
        finally:
            self.source.close()

    # --- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        live = self.source.is_live
        replay_fps = self.source.native_fps or DEFAULT_REPLAY_FPS
        replayed = 0  # frames read from a finite replay, across loops: its media clock
        origin: float | None = None  # monotonic time of media time 0 (real-time pacing), set by the first frame
        last_t: float | None = None
        index = 0
        read_since_start = 0  # a looping replay that yields nothing after a restart must end, not spin
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            started = time.perf_counter()
            try:
                image = self.source.read()
            except SourceError as exc:
                if not live:
                    self._end(f"read failed: {exc}", failed=True)
                    return
                self._reconnect(str(exc))
                continue
            if image is None:
                if live:
                    self._reconnect(f"{self.source.name} returned no frame")
                    continue
                if not self.settings.loop:
                    self._end("end of replay")
                    return
                if read_since_start == 0:
                    self._end("the looping replay yields no frame after starting over", failed=True)
                    return
                if (problem := self._restart()) is not None:
                    self._end(f"the looping replay cannot start over: {problem}", failed=True)
                    return
                read_since_start = 0
                continue
            read_ms = (time.perf_counter() - started) * 1000.0
            read_since_start += 1
            self._next_delay = self.settings.reconnect_initial_s
            if live:
                t = time.monotonic()
            else:
                t = replayed / replay_fps
                replayed += 1
                if self.settings.realtime:
                    if origin is None:
                        origin = time.monotonic() - t
                    behind = time.monotonic() - (origin + t)
                    if behind > RESYNC_S:
                        origin = time.monotonic() - t
                    elif behind < 0 and self._sleep(-behind):
                        return
            fps = self.settings.fps
            if fps is not None and last_t is not None and t - last_t < 1.0 / fps - 1e-6:
                self.skipped += 1
                continue
            last_t = t
            captured_at, resize_started = time.monotonic(), time.perf_counter()
            frame = Frame(
                index=index,
                image=self._resize(image),
                captured_at=captured_at,
                wall_time=time.time(),
                source=self.source.name,
            )
            index += 1
            self.frames += 1
            # Read (for a live source: including the wait for the device) plus resize; pacing excluded.
            self.stats.add(read_ms + (time.perf_counter() - resize_started) * 1000.0)
            self.rate.tick()
            self.out.put(Captured(frame, t))

    def _resize(self, image: ImageArray) -> ImageArray:
        width, target = image.shape[1], self.settings.resize_width
        if target is None or width <= target:
            return image
        height = max(1, round(image.shape[0] * target / width))
        # INTER_AREA: the anti-aliased downscale; faces stay sharp enough for the blur gate.
        resized = cv2.resize(image, (target, height), interpolation=cv2.INTER_AREA)
        return np.asarray(resized, dtype=np.uint8)

    def _restart(self) -> str | None:
        """Rewind a looping replay; the reason when it cannot be reopened."""
        try:
            self.source.close()
            self.source.open()
        except SourceError as exc:
            return str(exc)
        _LOGGER.debug("replay %s restarted", self.source.name)
        return None

    def _end(self, detail: str, *, failed: bool = False) -> None:
        if failed:
            self.failure = detail
            _LOGGER.warning("source %s failed: %s", self.source.name, detail)
        else:
            _LOGGER.info("source %s ended: %s", self.source.name, detail)
        self._state(ENDED, detail)
        self.out.put(END)

    def _reconnect(self, detail: str) -> None:
        """Close, then reopen with exponential backoff until it works or ``stop`` is set."""
        _LOGGER.warning("source %s lost: %s", self.source.name, detail)
        self.source.close()
        delay = self._next_delay
        while not self.stop.is_set():
            self._state(RECONNECTING, f"{detail}; retrying in {delay:.2f} s")
            if self._sleep(delay):
                return
            try:
                self.source.open()
            except SourceError as exc:
                detail = str(exc)
                delay = min(delay * 2.0, self.settings.reconnect_max_s)
                continue
            _LOGGER.info("source %s reconnected", self.source.name)
            self._state(STREAMING, "reconnected")
            # Reopened is not streaming: a source that connects but sends nothing is lost again at
            # once, and must wait longer each time (cleared by the next frame read).
            self._next_delay = min(delay * 2.0, self.settings.reconnect_max_s)
            return

    def _sleep(self, seconds: float) -> bool:
        """Wait, keeping the heartbeat fresh; True when ``stop`` was set meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, HEARTBEAT_SLICE_S)):
                return True
            self.heartbeat = time.monotonic()
        return self.stop.is_set()

    def _state(self, state: str, detail: str) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(state, detail)
        except Exception:
            # A failing status publisher must not take the camera down with it.
            _LOGGER.exception("on_source_state callback failed for %s", state)
