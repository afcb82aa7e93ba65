"""Frame sources: cameras, streams, GStreamer pipelines, video files and photo folders behind one protocol."""

from edgeface.sources.base import FrameSource, open_source, resolve_auto
from edgeface.sources.folder import FolderSource
from edgeface.sources.opencv import OpenCVSource
from edgeface.sources.uri import redact

__all__ = ["FolderSource", "FrameSource", "OpenCVSource", "open_source", "redact", "resolve_auto"]
