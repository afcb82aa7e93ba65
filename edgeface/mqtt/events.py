"""JSON payloads the device publishes. These shapes are a public API: add fields, never rename.

Conventions: similarities are cosine in -1..1 rounded to 4 decimals, ``distance`` is
``1 - similarity``; times are ISO 8601 UTC with milliseconds; durations are milliseconds rounded to
0.1; ``bbox`` is ``[x, y, w, h]`` in pixels of the captured frame.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from edgeface.data import Decision, LivenessResult
from edgeface.mqtt.link import LinkStats

PRESENCE_ON = "on"
PRESENCE_OFF = "off"


def iso_time(wall_time: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123+00:00``."""
    return datetime.fromtimestamp(wall_time, tz=UTC).isoformat(timespec="milliseconds")


def _liveness(result: LivenessResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "live": result.live,
        "score": round(result.score, 4),
        "checks": {name: round(value, 4) for name, value in result.checks.items()},
    }


def _timing(decision: Decision, total_ms: float | None) -> dict[str, Any]:
    stage_ms = {name: round(ms, 1) for name, ms in decision.stage_ms.items()}
    total = total_ms if total_ms is not None else sum(decision.stage_ms.values())
    return {"stage_ms": stage_ms, "total_ms": round(total, 1)}


def _common(decision: Decision, device_id: str, total_ms: float | None) -> dict[str, Any]:
    return {
        "track_id": decision.track_id,
        "status": decision.status,
        "reason": decision.reason,
        "similarity": round(decision.similarity, 4),
        "distance": round(1.0 - decision.similarity, 4),
        "threshold": round(decision.threshold, 4),
        "margin": round(decision.margin, 4),
        "bbox": decision.bbox.as_list(),
        "frame": {"index": decision.frame_index, "captured_at": iso_time(decision.wall_time)},
        "liveness": _liveness(decision.liveness),
        "samples": decision.samples,
        **_timing(decision, total_ms),
        "device": device_id,
    }


def recognition_event(decision: Decision, device_id: str, *, total_ms: float | None = None) -> dict[str, Any]:
    """The ``recognition`` event of a decided known track.

    ``{person_id, name, grant, track_id, status, reason, similarity, distance, threshold, margin,
    bbox, frame: {index, captured_at}, liveness: {live, score, checks} | null, samples,
    stage_ms: {stage: ms}, total_ms, device}``, plus ``emotion: {dominant, probabilities}`` when the
    device has ``attributes.enabled``.

    ``grant`` is the door decision (recognised, live when liveness is on, and the person's access
    metadata allows it). ``samples`` is the number of embeddings fused for the decision.
    ``total_ms`` is capture-to-decision latency when given, else the sum of ``stage_ms``.
    """
    event = {
        "person_id": decision.person_id,
        "name": decision.name,
        "grant": decision.grant,
        **_common(decision, device_id, total_ms),
    }
    if decision.emotion is not None:  # only with attributes.enabled
        dominant = max(decision.emotion, key=decision.emotion.__getitem__)
        event["emotion"] = {
            "dominant": dominant,
            "probabilities": {k: round(v, 4) for k, v in decision.emotion.items()},
        }
    return event


def _best_match(decision: Decision) -> dict[str, Any] | None:
    closest = decision.closest
    if closest is None:
        return None
    return {"person_id": closest.person_id, "name": closest.name, "similarity": round(closest.similarity, 4)}


def unknown_event(
    decision: Decision, device_id: str, *, snapshot: bytes | None = None, total_ms: float | None = None
) -> dict[str, Any]:
    """The ``unknown`` event of a stranger (or an uncertain match).

    ``{unknown_id, best_match: {person_id, name, similarity} | null, track_id, status, reason, similarity,
    distance, threshold, margin, bbox, frame, liveness, samples, stage_ms, total_ms, device}`` plus
    ``snapshot`` (base64 JPEG of the face) only when one is given.

    ``unknown_id`` names the spooled cluster to ``confirm``/``ignore``/``reject`` (uncertain faces
    are spooled too); it is null only for a face that never passed the quality gates (``reason``
    ``too_small``/``too_blurry``/``bad_pose``), which has no embedding. ``similarity`` is that of
    the closest enrolled person, named in ``best_match`` (null when the database is empty or no
    embedding was made).
    """
    event: dict[str, Any] = {
        "unknown_id": decision.unknown_id,
        "best_match": _best_match(decision),
        **_common(decision, device_id, total_ms),
    }
    if snapshot is not None:
        event["snapshot"] = base64.b64encode(snapshot).decode("ascii")
    return event


def person_document(decision: Decision) -> dict[str, Any]:
    """Retained ``person/<person_id>``: the person's last live recognition.

    ``{person_id, name, last_seen, similarity, confidence, grant, track_id}``; ``confidence`` is
    ``similarity`` as a percentage (0..100, one decimal) for Home Assistant's sensor.
    """
    return {
        "person_id": decision.person_id,
        "name": decision.name,
        "last_seen": iso_time(decision.wall_time),
        "similarity": round(decision.similarity, 4),
        "confidence": round(max(0.0, decision.similarity) * 100.0, 1),
        "grant": decision.grant,
        "track_id": decision.track_id,
    }


def presence_payload(present: bool) -> str:
    """Retained payload of ``presence/<person_id>``: ``on`` or ``off``."""
    return PRESENCE_ON if present else PRESENCE_OFF


def link_document(stats: LinkStats) -> dict[str, Any]:
    """The ``broker`` block of the state document.

    ``{connected, published, dropped, reconnects, queued, outbox: {durable, queued, bytes, delivered,
    dropped, oldest_age_s, spilled}}``; ``outbox`` counts since the outbox was created (``dropped``
    across restarts when it is durable), ``oldest_age_s`` is null when nothing waits, ``spilled``
    counts messages held in memory because the disk refused them.
    """
    document: dict[str, Any] = {
        "connected": stats.connected,
        "published": stats.published,
        "dropped": stats.dropped,
        "reconnects": stats.reconnects,
        "queued": stats.queued,
    }
    if stats.outbox is not None:
        o = stats.outbox
        document["outbox"] = {
            "durable": o.durable,
            "queued": o.queued,
            "bytes": o.bytes,
            "delivered": o.delivered,
            "dropped": o.dropped,
            "oldest_age_s": None if o.oldest_age_s is None else round(o.oldest_age_s, 1),
            "spilled": o.spilled,
        }
    return document


def state_document(
    *,
    device_id: str,
    version: str,
    started_at: float,
    fps: float,
    persons: int,
    broker: LinkStats | None,
    source: Mapping[str, Any],
    drops: Mapping[str, int],
    db_fallback: bool = False,
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The retained ``state`` health document.

    ``{device, version, updated_at, uptime_s, fps, persons, broker: {connected, published, dropped,
    reconnects, queued} | null, source: {...}, drops: {queue: count}, db_fallback, ...extra}``.

    ``source`` is the frame source's own status (uri, connected, frames, reconnects);
    ``drops`` counts frames/items dropped per bounded queue; ``db_fallback`` is true when the
    database failed to load and the device runs on its last good backup (or empty).
    """
    now = time.time() if now is None else now
    document: dict[str, Any] = {
        "device": device_id,
        "version": version,
        "updated_at": iso_time(now),
        "uptime_s": round(max(0.0, now - started_at), 1),
        "fps": round(fps, 2),
        "persons": persons,
        "broker": link_document(broker) if broker is not None else None,
        "source": dict(source),
        "drops": dict(drops),
        "db_fallback": db_fallback,
    }
    if extra:
        document.update((k, v) for k, v in extra.items() if k not in document)
    return document
