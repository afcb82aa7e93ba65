"""The device's command surface: what each MQTT verb does to the database, the spool and live tracks.

Implements ``edgeface.mqtt.verbs.DeviceContext`` over the daemon's components. Runs on the command
worker thread; the database and the spool are thread-safe, and the pipeline reads the database only
through immutable snapshots, so a command never tears a match in progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeface.data import FloatArray, ImageArray
from edgeface.errors import CommandError
from edgeface.liveness.still import StillLiveness
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollResult
from edgeface.matching.records import SampleSource
from edgeface.matching.unknowns import UnknownSpool
from edgeface.service.still import StillImages

_LOGGER = logging.getLogger(__name__)

Metadata = dict[str, Any]


class Device:
    """Database, enrollment, spool and live-track operations behind the MQTT verbs and the CLI."""

    def __init__(
        self,
        db: FaceDatabase,
        enroller: Enroller,
        spool: UnknownSpool,
        track_samples: Callable[[int], list[tuple[FloatArray, ImageArray]]],
        status: Callable[[], dict[str, Any]],
        on_persons_changed: Callable[[], None] = lambda: None,
        fleet_status: Callable[[], dict[str, Any]] | None = None,
        still_liveness: StillLiveness | None = None,
        *,
        device_id: str,
        still: StillImages,
    ) -> None:
        """``fleet_status`` is the replicator's status, None when fleet replication is off; ``still_liveness``
        answers the ``liveness`` verb (None: the verb says no model is loaded)."""
        self.device_id = device_id
        self.still = still
        self.db = db
        self.still_liveness = still_liveness
        self.enroller = enroller
        self.spool = spool
        self._track_samples = track_samples
        self._status = status
        self._on_persons_changed = on_persons_changed
        self._fleet_status = fleet_status

    # --- DeviceContext ---------------------------------------------------------------------

    def _enrolled(self, result: EnrollResult) -> dict[str, Any]:
        self._on_persons_changed()
        return result.to_json()

    def enroll_images(
        self, name: str | None, images: list[bytes], metadata: Metadata | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        return self._enrolled(self.enroller.from_images(name, images, metadata, person_id, force=force))

    def _track_vectors(self, track_id: int) -> FloatArray:
        samples = self._track_samples(track_id)
        if not samples:
            raise CommandError("not_found", f"track {track_id} is not live or has no embeddings yet")
        return np.stack([vector for vector, _chip in samples]).astype(np.float32)

    def enroll_track(
        self, track_id: int, name: str | None, metadata: Metadata | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        vectors = self._track_vectors(track_id)
        return self._enrolled(
            self.enroller.from_vectors(name, vectors, metadata, person_id, force=force, source="track")
        )

    def confirm_unknown(
        self, unknown_id: str, person_id: str | None, name: str | None, metadata: Metadata | None, force: bool
    ) -> dict[str, Any]:
        vectors = self.spool.samples(unknown_id)
        result = self.enroller.from_vectors(name, vectors, metadata, person_id, force=force, source="unknown")
        # Only forget the stranger once the samples are safely in the database.
        self.spool.take(unknown_id)
        return self._enrolled(result)

    def reject(self, person_id: str, unknown_id: str | None, track_id: int | None) -> dict[str, Any]:
        source: SampleSource
        if unknown_id is not None:
            vectors = self.spool.samples(unknown_id)
            source = "unknown"
        elif track_id is not None:
            vectors = self._track_vectors(track_id)
            source = "track"
        else:
            raise CommandError("bad_request", "give unknown_id or track_id")
        # One negative (the mean direction) per report keeps the negatives from outnumbering positives.
        mean = vectors.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        sample_id = self.db.add_negative(person_id, mean.astype(np.float32), source=source)
        return {"person": self.db.get(person_id).to_json(), "negative_sample_id": sample_id}

    def ignore_unknown(self, unknown_id: str) -> dict[str, Any]:
        return {"unknown": self.spool.ignore(unknown_id).to_json()}

    def list_persons(self, skip: int, limit: int) -> dict[str, Any]:
        total, persons = self.db.list(skip, limit)
        return {"total": total, "skip": skip, "limit": limit, "persons": [p.to_json() for p in persons]}

    def get_person(self, person_id: str) -> dict[str, Any]:
        return {"person": self.db.get(person_id).to_json()}

    def rename_person(self, person_id: str, name: str) -> dict[str, Any]:
        person = self.db.rename(person_id, name)
        self._on_persons_changed()
        return {"person": person.to_json()}

    def update_person(self, person_id: str, metadata: Metadata) -> dict[str, Any]:
        return {"person": self.db.update_metadata(person_id, metadata).to_json()}

    def delete(self, person_id: str, sample_id: str | None) -> dict[str, Any]:
        if sample_id is None:
            person = self.db.delete_person(person_id)
            self._on_persons_changed()
            return {"deleted": person.to_json()}
        return {"person": self.db.delete_sample(person_id, sample_id).to_json(), "deleted_sample": sample_id}

    def backups(self) -> dict[str, Any]:
        return {"backups": [b.to_json() for b in self.db.backups()]}

    def restore(self, backup_id: str) -> dict[str, Any]:
        self.db.restore(backup_id)
        self._on_persons_changed()
        return {"restored": backup_id, "persons": self.db.snapshot().persons}

    def reload(self) -> dict[str, Any]:
        changed = self.db.reload()
        if changed:
            self._on_persons_changed()
        return {"changed": changed, "persons": self.db.snapshot().persons, "generation": self.db.generation}

    def status(self) -> dict[str, Any]:
        return self._status()

    def unknowns(self) -> dict[str, Any]:
        now = time.time()
        self.spool.expire(now)
        return {"unknowns": [c.to_json() for c in self.spool.list()]}

    def fleet_status(self) -> dict[str, Any]:
        if self._fleet_status is None:
            return {"fleet": {"enabled": False}}
        return {"fleet": self._fleet_status()}

    def liveness(self, images: list[bytes]) -> dict[str, Any]:
        if self.still_liveness is None:
            raise CommandError("bad_request", "this device has no passive liveness model loaded")
        judged = [self.still_liveness.judge(image, f"images.{i}") for i, image in enumerate(images)]
        return {"threshold": self.still_liveness.passive.threshold, "images": judged}

    # Still images run on the command worker, on ``still``'s own analyzer (never the pipeline's).

    def identify(self, image: bytes, top_k: int | None, threshold: float | None, remember: bool) -> dict[str, Any]:
        return self.still.identify(image, top_k=top_k, threshold=threshold, remember=remember)

    def verify(self, image: bytes, person_id: str | None, image_b: bytes | None) -> dict[str, Any]:
        return self.still.verify(image, person_id=person_id, other=image_b)

    def detect(self, image: bytes) -> dict[str, Any]:
        return self.still.detect(image)

    def analyze(self, image: bytes) -> dict[str, Any]:
        return self.still.analyze(image)

    def reset(self, confirm: str) -> dict[str, Any]:
        if confirm != self.device_id:
            raise CommandError(
                "bad_request", f"confirm: {confirm!r} is not this device's id; send confirm={self.device_id!r} to reset"
            )
        before = self.db.generation
        self.db.reset()
        self._on_persons_changed()
        backup = str(before) if self.db.backups_kept else None
        _LOGGER.info("database %s reset by command; previous contents: backup %s", self.db.path, backup)
        return {"generation": self.db.generation, "backup": backup, "persons": 0}
