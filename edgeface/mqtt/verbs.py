"""The command verbs: one pydantic payload model each, and the ``DeviceContext`` they act on.

Payload models forbid unknown fields so that a typo (``"nmae"``) is a ``bad_request`` naming the
field, never a silently ignored option. Envelope fields (``request_id`` and the signature fields)
are removed by the dispatcher before validation.

``DeviceContext`` is what the daemon implements: every method returns a JSON-able dict that is
merged into the ``ok`` reply, or raises ``CommandError`` (``not_found``, ``conflict``, ``no_face`` ...).
Keeping it a protocol keeps this package free of the database, the enroller and the pipeline.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeface.errors import CommandError
from edgeface.vision.imageio import sniff_format, unsupported_format

MAX_IMAGES = 20
PersonId = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Metadata = dict[str, Any]


class DeviceContext(Protocol):
    """The device operations behind the verbs (implemented by the daemon)."""

    def enroll_images(
        self, name: str | None, images: list[bytes], metadata: Metadata | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        """Embed each image's single face and add it to a new (or ``person_id``'s) person.

        Returns ``{"person": {...}, "samples_added": n}``; raises no_face / multiple_faces /
        low_quality / conflict (a face that already matches someone else, unless ``force``)."""
        ...

    def enroll_track(
        self, track_id: int, name: str | None, metadata: Metadata | None, person_id: str | None, force: bool
    ) -> dict[str, Any]:
        """Enroll the embeddings of a live track; not_found if the track is gone."""
        ...

    def confirm_unknown(
        self, unknown_id: str, person_id: str | None, name: str | None, metadata: Metadata | None, force: bool
    ) -> dict[str, Any]:
        """Learn every spooled embedding of an unknown into ``person_id`` or a new person ``name``."""
        ...

    def reject(self, person_id: str, unknown_id: str | None, track_id: int | None) -> dict[str, Any]:
        """Store that unknown's / track's embedding as a negative sample of ``person_id``."""
        ...

    def ignore_unknown(self, unknown_id: str) -> dict[str, Any]:
        """Stop reporting that stranger until its cluster expires."""
        ...

    def list_persons(self, skip: int, limit: int) -> dict[str, Any]:
        """``{"total": n, "persons": [...]}`` in a stable order."""
        ...

    def get_person(self, person_id: str) -> dict[str, Any]:
        """``{"person": {...}}``."""
        ...

    def rename_person(self, person_id: str, name: str) -> dict[str, Any]:
        """``{"person": {...}}`` after the rename."""
        ...

    def update_person(self, person_id: str, metadata: Metadata) -> dict[str, Any]:
        """Replace the person's metadata; ``{"person": {...}}``."""
        ...

    def delete(self, person_id: str, sample_id: str | None) -> dict[str, Any]:
        """Delete a person, or one of its samples when ``sample_id`` is given."""
        ...

    def backups(self) -> dict[str, Any]:
        """``{"backups": [{"backup_id": ..., ...}]}``, newest first."""
        ...

    def restore(self, backup_id: str) -> dict[str, Any]:
        """Replace the database with a backup (the current one is backed up first)."""
        ...

    def reload(self) -> dict[str, Any]:
        """Re-read the database from disk."""
        ...

    def status(self) -> dict[str, Any]:
        """The health document (same content as the retained ``state``)."""
        ...

    def unknowns(self) -> dict[str, Any]:
        """``{"unknowns": [...]}``: the spooled unknown clusters."""
        ...

    def fleet_status(self) -> dict[str, Any]:
        """``{"fleet": {...}}``: replication state (persons in sync, pending, refused, last applied)."""
        ...

    def liveness(self, images: list[bytes]) -> dict[str, Any]:
        """``{"threshold", "images": [{"faces": [{bbox, live, score, reason}]}]}``: passive liveness per face."""
        ...

    def identify(self, image: bytes, top_k: int | None, threshold: float | None, remember: bool) -> dict[str, Any]:
        """Every face of a photo with its status and top matches (``edgeface.service.still``)."""
        ...

    def verify(self, image: bytes, person_id: str | None, image_b: bytes | None) -> dict[str, Any]:
        """Whether the photo's subject is ``person_id`` (or the subject of ``image_b``)."""
        ...

    def detect(self, image: bytes) -> dict[str, Any]:
        """Boxes, detector scores, landmarks and quality of every face; no embedding."""
        ...

    def analyze(self, image: bytes) -> dict[str, Any]:
        """Per face: emotion (when enabled), liveness (when a model is present) and quality."""
        ...

    def reset(self, confirm: str) -> dict[str, Any]:
        """Empty the database (kept as a backup) when ``confirm`` is this device's id."""
        ...


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _exactly_one(model: BaseModel, fields: tuple[str, ...]) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(fields)} (got {', '.join(given) or 'none'})")


class EnrollPayload(_Payload):
    name: Name | None = Field(None, description="Name of the new person; optional with person_id.")
    metadata: Metadata | None = Field(None, description="Free-form JSON attributes (e.g. access=true).")
    images: list[str] | None = Field(
        None, min_length=1, max_length=MAX_IMAGES, description="Base64 JPEG/PNG/WebP/BMP photos, one face each."
    )
    track_id: int | None = Field(None, ge=0, description="Enroll the face of this live track.")
    unknown_id: str | None = Field(None, min_length=1, max_length=128, description="Enroll this spooled unknown.")
    person_id: PersonId | None = Field(None, description="Add the samples to this existing person.")
    force: bool = Field(False, description="Enroll even if the face already matches another person.")

    @model_validator(mode="after")
    def _source(self) -> EnrollPayload:
        _exactly_one(self, ("images", "track_id", "unknown_id"))
        if self.name is None and self.person_id is None:
            raise ValueError("name is required unless person_id is given")
        return self


class ConfirmPayload(_Payload):
    unknown_id: str = Field(min_length=1, max_length=128)
    person_id: PersonId | None = None
    name: Name | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _target(self) -> ConfirmPayload:
        _exactly_one(self, ("person_id", "name"))
        return self


class RejectPayload(_Payload):
    person_id: PersonId
    unknown_id: str | None = Field(None, min_length=1, max_length=128)
    track_id: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _sample(self) -> RejectPayload:
        _exactly_one(self, ("unknown_id", "track_id"))
        return self


class IgnorePayload(_Payload):
    unknown_id: str = Field(min_length=1, max_length=128)


class ListPayload(_Payload):
    skip: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)


class PersonPayload(_Payload):
    person_id: PersonId


class RenamePayload(_Payload):
    person_id: PersonId
    name: Name


class UpdatePayload(_Payload):
    person_id: PersonId
    metadata: Metadata


class DeletePayload(_Payload):
    person_id: PersonId
    sample_id: str | None = Field(None, min_length=1, max_length=128)


class RestorePayload(_Payload):
    backup_id: str = Field(min_length=1, max_length=128)


class EmptyPayload(_Payload):
    pass


class LivenessPayload(_Payload):
    images: list[str] = Field(
        min_length=1, max_length=MAX_IMAGES, description="Base64 JPEG/PNG/WebP/BMP photos; every face is judged."
    )


Image = Annotated[str, Field(min_length=1, description="Base64 JPEG/PNG/WebP/BMP photo (or a data: URL).")]


class IdentifyPayload(_Payload):
    image: Image
    top_k: int | None = Field(None, ge=1, le=50, description="Candidates per face (default decision.top_k).")
    threshold: float | None = Field(None, ge=0, le=1, description="Match threshold for this request only.")
    remember: bool = Field(False, description="Spool unknown faces so they can be confirmed like camera sightings.")


class VerifyPayload(_Payload):
    image: Image
    person_id: PersonId | None = None
    image_b: Image | None = Field(None, description="Compare with this photo instead of a person.")

    @model_validator(mode="after")
    def _against(self) -> VerifyPayload:
        _exactly_one(self, ("person_id", "image_b"))
        return self


class ImagePayload(_Payload):
    image: Image


class ResetPayload(_Payload):
    confirm: str = Field(min_length=1, max_length=128, description="This device's id, to confirm the reset.")


def decode_field(text: str, where: str) -> bytes:
    """Base64 (optionally a ``data:image/...;base64,`` URL) to image bytes of a supported format.

    Only the magic bytes are checked here; the pixel limit is checked from the header when the
    image is decoded (``edgeface.vision.imageio.decode_image``)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandError("bad_request", f"{where}: not valid base64: {exc}") from exc
    if not data:
        raise CommandError("bad_request", f"{where}: empty image")
    if sniff_format(data) is None:
        other = unsupported_format(data)
        what = f"a {other} image" if other else f"not an image (starts {data[:8].hex(' ')})"
        raise CommandError("bad_request", f"{where}: {what}, not a JPEG, PNG, WebP or BMP image")
    return data


def decode_image(text: str, index: int) -> bytes:
    """One entry of an ``images`` list (enroll, liveness)."""
    return decode_field(text, f"images.{index}")


def _enroll(ctx: DeviceContext, p: EnrollPayload) -> dict[str, Any]:
    if p.images is not None:
        images = [decode_image(text, i) for i, text in enumerate(p.images)]
        return ctx.enroll_images(p.name, images, p.metadata, p.person_id, p.force)
    if p.track_id is not None:
        return ctx.enroll_track(p.track_id, p.name, p.metadata, p.person_id, p.force)
    assert p.unknown_id is not None
    return ctx.confirm_unknown(p.unknown_id, p.person_id, p.name, p.metadata, p.force)


def _verify(ctx: DeviceContext, p: VerifyPayload) -> dict[str, Any]:
    other = decode_field(p.image_b, "image_b") if p.image_b is not None else None
    return ctx.verify(decode_field(p.image, "image"), p.person_id, other)


def _list(ctx: DeviceContext, p: ListPayload) -> dict[str, Any]:
    result = ctx.list_persons(p.skip, p.limit)
    return {"skip": p.skip, "limit": p.limit, **result}


class Verb:
    """A verb's payload model and the handler that applies it to the device."""

    def __init__(self, model: type[_Payload], handler: Callable[[DeviceContext, Any], dict[str, Any]]) -> None:
        self.model = model
        self.handler = handler


VERBS: dict[str, Verb] = {
    "enroll": Verb(EnrollPayload, _enroll),
    "confirm": Verb(
        ConfirmPayload, lambda ctx, p: ctx.confirm_unknown(p.unknown_id, p.person_id, p.name, p.metadata, False)
    ),
    "reject": Verb(RejectPayload, lambda ctx, p: ctx.reject(p.person_id, p.unknown_id, p.track_id)),
    "ignore": Verb(IgnorePayload, lambda ctx, p: ctx.ignore_unknown(p.unknown_id)),
    "list": Verb(ListPayload, _list),
    "get": Verb(PersonPayload, lambda ctx, p: ctx.get_person(p.person_id)),
    "rename": Verb(RenamePayload, lambda ctx, p: ctx.rename_person(p.person_id, p.name)),
    "update": Verb(UpdatePayload, lambda ctx, p: ctx.update_person(p.person_id, p.metadata)),
    "delete": Verb(DeletePayload, lambda ctx, p: ctx.delete(p.person_id, p.sample_id)),
    "backups": Verb(EmptyPayload, lambda ctx, _p: ctx.backups()),
    "restore": Verb(RestorePayload, lambda ctx, p: ctx.restore(p.backup_id)),
    "reload": Verb(EmptyPayload, lambda ctx, _p: ctx.reload()),
    "status": Verb(EmptyPayload, lambda ctx, _p: ctx.status()),
    "unknowns": Verb(EmptyPayload, lambda ctx, _p: ctx.unknowns()),
    "fleet_status": Verb(EmptyPayload, lambda ctx, _p: ctx.fleet_status()),
    "liveness": Verb(
        LivenessPayload, lambda ctx, p: ctx.liveness([decode_image(text, i) for i, text in enumerate(p.images)])
    ),
    "identify": Verb(
        IdentifyPayload,
        lambda ctx, p: ctx.identify(decode_field(p.image, "image"), p.top_k, p.threshold, p.remember),
    ),
    "verify": Verb(VerifyPayload, _verify),
    "detect": Verb(ImagePayload, lambda ctx, p: ctx.detect(decode_field(p.image, "image"))),
    "analyze": Verb(ImagePayload, lambda ctx, p: ctx.analyze(decode_field(p.image, "image"))),
    "reset": Verb(ResetPayload, lambda ctx, p: ctx.reset(p.confirm)),
}
"""Every verb the device answers; anything else is a ``bad_request``."""
