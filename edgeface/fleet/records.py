"""The replicated record of one person, its tombstone, and their signed wire form.

A retained message on ``<base>/fleet/<fleet_id>/persons/<person_id>`` is one JSON object::

    {"v": 1, "kind": "person", "fleet": "site-1", "person_id": "3f9c2a71d0e4a5b6",
     "publisher": "back-door", "origin": "front-door", "model_id": "dlib_resnet_v1_int8", "dim": 128,
     "name": "Alice", "metadata": {"access": true}, "created": "...", "updated": "...",
     "samples": [{"id": "...", "kind": "positive", "created": "...", "source": "image", "quality": {...}}],
     "vectors": "<base64 of the samples' embeddings, float16 little-endian, one row per sample>",
     "removed": ["<sample ids deleted from this person>"], "key_id": "9a0c41d2", "sig": "<hex>"}

    {"v": 1, "kind": "tombstone", "fleet": ..., "person_id": ..., "publisher": ..., "origin": ...,
     "deleted": "<time>", "key_id": ..., "sig": ...}

``origin`` is the device whose change made this version; ``publisher`` the device that sent it (a
device republishes a merged version, see merge.py). ``sig`` is ``signing.signature`` (HMAC-SHA256
over the canonical JSON) under the verb ``fleet-record`` with the fleet key; ``key_id`` names the key
(the first 8 hex digits of its SHA-256) so a device can tell "another fleet's key" from "forged".
The fleet id and person id are inside the signed bytes, so a record cannot be moved to another
person or fleet. There are no face images: only embeddings travel.

Embeddings travel as float16: 256 bytes per 128-D sample instead of 512 (docs/fleet.md measures
what the rounding costs in matching: nothing at the calibrated threshold).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeface.data import FloatArray
from edgeface.errors import CommandError
from edgeface.matching.records import PersonRecord, SampleRecord, clean_name, metadata_json, parse_time, unit_rows
from edgeface.mqtt.signing import canonical, signature

RECORD_VERSION = 1
SIGNED_VERB = "fleet-record"
MIN_KEY_CHARS = 16
# Sample ids deleted from a person are kept in its record so that a device still holding one does
# not bring it back in a merge; bounded because a record must stay small.
MAX_REMOVED = 512
_WIRE_DTYPE = np.dtype("<f2")


class RecordRefusedError(Exception):
    """A record that is not applied; ``reason`` is the counter it goes to."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FleetKey:
    """The fleet's shared secret and its public id."""

    secret: bytes
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS:
            raise ValueError(f"a fleet key needs at least {MIN_KEY_CHARS} characters")
        object.__setattr__(self, "key_id", hashlib.sha256(self.secret).hexdigest()[:8])

    def sign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        signed = {k: v for k, v in body.items() if k != "sig"}
        signed["key_id"] = self.key_id
        signed["sig"] = signature(SIGNED_VERB, signed, self.secret)
        return signed

    def verify(self, obj: Mapping[str, Any]) -> None:
        """RecordRefusedError("refused") unless ``obj`` carries a valid signature by this key."""
        sig, key_id = obj.get("sig"), obj.get("key_id")
        if not isinstance(sig, str) or not isinstance(key_id, str):
            raise RecordRefusedError("refused", "record is not signed")
        if key_id != self.key_id:
            message = f"record is signed with another key ({key_id!r}, ours is {self.key_id!r})"
            raise RecordRefusedError("refused", message)
        expected = signature(SIGNED_VERB, obj, self.secret)
        if not hmac.compare_digest(expected.encode("ascii"), sig.lower().encode("utf-8", "replace")):
            raise RecordRefusedError("refused", "bad signature")


@dataclass(frozen=True, slots=True)
class PersonState:
    """A person as replicated: the database record, its embedding rows, who made this version, and
    the sample ids known to be deleted from it."""

    person: PersonRecord
    vectors: FloatArray  # (len(person.samples), dim), rows follow person.samples
    origin: str
    removed: frozenset[str] = frozenset()

    @property
    def version(self) -> tuple[float, str]:
        return version(self.person.updated, self.origin)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted person: when and by which device."""

    person_id: str
    deleted: str
    origin: str

    @property
    def version(self) -> tuple[float, str]:
        return version(self.deleted, self.origin)

    def to_json(self) -> dict[str, str]:
        return {"person_id": self.person_id, "deleted": self.deleted, "origin": self.origin}


def version(updated: str, origin: str) -> tuple[float, str]:
    """The order of concurrent versions: newer ``updated`` wins, a tie goes to the greater device id."""
    return parse_time(updated).timestamp(), origin


def digest(person: PersonRecord) -> str:
    """A fingerprint of what replication carries of a person (not local-only fields such as has_chip)."""
    samples = sorted((s.id, s.kind, s.created, s.source, s.to_json()["quality"]) for s in person.samples)
    body = [person.id, person.name, person.metadata_text, person.created, person.updated, samples]
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Record:
    """A verified record as received: a person or a tombstone, and who sent it."""

    publisher: str
    body: PersonState | Tombstone


def encode_person(state: PersonState, *, fleet_id: str, publisher: str, model_id: str, key: FleetKey) -> bytes:
    """The signed wire form of a person."""
    person = state.person
    body: dict[str, Any] = {
        "v": RECORD_VERSION,
        "kind": "person",
        "fleet": fleet_id,
        "person_id": person.id,
        "publisher": publisher,
        "origin": state.origin,
        "model_id": model_id,
        "dim": int(state.vectors.shape[1]),
        "name": person.name,
        "metadata": person.metadata,
        "created": person.created,
        "updated": person.updated,
        "samples": [{k: v for k, v in s.to_json().items() if k != "has_chip"} for s in person.samples],
        "vectors": base64.b64encode(np.ascontiguousarray(state.vectors, _WIRE_DTYPE).tobytes()).decode("ascii"),
        "removed": sorted(state.removed)[-MAX_REMOVED:],
    }
    return canonical(key.sign(body))


def encode_tombstone(tomb: Tombstone, *, fleet_id: str, publisher: str, key: FleetKey) -> bytes:
    """The signed wire form of a deletion."""
    body = {"v": RECORD_VERSION, "kind": "tombstone", "fleet": fleet_id, "publisher": publisher, **tomb.to_json()}
    return canonical(key.sign(body))


def decode(payload: bytes, *, key: FleetKey, fleet_id: str, person_id: str, model_id: str, dim: int) -> Record:
    """Verify and decode a record received on ``person_id``'s topic.

    RecordRefusedError reasons: ``refused`` (unsigned, other key, bad signature), ``invalid`` (signed but
    malformed, or for another topic), ``other_model`` (embeddings of another embedder)."""
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordRefusedError("refused", f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise RecordRefusedError("refused", "not a JSON object")
    key.verify(obj)
    if obj.get("v") != RECORD_VERSION:
        raise RecordRefusedError("invalid", f"record version {obj.get('v')!r}; this edgeface reads {RECORD_VERSION}")
    if obj.get("fleet") != fleet_id or obj.get("person_id") != person_id:
        where = f"{obj.get('fleet')}/{obj.get('person_id')}"
        raise RecordRefusedError("invalid", f"record of {where} on the topic of {fleet_id}/{person_id}")
    try:
        publisher, origin = str(obj["publisher"]), str(obj["origin"])
        if obj["kind"] == "tombstone":
            tomb = Tombstone(person_id, str(obj["deleted"]), origin)
            tomb.version  # noqa: B018 -- parses the time: a bad one is refused here, not in a merge
            return Record(publisher, tomb)
        if obj["kind"] != "person":
            raise ValueError(f"unknown kind {obj['kind']!r}")
        if obj["model_id"] != model_id or obj["dim"] != dim:
            message = f"embeddings of {obj['model_id']} ({obj['dim']}-D), ours are {model_id} ({dim}-D)"
            raise RecordRefusedError("other_model", message)
        return Record(publisher, _person_state(obj, person_id, origin, model_id, dim))
    except RecordRefusedError:
        raise
    except (KeyError, TypeError, ValueError, binascii.Error, CommandError) as exc:
        raise RecordRefusedError("invalid", f"malformed record: {exc!r}") from exc


def _person_state(obj: dict[str, Any], person_id: str, origin: str, model_id: str, dim: int) -> PersonState:
    samples = [SampleRecord.from_json({**raw, "has_chip": False}) for raw in obj["samples"]]
    raw_vectors = np.frombuffer(base64.b64decode(obj["vectors"], validate=True), _WIRE_DTYPE)
    if raw_vectors.size != len(samples) * dim:
        raise ValueError(f"{raw_vectors.size} embedding values for {len(samples)} samples of {dim}-D")
    vectors = unit_rows(raw_vectors.reshape(len(samples), dim), dim, model_id)
    person = PersonRecord.from_json(
        {
            "id": person_id,
            "name": clean_name(obj["name"]),
            "metadata": json.loads(metadata_json(obj["metadata"])),
            "created": obj["created"],
            "updated": obj["updated"],
            "samples": [s.to_json() for s in samples],
        }
    )
    parse_time(person.updated)
    if person.positives == 0:
        raise ValueError("a person needs at least one positive sample")
    if len({s.id for s in samples}) != len(samples):
        raise ValueError("duplicate sample ids")
    removed = obj["removed"]
    if not isinstance(removed, list):
        raise ValueError("removed is not a list")
    return PersonState(person, vectors, origin, frozenset(str(r) for r in removed))
