"""An in-memory ``DeviceContext``: a second real implementation of the protocol the daemon implements.

It keeps persons, samples, negatives, live tracks and spooled unknowns in dicts and enforces the same
error codes as the real device (not_found, conflict, no_face, low_quality ...), so the command
protocol can be tested end to end over a real broker without models or a database.
Images are decoded with OpenCV: an undecodable one is ``bad_request``, an almost black one has
``no_face``, one narrower than ``MIN_SIDE`` is ``low_quality``, one wider than ``MULTI_SIDE`` has
``multiple_faces`` (stand-ins for the detector's verdicts).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from paho.mqtt.enums import MQTTProtocolVersion

from edgeface.config import MqttConfig, SecurityConfig
from edgeface.errors import CommandError
from edgeface.mqtt.commands import CommandDispatcher
from edgeface.mqtt.link import MqttLink
from edgeface.mqtt.signing import Verifier
from edgeface.mqtt.topics import Topics

MIN_SIDE = 64
MULTI_SIDE = 4000


class MemoryDevice:
    def __init__(self) -> None:
        self.persons: dict[str, dict[str, Any]] = {}
        self.tracks: dict[int, int] = {}  # track_id -> embeddings available
        self.unknowns_spool: dict[str, dict[str, Any]] = {}
        self.backup_ids: list[str] = ["b1"]
        self.applied: list[str] = []  # one entry per state-changing call, to prove idempotency
        self.reloads = 0
        self.device_id = "memory"  # running_device sets the topic's device id
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # --- helpers ---------------------------------------------------------------------------

    def _person(self, person_id: str) -> dict[str, Any]:
        person = self.persons.get(person_id)
        if person is None:
            raise CommandError("not_found", f"no person {person_id!r}")
        return person

    @staticmethod
    def _public(person: dict[str, Any]) -> dict[str, Any]:
        return {
            "person_id": person["person_id"],
            "name": person["name"],
            "metadata": person["metadata"],
            "samples": list(person["samples"]),
            "negatives": person["negatives"],
        }

    def _target(
        self, name: str | None, metadata: dict[str, Any] | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        if person_id is not None:
            return self._person(person_id)
        assert name is not None
        clash = [p for p in self.persons.values() if p["name"] == name]
        if clash and not force:
            raise CommandError("conflict", f"{name!r} is already enrolled as {clash[0]['person_id']}")
        new_id = f"p{next(self._ids)}"
        person = {"person_id": new_id, "name": name, "metadata": metadata or {}, "samples": [], "negatives": 0}
        self.persons[new_id] = person
        return person

    def _add(self, person: dict[str, Any], count: int, what: str) -> dict[str, Any]:
        for _ in range(count):
            person["samples"].append(f"s{next(self._ids)}")
        self.applied.append(what)
        return {"person": self._public(person), "samples_added": count}

    # --- DeviceContext -----------------------------------------------------------------------

    def enroll_images(
        self, name: str | None, images: list[bytes], metadata: dict[str, Any] | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        for index, data in enumerate(images):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise CommandError("bad_request", f"images.{index}: cannot be decoded")
            height, width = image.shape[:2]
            if float(image.mean()) < 5:
                raise CommandError("no_face", f"images.{index}: no face found")
            if min(width, height) < MIN_SIDE:
                raise CommandError("low_quality", f"images.{index}: face smaller than {MIN_SIDE}px")
            if width > MULTI_SIDE:
                raise CommandError("multiple_faces", f"images.{index}: more than one face")
        with self._lock:
            person = self._target(name, metadata, person_id, force)
            return self._add(person, len(images), "enroll_images")

    def enroll_track(
        self, track_id: int, name: str | None, metadata: dict[str, Any] | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        count = self.tracks.get(track_id)
        if count is None:
            raise CommandError("not_found", f"no live track {track_id}")
        person = self._target(name, metadata, person_id, force)
        return self._add(person, count, "enroll_track")

    def confirm_unknown(
        self,
        unknown_id: str,
        person_id: str | None,
        name: str | None,
        metadata: dict[str, Any] | None,
        force: bool,
    ) -> dict[str, Any]:
        unknown = self.unknowns_spool.get(unknown_id)
        if unknown is None:
            raise CommandError("not_found", f"no unknown {unknown_id!r}")
        person = self._target(name, metadata, person_id, force)
        del self.unknowns_spool[unknown_id]
        return self._add(person, unknown["samples"], "confirm_unknown")

    def reject(self, person_id: str, unknown_id: str | None, track_id: int | None) -> dict[str, Any]:
        person = self._person(person_id)
        if unknown_id is not None and unknown_id not in self.unknowns_spool:
            raise CommandError("not_found", f"no unknown {unknown_id!r}")
        if track_id is not None and track_id not in self.tracks:
            raise CommandError("not_found", f"no live track {track_id}")
        person["negatives"] += 1
        self.applied.append("reject")
        return {"person": self._public(person), "negatives_added": 1}

    def ignore_unknown(self, unknown_id: str) -> dict[str, Any]:
        unknown = self.unknowns_spool.get(unknown_id)
        if unknown is None:
            raise CommandError("not_found", f"no unknown {unknown_id!r}")
        unknown["ignored"] = True
        self.applied.append("ignore")
        return {"unknown_id": unknown_id, "ignored": True}

    def list_persons(self, skip: int, limit: int) -> dict[str, Any]:
        ordered = [self._public(self.persons[k]) for k in sorted(self.persons)]
        return {"total": len(ordered), "persons": ordered[skip : skip + limit]}

    def get_person(self, person_id: str) -> dict[str, Any]:
        return {"person": self._public(self._person(person_id))}

    def rename_person(self, person_id: str, name: str) -> dict[str, Any]:
        person = self._person(person_id)
        person["name"] = name
        self.applied.append("rename")
        return {"person": self._public(person)}

    def update_person(self, person_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        person = self._person(person_id)
        person["metadata"] = metadata
        self.applied.append("update")
        return {"person": self._public(person)}

    def delete(self, person_id: str, sample_id: str | None) -> dict[str, Any]:
        person = self._person(person_id)
        if sample_id is None:
            del self.persons[person_id]
            self.applied.append("delete_person")
            return {"deleted": {"person_id": person_id}}
        if sample_id not in person["samples"]:
            raise CommandError("not_found", f"person {person_id!r} has no sample {sample_id!r}")
        person["samples"].remove(sample_id)
        self.applied.append("delete_sample")
        return {"deleted": {"person_id": person_id, "sample_id": sample_id}}

    def backups(self) -> dict[str, Any]:
        return {"backups": [{"backup_id": b} for b in self.backup_ids]}

    def restore(self, backup_id: str) -> dict[str, Any]:
        if backup_id not in self.backup_ids:
            raise CommandError("not_found", f"no backup {backup_id!r}")
        self.applied.append("restore")
        return {"restored": backup_id}

    def reload(self) -> dict[str, Any]:
        self.reloads += 1
        return {"persons": len(self.persons)}

    def status(self) -> dict[str, Any]:
        return {"persons": len(self.persons), "fps": 0.0}

    def unknowns(self) -> dict[str, Any]:
        return {"unknowns": [{"unknown_id": k, **v} for k, v in sorted(self.unknowns_spool.items())]}

    def fleet_status(self) -> dict[str, Any]:
        return {"fleet": {"enabled": False}}

    def reset(self, confirm: str) -> dict[str, Any]:
        if confirm != self.device_id:
            raise CommandError("bad_request", f"confirm: {confirm!r} is not this device's id")
        with self._lock:
            self.persons.clear()
            self.applied.append("reset")
        return {"persons": 0}


# --- a device serving commands over a real broker ---------------------------------------------


@dataclass
class RunningDevice:
    device: Any
    link: MqttLink
    dispatcher: CommandDispatcher
    topics: Topics
    stop: threading.Event


@contextmanager
def running_device(
    port: int,
    *,
    device: Any = None,
    security: SecurityConfig | None = None,
    verifier: Verifier | None = None,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    queue_size: int = 16,
    on_applied: Any = None,
) -> Iterator[RunningDevice]:
    """A MemoryDevice (or ``device``) answering commands through a real MqttLink on ``port``."""
    stop = threading.Event()
    topics = Topics("edgeface", f"dev-{uuid.uuid4().hex[:8]}")
    dispatcher: CommandDispatcher | None = None

    def on_command(verb: str, payload: bytes, properties: Any) -> None:
        assert dispatcher is not None
        dispatcher.submit(verb, payload, properties)

    cfg = MqttConfig(host="127.0.0.1", port=port, reconnect_max_s=1)
    link = MqttLink(cfg, topics, "Test device", on_command, stop, protocol=protocol)
    ctx = device if device is not None else MemoryDevice()
    if isinstance(ctx, MemoryDevice):
        ctx.device_id = topics.device_id
    dispatcher = CommandDispatcher(
        ctx,
        link,
        topics,
        security or SecurityConfig(),
        stop,
        verifier=verifier,
        queue_size=queue_size,
        on_applied=on_applied,
    )
    dispatcher.start()
    link.start()
    try:
        link.wait_connected(10)
        yield RunningDevice(ctx, link, dispatcher, topics, stop)
    finally:
        stop.set()
        dispatcher.join(5)
        link.stop()
