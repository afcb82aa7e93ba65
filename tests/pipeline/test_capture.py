"""The capture thread on real sources: pacing, rate cap, downscale, loop, end, and reconnect backoff."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeface.data import ImageArray
from edgeface.errors import SourceError
from edgeface.pipeline.capture import Captured, CaptureThread, EndOfStream
from edgeface.pipeline.queues import DropQueue
from edgeface.pipeline.settings import CaptureSettings
from edgeface.sources import FolderSource, FrameSource


class DropFolderSource:
    """A live source fed by files dropped into a folder (cameras that upload snapshots over FTP do this).

    Each read returns the newest image; an empty folder means the camera is gone: ``open`` and
    ``read`` raise SourceError, like an unplugged USB camera.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.opens: list[float] = []  # monotonic time of every open attempt
        self._open = False

    name = "dropbox"
    native_fps = None
    is_live = True

    def _newest(self) -> Path | None:
        stamped = []
        for path in self.folder.glob("*.jpg"):
            try:
                stamped.append((path.stat().st_mtime, path.name, path))
            except FileNotFoundError:  # removed while we looked: the camera is going away
                continue
        return max(stamped)[2] if stamped else None

    def open(self) -> None:
        self.opens.append(time.monotonic())
        if self._newest() is None:
            raise SourceError(f"source {self.folder}: no snapshot yet")
        self._open = True

    def read(self) -> ImageArray | None:
        newest = self._newest()
        if not self._open or newest is None:
            raise SourceError(f"source {self.folder}: camera stopped uploading")
        image = cv2.imread(str(newest), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"source {self.folder}: {newest.name} is not an image")
        time.sleep(0.01)  # a camera delivers frames at its own pace, not as fast as we can ask
        return np.asarray(image, dtype=np.uint8)

    def close(self) -> None:
        self._open = False


def _collect(out: DropQueue[Captured | EndOfStream], until_end: float = 30.0) -> list[Captured]:
    items: list[Captured] = []
    deadline = time.monotonic() + until_end
    while time.monotonic() < deadline:
        try:
            item = out.get(timeout=0.2)
        except queue.Empty:
            continue
        if isinstance(item, EndOfStream):
            return items
        items.append(item)
    raise AssertionError("no END within the deadline")


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _run(source: FrameSource, stop: threading.Event, **kwargs: object) -> tuple[list[Captured], list[tuple[str, str]]]:
    states: list[tuple[str, str]] = []
    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 4, stop, lossless=True)
    source.open()
    settings = CaptureSettings(**{"loop": False, **kwargs})  # type: ignore[arg-type]
    thread = CaptureThread(source, out, stop, settings, on_source_state=lambda s, d: states.append((s, d)))
    thread.start()
    try:
        items = _collect(out)
    finally:
        thread.join(5)
    assert not thread.is_alive()
    assert thread.name == f"capture:{source.name}"
    return items, states


def test_finite_replay_ends_with_end(samples_dir: Path, stop: threading.Event) -> None:
    source = FolderSource(samples_dir, hold_frames=2, fps=10)
    items, states = _run(source, stop, realtime=False, loop=False, resize_width=None)
    images = 2 * 7
    assert len(items) == images
    assert [c.frame.index for c in items] == list(range(images))
    # The frame clock is media time: frame number / rate, whatever the replay speed.
    assert [c.t for c in items] == pytest.approx([i / 10 for i in range(images)])
    assert states[-1][0] == "ended"
    assert all(c.frame.source == source.name for c in items)
    captured = [c.frame.captured_at for c in items]
    assert captured == sorted(captured)


def test_realtime_replay_is_paced_at_native_rate(samples_dir: Path, stop: threading.Event) -> None:
    source = FolderSource(samples_dir / "obama.jpg", hold_frames=6, fps=20)
    items, _ = _run(source, stop, realtime=True, resize_width=None)
    assert len(items) == 6
    # Six frames at 20 fps span 0.25 s from first to last; pacing may be late, never early.
    assert items[-1].frame.captured_at - items[0].frame.captured_at >= 0.25 - 0.02


def test_fps_cap_skips_frames_and_resize_downscales(samples_dir: Path, stop: threading.Event) -> None:
    source = FolderSource(samples_dir / "obama.jpg", hold_frames=8, fps=20)
    items, _ = _run(source, stop, realtime=False, fps=10.0, resize_width=320)
    assert [c.t for c in items] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    original = cv2.imread(str(samples_dir / "obama.jpg"))
    assert items[0].frame.size == (320, round(original.shape[0] * 320 / original.shape[1]))


def test_looping_replay_keeps_its_clock_running(samples_dir: Path, stop: threading.Event) -> None:
    source = FolderSource(samples_dir / "biden.jpg", hold_frames=3, fps=10)
    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 2, stop, lossless=True)
    source.open()
    thread = CaptureThread(source, out, stop, CaptureSettings(realtime=False, loop=True))
    thread.start()
    try:
        clocks = [out.get(timeout=5) for _ in range(10)]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    ts = [c.t for c in clocks if isinstance(c, Captured)]
    assert len(ts) == 10 and ts == sorted(ts) and ts[-1] == pytest.approx(0.9)


def test_live_source_reconnects_with_exponential_backoff(samples_dir: Path, tmp_path: Path) -> None:
    drop = tmp_path / "uploads"
    drop.mkdir()
    shutil.copy(samples_dir / "obama.jpg", drop / "0001.jpg")
    source = DropFolderSource(drop)
    source.open()
    stop = threading.Event()
    states: list[tuple[str, str]] = []
    changed = threading.Condition()

    def on_state(state: str, detail: str) -> None:
        with changed:
            states.append((state, detail))
            changed.notify_all()

    def wait_for(predicate: object, timeout: float = 10.0) -> None:
        with changed:
            assert changed.wait_for(lambda: predicate(states), timeout), states  # type: ignore[operator]

    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 2, stop)
    settings = CaptureSettings(loop=False, reconnect_initial_s=0.05, reconnect_max_s=0.2)
    thread = CaptureThread(source, out, stop, settings, on_source_state=on_state)
    thread.start()
    try:
        first = out.get(timeout=5)
        assert isinstance(first, Captured)
        # The camera goes away: the thread reports each retry, the delay doubling up to the ceiling.
        (drop / "0001.jpg").unlink()
        wait_for(lambda s: sum(1 for state, _ in s if state == "reconnecting") >= 5)
        delays = [float(d.rsplit("retrying in ", 1)[1].split()[0]) for st, d in states if st == "reconnecting"]
        assert delays[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]
        assert "camera stopped uploading" in states[0][1]
        # Heartbeat stays fresh while reconnecting: the thread is waiting, not hung.
        assert time.monotonic() - thread.heartbeat < 1.0
        # The camera comes back: streaming again, frames flow.
        shutil.copy(samples_dir / "biden.jpg", drop / "0002.jpg")
        wait_for(lambda s: s[-1][0] == "streaming")
        while True:  # drain frames read before the loss
            item = out.get(timeout=5)
            assert isinstance(item, Captured)
            if item.frame.captured_at > source.opens[-1]:
                break
        biden = cv2.imread(str(samples_dir / "biden.jpg"))
        assert item.frame.image.shape == biden.shape
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    gaps = np.diff(source.opens[1:])
    assert len(gaps) >= 4 and all(g >= 0.05 - 0.01 for g in gaps)


def test_stop_interrupts_a_long_backoff(tmp_path: Path, samples_dir: Path) -> None:
    drop = tmp_path / "uploads"
    drop.mkdir()
    shutil.copy(samples_dir / "obama.jpg", drop / "0001.jpg")
    source = DropFolderSource(drop)
    source.open()
    (drop / "0001.jpg").unlink()
    stop = threading.Event()
    waiting = threading.Event()
    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 2, stop)
    settings = CaptureSettings(loop=False, reconnect_initial_s=30.0, reconnect_max_s=60.0)
    thread = CaptureThread(source, out, stop, settings, on_source_state=lambda *_: waiting.set())
    thread.start()
    assert waiting.wait(5)
    stopped = time.monotonic()
    stop.set()
    thread.join(2.0)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 2.0
    assert len(source.opens) == 1  # the 30 s backoff was cut short, no second attempt


def test_drop_queue_keeps_the_newest(stop: threading.Event) -> None:
    q: DropQueue[int] = DropQueue("q", 3, stop)
    for i in range(10):
        q.put(i)
    assert q.qsize() == 3
    assert q.drops == 7
    assert [q.get(0.1) for _ in range(3)] == [7, 8, 9]


class SilentStream:
    """A live stream that accepts the connection and then sends nothing (an HTTP camera that hangs)."""

    name = "silent"
    native_fps = None
    is_live = True

    def __init__(self) -> None:
        self.opens: list[float] = []

    def open(self) -> None:
        self.opens.append(time.monotonic())

    def read(self) -> ImageArray | None:
        return None

    def close(self) -> None:
        return None


def test_a_stream_that_connects_but_sends_nothing_backs_off() -> None:
    source = SilentStream()
    source.open()
    stop = threading.Event()
    reconnecting = threading.Condition()
    delays: list[float] = []

    def on_state(state: str, detail: str) -> None:
        if state == "reconnecting":
            with reconnecting:
                delays.append(float(detail.rsplit("retrying in ", 1)[1].split(maxsplit=1)[0]))
                reconnecting.notify_all()

    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 2, stop)
    settings = CaptureSettings(loop=False, reconnect_initial_s=0.02, reconnect_max_s=0.16)
    thread = CaptureThread(source, out, stop, settings, on_source_state=on_state)
    thread.start()
    try:
        with reconnecting:
            assert reconnecting.wait_for(lambda: len(delays) >= 6, 20), delays
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    # Every reopen "works", yet the delay keeps doubling: it only resets once a frame arrives.
    assert delays[:6] == [0.02, 0.04, 0.08, 0.16, 0.16, 0.16]


def test_a_looping_replay_whose_folder_vanishes_ends_as_a_failure(
    samples_dir: Path, tmp_path: Path, stop: threading.Event
) -> None:
    folder = tmp_path / "replay"
    folder.mkdir()
    shutil.copy(samples_dir / "obama.jpg", folder / "0.jpg")
    source = FolderSource(folder, hold_frames=2, fps=10)
    source.open()
    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 4, stop, lossless=True)
    thread = CaptureThread(source, out, stop, CaptureSettings(realtime=False, loop=True))
    thread.start()
    try:
        assert isinstance(out.get(timeout=5), Captured)
        shutil.rmtree(folder)
        _collect(out)  # frames already read, then END
    finally:
        thread.join(5)
    assert not thread.is_alive()
    assert thread.failure is not None and "cannot start over" in thread.failure
    # The replay may reopen while the folder is half deleted: each of these names the folder's state.
    reasons = ("no such file or folder", "the folder holds no images", "the folder cannot be listed")
    assert any(reason in thread.failure for reason in reasons), thread.failure


def test_a_finite_replay_that_ends_is_no_failure(samples_dir: Path, stop: threading.Event) -> None:
    source = FolderSource(samples_dir / "obama.jpg", hold_frames=2, fps=10)
    source.open()
    out: DropQueue[Captured | EndOfStream] = DropQueue("detect", 4, stop, lossless=True)
    thread = CaptureThread(source, out, stop, CaptureSettings(realtime=False, loop=False))
    thread.start()
    try:
        assert len(_collect(out)) == 2
    finally:
        thread.join(5)
    assert thread.failure is None
