"""The FrameSource protocol and ``open_source``, which picks an implementation from a URI.

A source is opened, read frame by frame and closed by one thread (the capture thread). ``read()``
returns ``None`` only at the end of a finite replay; a live source that loses its device or stream
raises ``SourceError`` so the capture thread can reconnect.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgeface.data import ImageArray
from edgeface.errors import SourceError
from edgeface.samples import SampleError, cached_samples
from edgeface.sources.folder import FolderSource
from edgeface.sources.opencv import OpenCVSource
from edgeface.sources.uri import (
    AUTO,
    IMAGE_SUFFIXES,
    STREAM_SCHEMES,
    VIDEO_DEVICE,
    camera_index,
    is_gstreamer_pipeline,
)

_LOGGER = logging.getLogger(__name__)


@runtime_checkable
class FrameSource(Protocol):
    """Something that yields BGR frames: a camera, a stream, a file, a folder of photos."""

    @property
    def name(self) -> str:
        """Short label for thread names and logs (never contains credentials)."""
        ...

    @property
    def native_fps(self) -> float | None:
        """Rate frames are meant to be shown at; None when unknown (some cameras and streams)."""
        ...

    @property
    def is_live(self) -> bool:
        """True for cameras and streams (reconnect on loss), False for finite replays."""
        ...

    def open(self) -> None:
        """Acquire the device or file; raise SourceError naming the URI with a hint on failure."""
        ...

    def read(self) -> ImageArray | None:
        """The next frame; None at the end of a finite replay; SourceError when a live source is lost."""
        ...

    def close(self) -> None:
        """Release the device or file; safe to call twice or on a source that never opened."""
        ...


def open_source(
    uri: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    hold_s: float | None = None,
) -> FrameSource:
    """Build (not open) the source for ``uri``: 'auto', a camera, a stream, a pipeline, a file or a folder.

    ``width``/``height``/``fps`` are requests to cameras; ``hold_s`` is how long a folder replay
    shows each photo. Raises SourceError for a path that does not exist.
    """
    uri = uri.strip()
    if uri == AUTO:
        return resolve_auto(width=width, height=height, fps=fps, hold_s=hold_s)
    if camera_index(uri) is not None:
        return OpenCVSource.camera(uri, width=width, height=height, fps=fps)
    if uri.startswith(STREAM_SCHEMES):
        return OpenCVSource.stream(uri)
    if is_gstreamer_pipeline(uri):
        return OpenCVSource.gstreamer(uri)
    path = Path(uri).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return FolderSource(path, hold_s=hold_s)
    if path.is_file():
        return OpenCVSource.file(path)
    if uri.startswith("/dev/"):
        raise SourceError(f"source {uri}: no such device; is the camera plugged in? (ls /dev/video*)")
    raise SourceError(
        f"source {uri!r}: not a camera index, device, stream URL, GStreamer pipeline, video file or image folder"
        " (no such file or directory)"
    )


def _video_devices() -> list[str]:
    def number(path: str) -> int:
        found = VIDEO_DEVICE.match(path)
        return int(found.group(1)) if found else 1 << 30

    return sorted((p for p in glob.glob("/dev/video*") if VIDEO_DEVICE.match(p)), key=number)


def resolve_auto(
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    hold_s: float | None = None,
) -> FrameSource:
    """The first /dev/video* camera that delivers a frame, else a replay of the sample photos."""
    for device in _video_devices():
        camera = OpenCVSource.camera(device, width=width, height=height, fps=fps)
        try:
            camera.open()
            frame = camera.read()
        except SourceError as exc:
            _LOGGER.debug("auto source: skipping %s: %s", device, exc)
            continue
        finally:
            camera.close()
        if frame is not None:
            _LOGGER.info("auto source: using camera %s", device)
            return camera
    # The daemon never downloads at run time: setup fetched the samples (or the user gives a source).
    try:
        folder = cached_samples()
    except SampleError as exc:
        raise SourceError(f"source auto: no camera found and {exc}") from exc
    _LOGGER.info("auto source: no working camera, replaying the sample photos in %s", folder)
    return FolderSource(folder, hold_s=hold_s)
