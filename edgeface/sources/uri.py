"""URI helpers shared by the sources: what kind of source a string names, and how to log it safely."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

AUTO = "auto"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
VIDEO_DEVICE = re.compile(r"^/dev/video(\d+)$")


def redact(uri: str) -> str:
    """The URI without a password, fit for logs, thread names and MQTT status."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def is_gstreamer_pipeline(uri: str) -> bool:
    """GStreamer launch strings link elements with '!' and end in an appsink."""
    return "appsink" in uri or "!" in uri


def camera_index(uri: str) -> int | None:
    """The V4L2 index of '0' or '/dev/video0', else None."""
    if uri.isdigit():
        return int(uri)
    found = VIDEO_DEVICE.match(uri)
    return int(found.group(1)) if found else None
