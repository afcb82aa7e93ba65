"""Replay of still photos: each image is repeated for a while, like a person standing at a door.

This is the demo source when no camera is present (the sample photos), and the simplest way to run
the whole pipeline on one's own pictures. It is finite: ``read()`` returns None after the last image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edgeface.data import ImageArray
from edgeface.errors import SourceError
from edgeface.sources.uri import IMAGE_SUFFIXES

_LOGGER = logging.getLogger(__name__)

# 10 fps is what a Pi 4 sustains end to end, so a replay paced at it exercises the real cadence.
FOLDER_FPS = 10.0
# Two seconds per photo: long enough for a track to collect its votes at the default 0.15 s
# embedding interval, short enough that the demo moves on.
FOLDER_HOLD_S = 2.0


class FolderSource:
    """Images of a folder (or one image file) in name order, each held for ``hold_s`` seconds of replay."""

    def __init__(
        self,
        path: Path,
        *,
        hold_s: float | None = None,
        fps: float = FOLDER_FPS,
        hold_frames: int | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.path = Path(path)
        self._fps = float(fps)
        seconds = FOLDER_HOLD_S if hold_s is None else hold_s
        self.hold_frames = max(1, hold_frames if hold_frames is not None else round(seconds * self._fps))
        self._files: list[Path] = []
        self._position = 0  # index into _files of the image being shown
        self._shown = 0  # frames of it delivered so far
        self._current: ImageArray | None = None
        self._started = False  # whether _position points at an image already loaded once

    @property
    def name(self) -> str:
        return self.path.stem or "folder"

    @property
    def native_fps(self) -> float | None:
        return self._fps

    @property
    def is_live(self) -> bool:
        return False

    @property
    def files(self) -> list[Path]:
        """The images this replay shows, in order (after ``open``)."""
        return list(self._files)

    def open(self) -> None:
        """List the images; SourceError when the folder does not exist or holds none."""
        if self.path.is_file():
            files = [self.path]
        elif self.path.is_dir():
            try:
                files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as exc:  # removed or unmounted between the check and the listing
                raise SourceError(f"source {self.path}: the folder cannot be listed: {exc.strerror}") from exc
        else:
            raise SourceError(f"source {self.path}: no such file or folder")
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"source {self.path}: the folder holds no images ({suffixes})")
        self._files = files
        self._position = 0
        self._shown = 0
        self._current = None
        self._started = False
        _LOGGER.info("replaying %d images from %s, %d frames each", len(files), self.path, self.hold_frames)

    def read(self) -> ImageArray | None:
        """The current image again, or the next one once it has been held long enough; None at the end."""
        if not self._files:
            raise SourceError(f"source {self.path}: read before open")
        while self._current is None or self._shown >= self.hold_frames:
            if self._started:
                self._position += 1
            self._started = True
            self._current = None
            if self._position >= len(self._files):
                return None
            self._current = self._load(self._files[self._position])  # None (unreadable) moves on
            self._shown = 0
        self._shown += 1
        return self._current

    def close(self) -> None:
        self._files = []
        self._current = None

    @staticmethod
    def _load(path: Path) -> ImageArray | None:
        # imdecode via numpy handles non-ASCII paths; IMREAD_COLOR flattens alpha and grey to BGR.
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            _LOGGER.warning("skipping %s: %s", path, exc.strerror)
            return None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            _LOGGER.warning("skipping %s: not a decodable image", path)
            return None
        # Every held frame shares this array; read-only so no stage can draw on it for the others.
        frame: ImageArray = np.asarray(image, dtype=np.uint8)
        frame.flags.writeable = False
        return frame

    def __repr__(self) -> str:
        return f"FolderSource({str(self.path)!r}, hold_frames={self.hold_frames})"
