"""The command protocol end to end: a real broker, a real link, the in-memory DeviceContext."""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeface.config import SecurityConfig
from edgeface.mqtt.commands import ReplyCache
from edgeface.mqtt.signing import Verifier, sign, signature
from tests.memory_device import MemoryDevice, RunningDevice, running_device

KEY_ID = "controller-1"
SECRET = b"0123456789abcdef-secret"


@pytest.fixture
def dev(mosquitto) -> RunningDevice:  # type: ignore[no-untyped-def]
    with running_device(mosquitto.port) as running:
        yield running


def ask(probe, dev: RunningDevice, verb: str, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Send a command with a fresh request_id and return the reply from reply/<request_id>."""
    body = dict(payload or {}, **fields)
    body.setdefault("request_id", uuid.uuid4().hex)
    probe.publish(dev.topics.command(verb), json.dumps(body))
    return probe.wait_json(dev.topics.reply(body["request_id"]))


def ask_raw(probe, dev: RunningDevice, verb: str, body: bytes | str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Send raw bytes with a response topic (the request may carry no usable id) and return the reply."""
    topic = f"test/{uuid.uuid4().hex}/response"
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = topic
    props.CorrelationData = b"corr"
    probe.publish(dev.topics.command(verb), body, properties=props)
    msg = probe.wait_for(topic)
    assert msg.properties.CorrelationData == b"corr"
    return json.loads(msg.payload)  # type: ignore[no-any-return]


def _png(width: int, height: int, value: int) -> str:
    ok, data = cv2.imencode(".png", np.full((height, width, 3), value, np.uint8))
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def _jpeg(samples_dir: Path, name: str = "obama.jpg") -> str:
    return base64.b64encode((samples_dir / name).read_bytes()).decode()


def _error(reply: dict[str, Any], code: str) -> str:
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    return str(reply["error"]["message"])


# --- every verb --------------------------------------------------------------------------------


def test_person_lifecycle_verbs(dev: RunningDevice, mqtt_probe, samples_dir: Path) -> None:  # type: ignore[no-untyped-def]
    reply = ask(mqtt_probe, dev, "enroll", name="Barack", metadata={"access": True}, images=[_jpeg(samples_dir)])
    assert reply["ok"] is True and reply["verb"] == "enroll" and reply["samples_added"] == 1
    pid = reply["person"]["person_id"]
    assert reply["person"]["metadata"] == {"access": True}

    more = ask(mqtt_probe, dev, "enroll", person_id=pid, images=[_jpeg(samples_dir, "obama2.jpg")] * 2)
    assert more["samples_added"] == 2 and len(more["person"]["samples"]) == 3

    listed = ask(mqtt_probe, dev, "list", limit=10)
    assert listed["total"] == 1 and listed["skip"] == 0 and listed["limit"] == 10
    assert [p["person_id"] for p in listed["persons"]] == [pid]
    assert ask(mqtt_probe, dev, "get", person_id=pid)["person"]["name"] == "Barack"
    assert ask(mqtt_probe, dev, "rename", person_id=pid, name="Obama")["person"]["name"] == "Obama"
    assert ask(mqtt_probe, dev, "update", person_id=pid, metadata={"access": False})["person"]["metadata"] == {
        "access": False
    }
    sample = more["person"]["samples"][0]
    assert ask(mqtt_probe, dev, "delete", person_id=pid, sample_id=sample)["deleted"]["sample_id"] == sample
    assert ask(mqtt_probe, dev, "delete", person_id=pid)["deleted"] == {"person_id": pid}
    _error(ask(mqtt_probe, dev, "get", person_id=pid), "not_found")


def test_unknown_and_track_verbs(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    dev.device.unknowns_spool.update({"u1": {"samples": 4}, "u2": {"samples": 2}, "u3": {"samples": 1}})
    dev.device.tracks[7] = 3
    assert [u["unknown_id"] for u in ask(mqtt_probe, dev, "unknowns")["unknowns"]] == ["u1", "u2", "u3"]

    confirmed = ask(mqtt_probe, dev, "confirm", unknown_id="u1", name="Visitor")
    assert confirmed["samples_added"] == 4
    pid = confirmed["person"]["person_id"]
    assert len(ask(mqtt_probe, dev, "confirm", unknown_id="u2", person_id=pid)["person"]["samples"]) == 6
    assert ask(mqtt_probe, dev, "enroll", unknown_id="u3", person_id=pid)["samples_added"] == 1
    assert ask(mqtt_probe, dev, "enroll", track_id=7, name="Walker")["samples_added"] == 3
    assert ask(mqtt_probe, dev, "reject", person_id=pid, track_id=7)["person"]["negatives"] == 1
    dev.device.unknowns_spool["u4"] = {"samples": 1}
    assert ask(mqtt_probe, dev, "reject", person_id=pid, unknown_id="u4")["negatives_added"] == 1
    assert ask(mqtt_probe, dev, "ignore", unknown_id="u4") | {"request_id": None} == {
        "ok": True,
        "request_id": None,
        "verb": "ignore",
        "unknown_id": "u4",
        "ignored": True,
    }
    _error(ask(mqtt_probe, dev, "ignore", unknown_id="nope"), "not_found")
    _error(ask(mqtt_probe, dev, "enroll", track_id=99, name="Gone"), "not_found")


def test_maintenance_verbs(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    assert ask(mqtt_probe, dev, "backups")["backups"] == [{"backup_id": "b1"}]
    assert ask(mqtt_probe, dev, "restore", backup_id="b1")["restored"] == "b1"
    _error(ask(mqtt_probe, dev, "restore", backup_id="b9"), "not_found")
    assert ask(mqtt_probe, dev, "reload")["persons"] == 0 and dev.device.reloads == 1
    assert ask(mqtt_probe, dev, "status")["fps"] == 0.0


# --- error codes ---------------------------------------------------------------------------------


def test_malformed_json_is_bad_request(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    reply = ask_raw(mqtt_probe, dev, "list", b'{"limit": 5,')
    assert "not valid JSON" in _error(reply, "bad_request")
    assert reply["verb"] == "list" and len(reply["request_id"]) == 32  # generated, still reported
    assert "JSON object" in _error(ask_raw(mqtt_probe, dev, "list", b"[1, 2]"), "bad_request")
    assert "not valid JSON" in _error(ask_raw(mqtt_probe, dev, "list", b"\xff\xfe"), "bad_request")


def test_empty_payload_is_an_empty_object(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    reply = ask_raw(mqtt_probe, dev, "status", b"")
    assert reply["ok"] is True and reply["persons"] == 0


def test_unknown_verb(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    message = _error(ask(mqtt_probe, dev, "explode"), "bad_request")
    assert "unknown verb 'explode'" in message and "enroll" in message


@pytest.mark.parametrize(
    ("verb", "payload", "field"),
    [
        ("list", {"limit": "10"}, "limit"),
        ("list", {"limit": 501}, "limit"),
        ("list", {"skip": -1}, "skip"),
        ("list", {"lmit": 5}, "lmit"),
        ("get", {}, "person_id"),
        ("rename", {"person_id": "p1", "name": 5}, "name"),
        ("update", {"person_id": "p1", "metadata": [1]}, "metadata"),
        ("enroll", {"name": "A", "images": ["x"], "track_id": 3}, "exactly one of images, track_id, unknown_id"),
        ("enroll", {"track_id": 3}, "name is required"),
        ("enroll", {"name": "A", "force": "yes", "track_id": 1}, "force"),
        ("confirm", {"unknown_id": "u1"}, "exactly one of person_id, name"),
        ("reject", {"person_id": "p1", "unknown_id": "u", "track_id": 1}, "exactly one of unknown_id, track_id"),
        ("status", {"verbose": True}, "verbose"),
    ],
)
def test_bad_payloads_name_the_field(  # type: ignore[no-untyped-def]
    dev: RunningDevice, mqtt_probe, verb: str, payload: dict[str, Any], field: str
) -> None:
    assert field in _error(ask(mqtt_probe, dev, verb, payload), "bad_request")
    assert dev.device.applied == []


def test_bad_request_id(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    reply = ask_raw(mqtt_probe, dev, "status", json.dumps({"request_id": "a/b#"}))
    assert "request_id" in _error(reply, "bad_request")
    assert reply["request_id"] != "a/b#"


def test_image_errors(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    assert "images.0: not valid base64" in _error(
        ask(mqtt_probe, dev, "enroll", name="A", images=["%%%"]), "bad_request"
    )
    not_image = base64.b64encode(b"GIF89a....").decode()
    assert "not a JPEG, PNG, WebP or BMP" in _error(
        ask(mqtt_probe, dev, "enroll", name="A", images=[not_image]), "bad_request"
    )
    _error(ask(mqtt_probe, dev, "enroll", name="A", images=[_png(100, 100, 0)]), "no_face")
    _error(ask(mqtt_probe, dev, "enroll", name="A", images=[_png(32, 32, 128)]), "low_quality")
    _error(ask(mqtt_probe, dev, "enroll", name="A", images=[_png(4100, 80, 128)]), "multiple_faces")
    data_url = "data:image/png;base64," + _png(100, 100, 128)
    assert ask(mqtt_probe, dev, "enroll", name="A", images=[data_url])["ok"] is True
    assert "already enrolled" in _error(ask(mqtt_probe, dev, "enroll", name="A", images=[data_url]), "conflict")
    assert ask(mqtt_probe, dev, "enroll", name="A", images=[data_url], force=True)["ok"] is True


def test_too_large(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    with running_device(mosquitto.port, security=SecurityConfig(max_payload_bytes=1024)) as dev:
        reply = ask_raw(mqtt_probe, dev, "status", json.dumps({"pad": "x" * 2000}))
        assert "the limit is 1024" in _error(reply, "too_large")


class _FailingDevice(MemoryDevice):
    def get_person(self, person_id: str) -> dict[str, Any]:
        raise RuntimeError("disk on fire")


@pytest.mark.expect_errors
def test_unexpected_exception_is_internal(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    with running_device(mosquitto.port, device=_FailingDevice()) as dev:
        message = _error(ask(mqtt_probe, dev, "get", person_id="p1"), "internal")
        assert "disk on fire" not in message  # details stay in the device log
        assert ask(mqtt_probe, dev, "status")["ok"] is True  # the worker survived


class _BlockingDevice(MemoryDevice):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def status(self) -> dict[str, Any]:
        self.entered.set()
        self.gate.wait(10)
        return super().status()


def test_full_queue_answers_busy_at_once(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    device = _BlockingDevice()
    with running_device(mosquitto.port, device=device, queue_size=1) as dev:
        try:
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "first"}))
            assert device.entered.wait(10)
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "queued"}))
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "third"}))
            assert "busy" in _error(mqtt_probe.wait_json(dev.topics.reply("third")), "busy")
        finally:
            device.gate.set()
        assert mqtt_probe.wait_json(dev.topics.reply("first"))["ok"] is True
        assert mqtt_probe.wait_json(dev.topics.reply("queued"))["ok"] is True


def test_deep_json_is_bad_request_before_parsing(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    deep = '{"request_id": "deep", "y": ' + "[" * 100_000 + "]" * 100_000 + "}"
    message = _error(ask_raw(mqtt_probe, dev, "status", deep), "bad_request")
    assert "nests 100001 levels deep; the limit is 32" in message
    # Brackets inside strings are data, not nesting: this one is parsed, and refused for its unknown field.
    assert "note" in _error(ask(mqtt_probe, dev, "status", note="[" * 1000), "bad_request")
    # A 5000-digit integer is refused as a bad request, not an internal error.
    huge = '{"n": ' + "9" * 5000 + "}"
    assert "cannot be decoded" in _error(ask_raw(mqtt_probe, dev, "status", huge), "bad_request")
    assert ask(mqtt_probe, dev, "status")["ok"] is True  # the worker and paho's thread are fine


def test_every_payload_gets_one_reply_while_the_queue_is_full(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    device = _BlockingDevice()
    bad: list[bytes] = [
        b"[" * 1000,  # deep, unterminated
        json.dumps({"request_id": "d", "a": json.loads("[" * 40 + "]" * 40)}).encode(),  # deep, valid JSON
        b"\xff\xfe\x00binary" * 50,  # not UTF-8
        b"x" * 2000,  # over max_payload_bytes (1024 here)
        b'{"request_id": "' + b"r" * 200 + b'"}',  # unusable request id
        b"[1, 2, 3]",  # not an object
        b"",  # empty: status
    ]
    security = SecurityConfig(max_payload_bytes=1024)
    with running_device(mosquitto.port, device=device, queue_size=1, security=security) as dev:
        try:
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "first"}))
            assert device.entered.wait(10)
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "queued"}))
            mqtt_probe.wait_for(dev.topics.command("status"), predicate=lambda m: b"queued" in m.payload)
            topics = []
            for i, body in enumerate(bad):
                topic = f"test/{uuid.uuid4().hex}/full-{i}"
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = topic
                mqtt_probe.publish(dev.topics.command("status"), body, properties=props)
                topics.append(topic)
            codes = [json.loads(mqtt_probe.wait_for(t).payload)["error"]["code"] for t in topics]
            assert codes == ["busy", "busy", "busy", "too_large", "busy", "busy", "busy"]
        finally:
            device.gate.set()
        assert mqtt_probe.wait_json(dev.topics.reply("first"))["ok"] is True
        assert mqtt_probe.wait_json(dev.topics.reply("queued"))["ok"] is True
        # A last command answered after everything else: no second reply to any of them came before it.
        assert ask(mqtt_probe, dev, "status")["ok"] is True
        for topic in topics:
            with pytest.raises(AssertionError):
                mqtt_probe.wait_for(topic, timeout=0.2)


def test_commands_overtaken_by_shutdown_are_answered(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    device = _BlockingDevice()
    with running_device(mosquitto.port, device=device, queue_size=4) as dev:
        try:
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "running"}))
            assert device.entered.wait(10)
            mqtt_probe.publish(dev.topics.command("list"), json.dumps({"request_id": "waiting"}))
            # The probe sees its own command once the broker routed it, i.e. the device has it too.
            mqtt_probe.wait_for(dev.topics.command("list"))
            dev.stop.set()
        finally:
            device.gate.set()
        assert "shutting down" in _error(mqtt_probe.wait_json(dev.topics.reply("waiting")), "internal")
        assert mqtt_probe.wait_json(dev.topics.reply("running"))["ok"] is True


# --- idempotency and reply routing ---------------------------------------------------------------


def test_retried_request_id_is_answered_identically_and_applied_once(  # type: ignore[no-untyped-def]
    dev: RunningDevice, mqtt_probe
) -> None:
    body = json.dumps({"request_id": "enroll-42", "name": "Ann", "images": [_png(100, 100, 128)]})
    mqtt_probe.publish(dev.topics.command("enroll"), body)
    first = mqtt_probe.wait_for(dev.topics.reply("enroll-42"))
    mqtt_probe.publish(dev.topics.command("enroll"), body)
    second = mqtt_probe.wait_for(dev.topics.reply("enroll-42"))
    assert second.payload == first.payload
    assert json.loads(first.payload)["ok"] is True
    assert dev.device.applied == ["enroll_images"]
    assert ask(mqtt_probe, dev, "list")["total"] == 1

    # A refusal by the handler is remembered too; a request_id reused for another verb is a conflict.
    mqtt_probe.publish(dev.topics.command("get"), json.dumps({"request_id": "g1", "person_id": "zz"}))
    assert mqtt_probe.wait_json(dev.topics.reply("g1"))["error"]["code"] == "not_found"
    mqtt_probe.publish(dev.topics.command("delete"), json.dumps({"request_id": "enroll-42", "person_id": "p1"}))
    assert "already used for 'enroll'" in _error(mqtt_probe.wait_json(dev.topics.reply("enroll-42")), "conflict")


def test_reply_on_response_topic_with_correlation_data(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "app/door-1/responses"
    props.CorrelationData = b"\x00\x01corr"
    mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "s1"}), properties=props)
    msg = mqtt_probe.wait_for("app/door-1/responses")
    assert msg.properties.CorrelationData == b"\x00\x01corr"
    assert json.loads(msg.payload)["request_id"] == "s1"
    # Exactly once: nothing on reply/<id> as well.
    with pytest.raises(AssertionError):
        mqtt_probe.wait_for(dev.topics.reply("s1"), timeout=0.5)


def test_wildcard_response_topic_falls_back_to_reply_topic(dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "app/+/responses"
    mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "s2"}), properties=props)
    assert mqtt_probe.wait_json(dev.topics.reply("s2"))["ok"] is True


def test_applied_hook_sees_successful_commands(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    seen: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    with running_device(mosquitto.port, on_applied=lambda verb, _p, reply: seen.put((verb, reply))) as dev:
        dev.device.unknowns_spool["u1"] = {"samples": 1}
        ask(mqtt_probe, dev, "get", person_id="missing")
        reply = ask(mqtt_probe, dev, "ignore", unknown_id="u1")
        assert seen.get(timeout=5) == ("ignore", reply)
        assert seen.empty()


# --- signatures ----------------------------------------------------------------------------------


@pytest.fixture
def signed_dev(mosquitto, tmp_path: Path) -> RunningDevice:  # type: ignore[no-untyped-def]
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({KEY_ID: SECRET.decode()}))
    keys.chmod(0o600)
    security = SecurityConfig(require_signature=True, keys_file=keys, max_skew_s=60)
    with running_device(mosquitto.port, security=security, verifier=Verifier({KEY_ID: SECRET}, 60)) as running:
        yield running


def _signed(verb: str, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return sign(payload, verb, kwargs.pop("key_id", KEY_ID), kwargs.pop("secret", SECRET), **kwargs)


def test_signed_command_is_accepted(signed_dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    assert ask(mqtt_probe, signed_dev, "status", _signed("status", {"request_id": "ok-1"}))["ok"] is True


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"request_id": "u1"}, "not signed"),
        (_signed("status", {"request_id": "u2"}, key_id="someone"), "unknown key_id"),
        (_signed("status", {"request_id": "u3"}, secret=b"wrong-secret-wrong-secret"), "bad signature"),
        (_signed("status", {"request_id": "u4"}, ts=time.time() - 3600), "timestamp stale"),
        (_signed("status", {"request_id": "u5"}, ts=time.time() + 3600), "timestamp in the future"),
        (_signed("delete", {"request_id": "u6"}), "bad signature"),  # signed for another verb
        ({**_signed("status", {"request_id": "u7"}), "nonce": "short"}, "nonce"),
    ],
)
def test_unauthorized_commands(  # type: ignore[no-untyped-def]
    signed_dev: RunningDevice, mqtt_probe, payload: dict[str, Any], reason: str
) -> None:
    assert reason in _error(ask(mqtt_probe, signed_dev, "status", payload), "unauthorized")


def test_tampered_payload_is_unauthorized(signed_dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    payload = _signed("get", {"request_id": "t1", "person_id": "p1"}) | {"person_id": "p2"}
    assert "bad signature" in _error(ask(mqtt_probe, signed_dev, "get", payload), "unauthorized")


def test_replayed_nonce(signed_dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    signed_dev.device.unknowns_spool["u1"] = {"samples": 1}
    original = _signed("ignore", {"request_id": "r1", "unknown_id": "u1"})
    assert ask(mqtt_probe, signed_dev, "ignore", original)["ok"] is True
    # The exact retry (same request_id) gets the stored reply; nothing is applied twice.
    assert ask(mqtt_probe, signed_dev, "ignore", original)["ok"] is True
    assert signed_dev.device.applied == ["ignore"]
    # A correctly signed command reusing that nonce under another request_id is a replay.
    replay = {"request_id": "r2", "unknown_id": "u1", "key_id": KEY_ID}
    replay |= {"ts": original["ts"], "nonce": original["nonce"]}
    replay["sig"] = signature("ignore", replay, SECRET)
    assert "nonce already used" in _error(ask(mqtt_probe, signed_dev, "ignore", replay), "unauthorized")
    assert signed_dev.device.applied == ["ignore"]


def test_reply_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache = ReplyCache(size=2, ttl_s=10, clock=lambda: now[0])
    for rid in ("a", "b"):
        cache.put(rid, "status", {"request_id": rid})
    assert cache.get("a") == ("status", {"request_id": "a"})  # now most recently used
    cache.put("c", "status", {"request_id": "c"})
    assert (cache.get("b"), cache.get("a") is not None) == (None, True)  # least recently used evicted
    now[0] = 10.5
    assert cache.get("a") is None and cache.get("c") is None


def _fuzz_payload(rng: np.random.Generator) -> bytes:
    """A malformed or hostile command payload of one of several kinds."""
    kind = int(rng.integers(0, 8))
    if kind == 0:  # random bytes
        return rng.bytes(int(rng.integers(1, 600)))
    if kind == 1:  # deep nesting, closed or not
        depth = int(rng.integers(33, 5000))
        return b'{"a": ' + b"[" * depth + (b"]" * depth if rng.random() < 0.5 else b"") + b"}"
    if kind == 2:  # a JSON value that is not an object
        return rng.choice([b"[]", b"1", b'"x"', b"null", b"true", b"1e999", b"NaN"]).tobytes()
    if kind == 3:  # truncated valid JSON
        text = json.dumps({"request_id": "t", "name": "x" * int(rng.integers(0, 50)), "images": ["AAAA"]}).encode()
        return text[: int(rng.integers(1, len(text)))]
    if kind == 4:  # wrong field types
        return json.dumps({"person_id": int(rng.integers(0, 9)), "limit": "ten", "skip": -1}).encode()
    if kind == 5:  # huge numbers and long strings
        return b'{"limit": ' + b"9" * int(rng.integers(4300, 6000)) + b"}"
    if kind == 6:  # invalid UTF-8 inside a JSON string
        return b'{"name": "\xc3\x28\xff"}'
    return b"x" * 20_000  # over the size limit


def test_fuzzed_payloads_get_exactly_one_reply_each(mosquitto, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    count = int(os.environ.get("EDGEFACE_FUZZ_COUNT", "200"))
    rng = np.random.default_rng(20261201)
    verbs = ["status", "list", "get", "enroll", "delete", "nope"]
    device = _BlockingDevice()
    security = SecurityConfig(max_payload_bytes=16384)
    topics: list[str] = []
    codes: dict[str, int] = {}

    def collect(batch: list[str]) -> None:
        for topic in batch:
            reply = json.loads(mqtt_probe.wait_for(topic, timeout=60).payload)
            code = "ok" if reply["ok"] else reply["error"]["code"]
            codes[code] = codes.get(code, 0) + 1

    with running_device(mosquitto.port, device=device, queue_size=2, security=security) as dev:
        try:
            # The worker is held inside a command for the first batch: the queue fills, then answers "busy".
            mqtt_probe.publish(dev.topics.command("status"), json.dumps({"request_id": "hold"}))
            assert device.entered.wait(10)
            # Batches of 100 stay within the link's outbox (1000): a flood beyond it drops the oldest replies.
            for start in range(0, count, 100):
                batch = []
                for _ in range(start, min(count, start + 100)):
                    topic = f"test/fuzz-{uuid.uuid4().hex}"
                    props = Properties(PacketTypes.PUBLISH)
                    props.ResponseTopic = topic
                    verb = verbs[int(rng.integers(0, len(verbs)))]
                    mqtt_probe.client.publish(dev.topics.command(verb), _fuzz_payload(rng), qos=1, properties=props)
                    batch.append(topic)
                device.gate.set()
                collect(batch)
                topics += batch
        finally:
            device.gate.set()
        assert ask(mqtt_probe, dev, "status")["ok"] is True  # answered after every fuzzed one
        assert not [m for m in mqtt_probe.seen if m.topic in set(topics)]  # no second reply
    assert set(codes) <= {"bad_request", "busy", "too_large", "not_found", "ok"}, codes
    assert "internal" not in codes
    print(f"\n{count} fuzzed payloads, one reply each: {codes}")
def test_reset_needs_a_signature_and_the_device_id(signed_dev: RunningDevice, mqtt_probe) -> None:  # type: ignore[no-untyped-def]
    signed_dev.device.persons["p1"] = {"person_id": "p1", "name": "A", "metadata": {}, "samples": [], "negatives": 0}
    device_id = signed_dev.topics.device_id
    unsigned = ask(mqtt_probe, signed_dev, "reset", {"request_id": "z1", "confirm": device_id})
    assert "not signed" in _error(unsigned, "unauthorized")
    wrong = ask(mqtt_probe, signed_dev, "reset", _signed("reset", {"request_id": "z2", "confirm": "other"}))
    assert "confirm" in _error(wrong, "bad_request")
    assert signed_dev.device.persons
    ok = ask(mqtt_probe, signed_dev, "reset", _signed("reset", {"request_id": "z3", "confirm": device_id}))
    assert ok["ok"] is True and signed_dev.device.persons == {}
