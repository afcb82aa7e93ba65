"""The signed record format: round trip, refusals, and the size of a record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeface.data import Quality
from edgeface.fleet.records import (
    FleetKey,
    PersonState,
    RecordRefusedError,
    Tombstone,
    decode,
    encode_person,
    encode_tombstone,
)
from edgeface.matching.records import PersonRecord, SampleRecord, later_than, new_id, now_iso
from tests.fleet.conftest import DIM, FLEET_SECRET

KEY = FleetKey(FLEET_SECRET.encode())
MODEL = "dlib_resnet_v1_int8"


def _state(vectors: np.ndarray, origin: str = "door-a", negatives: int = 0) -> PersonState:
    now = now_iso()
    quality = Quality(face_px=212.0, sharpness=88.4, yaw=3.1, pitch=-2.0)
    samples = tuple(
        SampleRecord(new_id(), "negative" if i >= len(vectors) - negatives else "positive", now, "image", quality, True)
        for i in range(len(vectors))
    )
    person = PersonRecord(new_id(), "Alice Example", '{"access":true,"badge":"A-1042"}', now, now, samples)
    return PersonState(person, vectors.astype(np.float32), origin, frozenset({"0123456789abcdef"}))


def _decode(payload: bytes, person_id: str, model_id: str = MODEL, key: FleetKey = KEY) -> object:
    return decode(payload, key=key, fleet_id="site", person_id=person_id, model_id=model_id, dim=DIM).body


def test_person_round_trips_without_chips_and_with_float16_rounding(embeddings: dict[str, np.ndarray]) -> None:
    vectors = np.stack([embeddings[n] for n in ("obama.jpg", "obama2.jpg", "biden.jpg")])
    state = _state(vectors, negatives=1)
    payload = encode_person(state, fleet_id="site", publisher="door-b", model_id=MODEL, key=KEY)
    assert b"has_chip" not in payload  # faces and chips never travel
    got = _decode(payload, state.person.id)
    assert isinstance(got, PersonState)
    assert got.origin == "door-a" and got.removed == state.removed
    assert got.person.name == state.person.name and got.person.metadata == {"access": True, "badge": "A-1042"}
    assert [s.id for s in got.person.samples] == [s.id for s in state.person.samples]
    assert got.person.negatives == 1 and not any(s.has_chip for s in got.person.samples)
    # float16 keeps every component within 1e-3 and cosine similarities within 1e-5 of float32.
    assert np.abs(got.vectors - vectors).max() < 1e-3
    assert np.abs(np.sum(got.vectors * vectors, axis=1) - 1.0).max() < 1e-5


def test_record_of_twenty_samples_is_small(embeddings: dict[str, np.ndarray]) -> None:
    vectors = np.stack([embeddings["obama.jpg"]] * 20)
    payload = encode_person(_state(vectors), fleet_id="site", publisher="door-a", model_id=MODEL, key=KEY)
    # 20 x DIM float16 in base64 (6,828 bytes for 128-d), plus ~150 bytes of JSON per sample.
    vectors_b64 = 20 * DIM * 2 * 4 / 3
    assert vectors_b64 + 1_000 < len(payload) < vectors_b64 + 5_000, len(payload)


def test_forged_records_are_refused(embeddings: dict[str, np.ndarray]) -> None:
    state = _state(embeddings["obama.jpg"][None, :])
    pid = state.person.id
    good = json.loads(encode_person(state, fleet_id="site", publisher="door-a", model_id=MODEL, key=KEY))

    def refused(obj: object, person_id: str = pid) -> str:
        with pytest.raises(RecordRefusedError) as info:
            _decode(json.dumps(obj).encode(), person_id)
        return info.value.reason

    assert refused({**good, "name": "Mallory"}) == "refused"
    assert refused({**good, "metadata": {"access": True, "badge": "A-1042", "admin": True}}) == "refused"
    assert refused({k: v for k, v in good.items() if k != "sig"}) == "refused"
    assert refused({**good, "key_id": "00000000"}) == "refused"
    assert refused(good, person_id="ffffffffffffffff") == "invalid"  # moved to another person's topic
    with pytest.raises(RecordRefusedError) as info:
        _decode(b"\xff not json", pid)
    assert info.value.reason == "refused"
    other_key = FleetKey(b"another-fleet-secret-01")
    with pytest.raises(RecordRefusedError, match="another key"):
        _decode(encode_person(state, fleet_id="site", publisher="x", model_id=MODEL, key=other_key), pid)
    with pytest.raises(RecordRefusedError) as info:
        _decode(encode_person(state, fleet_id="site", publisher="x", model_id="sface", key=KEY), pid)
    assert info.value.reason == "other_model"


def test_tombstone_round_trip_and_version_order() -> None:
    tomb = Tombstone("ab12cd34ef567890", later_than(now_iso()), "door-b")
    got = _decode(encode_tombstone(tomb, fleet_id="site", publisher="door-b", key=KEY), tomb.person_id)
    assert got == tomb
    assert Tombstone(tomb.person_id, tomb.deleted, "door-c").version > tomb.version  # tie: greater device id


def test_key_needs_sixteen_characters() -> None:
    with pytest.raises(ValueError, match="16"):
        FleetKey(b"short")
    assert len(KEY.key_id) == 8
