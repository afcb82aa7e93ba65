"""cv2.VideoCapture behind FrameSource: V4L2 cameras, RTSP/HTTP streams, GStreamer pipelines, video files."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edgeface.data import ImageArray
from edgeface.errors import SourceError
from edgeface.sources.uri import camera_index, redact

_LOGGER = logging.getLogger(__name__)

Kind = Literal["camera", "stream", "gstreamer", "file"]

# FFmpeg demuxer options for network streams, read by OpenCV when a capture opens: TCP interleaving
# survives lossy Wi-Fi where UDP drops whole frames; nobuffer/low_delay keep FFmpeg from queueing
# seconds of video in front of us (we want the newest frame, not every frame).
FFMPEG_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000"
# Open and read timeouts for streams. Reads must return well inside the pipeline's 2 s stop budget,
# and a stalled stream should be detected (and reconnected) quickly.
STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 1500
# One buffered frame: a camera's driver queue otherwise hands us frames that are seconds old
# whenever a stage is slower than the sensor.
CAMERA_BUFFER_FRAMES = 1
# OpenCV reports 0, NaN or absurd values when the container does not know its rate.
_MAX_PLAUSIBLE_FPS = 1000.0


@dataclass(frozen=True, slots=True)
class _Open:
    target: str | int
    api: int
    params: tuple[int, ...]


def _gstreamer_available() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


class OpenCVSource:
    """One cv2.VideoCapture; build it with ``camera``, ``stream``, ``gstreamer`` or ``file``."""

    def __init__(self, kind: Kind, uri: str, name: str, how: _Open, *, requested: tuple[float, float, float]) -> None:
        self.kind: Kind = kind
        self.uri = uri
        self._name = name
        self._how = how
        self._requested = requested  # width, height, fps (0 = leave the driver default)
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def camera(
        cls, uri: str, *, width: int | None = None, height: int | None = None, fps: float | None = None
    ) -> OpenCVSource:
        """A V4L2 camera by index ('0') or device path ('/dev/video0')."""
        index = camera_index(uri)
        if index is None:
            raise SourceError(f"source {uri}: not a camera index or /dev/videoN path")
        # By index with CAP_V4L2: every OpenCV build opens V4L2 nodes that way, and naming the API
        # avoids the slow probe of the others.
        how = _Open(index, cv2.CAP_V4L2, ())
        return cls("camera", uri, f"video{index}", how, requested=(width or 0, height or 0, fps or 0))

    @classmethod
    def stream(cls, url: str) -> OpenCVSource:
        """An RTSP/HTTP/RTMP stream through FFmpeg with low-latency options."""
        params = (
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            STREAM_OPEN_TIMEOUT_MS,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            STREAM_READ_TIMEOUT_MS,
        )
        safe = redact(url)
        host = safe.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        return cls("stream", url, host or "stream", _Open(url, cv2.CAP_FFMPEG, params), requested=(0, 0, 0))

    @classmethod
    def gstreamer(cls, pipeline: str) -> OpenCVSource:
        """A GStreamer launch string ending in appsink (e.g. a Jetson nvarguscamerasrc pipeline)."""
        return cls("gstreamer", pipeline, "gstreamer", _Open(pipeline, cv2.CAP_GSTREAMER, ()), requested=(0, 0, 0))

    @classmethod
    def file(cls, path: Path) -> OpenCVSource:
        """A video file replayed from its start."""
        return cls("file", str(path), path.stem or "file", _Open(str(path), cv2.CAP_FFMPEG, ()), requested=(0, 0, 0))

    # --- FrameSource --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def native_fps(self) -> float | None:
        return self._fps

    @property
    def is_live(self) -> bool:
        return self.kind != "file"

    def open(self) -> None:
        """Open the capture; SourceError with a hint when it cannot be opened or gives no frame size."""
        self.close()
        if self.kind == "stream":
            # OpenCV reads this variable when each FFmpeg capture opens; a user's own setting wins.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_OPTIONS)
        if self.kind == "gstreamer" and not _gstreamer_available():
            raise SourceError(
                f"source {self.uri!r}: this OpenCV build has no GStreamer support; install the distribution's"
                " python3-opencv (built with GStreamer) or use a device path / RTSP URL"
            )
        how = self._how
        cap = (
            cv2.VideoCapture(how.target, how.api, list(how.params))
            if how.params
            else cv2.VideoCapture(how.target, how.api)
        )
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"source {redact(self.uri)}: cannot open; {self._hint()}")
        if self.kind == "camera":
            width, height, fps = self._requested
            cap.set(cv2.CAP_PROP_BUFFERSIZE, CAMERA_BUFFER_FRAMES)
            if width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
        fps_value = float(cap.get(cv2.CAP_PROP_FPS))
        self._fps = fps_value if 0 < fps_value < _MAX_PLAUSIBLE_FPS else None
        self._cap = cap
        _LOGGER.info(
            "opened %s %s (%dx%d, %s fps)",
            self.kind,
            redact(self.uri),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            f"{self._fps:.2f}" if self._fps else "unknown",
        )

    def read(self) -> ImageArray | None:
        """The next BGR frame; None at the end of a file; SourceError when a live source fails."""
        if self._cap is None:
            raise SourceError(f"source {redact(self.uri)}: read before open")
        ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            if self.kind == "file":
                return None
            raise SourceError(f"source {redact(self.uri)}: no frame ({self._hint()})")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(image, dtype=np.uint8)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _hint(self) -> str:
        if self.kind == "camera":
            device = f"/dev/video{self._how.target}"
            if not Path(device).exists():
                return f"{device} does not exist: is the camera plugged in? (ls /dev/video*)"
            if not os.access(device, os.R_OK | os.W_OK):
                return f"no permission on {device}: add the user to the 'video' group"
            return f"{device} exists but gives no video: busy in another program, or a metadata-only node?"
        if self.kind == "stream":
            return "check the URL, credentials and that the camera is reachable (try: ffprobe URL)"
        if self.kind == "gstreamer":
            return "check the pipeline with gst-launch-1.0 (it must end in appsink)"
        return "not a video file FFmpeg can decode, or it is unreadable"

    def __repr__(self) -> str:
        return f"OpenCVSource({self.kind}, {redact(self.uri)!r})"
