"""The unknown path: a stranger's first decision gets its unknown id from the spool before it is published.

It runs on its own stage thread (``workers.SpoolStage``) because the spool writes to disk and a
snapshot is a JPEG encode: neither may hold up the decide stage, which keeps presence and every
known face's decision on time. An ignored stranger is not published; the same stranger is published
at most once per ``cooldown_s``. Without a spool, unknown decisions pass through without an id.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

import cv2

from edgeface.data import Decision, FloatArray, ImageArray
from edgeface.pipeline.decide import UnknownFace
from edgeface.pipeline.presence import Cooldown

_LOGGER = logging.getLogger(__name__)

SNAPSHOT_JPEG_QUALITY = 85


class Sighting(Protocol):
    @property
    def unknown_id(self) -> str: ...

    @property
    def ignored(self) -> bool: ...


class UnknownObserver(Protocol):
    """The unknown-face spool (``matching.unknowns.UnknownSpool``)."""

    def observe(self, vector: FloatArray, now: float, snapshot_jpeg: bytes | None = None) -> Sighting: ...


def encode_snapshot(chip: ImageArray) -> bytes | None:
    ok, buf = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, SNAPSHOT_JPEG_QUALITY])
    return bytes(buf) if ok else None


class UnknownRouter:
    """Gives an unknown decision its spool id, or holds it back (ignored, cooling down)."""

    def __init__(self, spool: UnknownObserver | None, cooldown_s: float) -> None:
        self._spool = spool
        self._cooldown = Cooldown(cooldown_s)

    def route(self, decision: Decision, unknown: UnknownFace) -> Decision | None:
        """The decision to publish, with its ``unknown_id``; None when it is not to be published."""
        if self._spool is None:
            return decision
        jpeg = encode_snapshot(unknown.chip) if unknown.chip is not None else None
        sighting = self._spool.observe(unknown.vector, decision.wall_time, jpeg)
        if sighting.ignored:
            _LOGGER.debug("track %d: unknown %s is ignored, not published", decision.track_id, sighting.unknown_id)
            return None
        if self._cooldown.cooling(("unknown", sighting.unknown_id), unknown.now):
            return None
        return dataclasses.replace(decision, unknown_id=sighting.unknown_id)
