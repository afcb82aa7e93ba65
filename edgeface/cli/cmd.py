"""``edgeface cmd VERB [JSON] [options]``: send one command to a running device and print its reply.

The reply is awaited on ``<base>/<device>/reply/<request_id>``, given as the MQTT v5 response topic
with the request id as correlation data; against a 3.1.1-only broker (the embedded one) the device
answers on that same topic without properties. Exit status: 0 ok, 7 the device refused the command
(the reply's ``error.code`` says why), 6 no broker or no reply in time, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeface.config import TlsConfig, load_settings
from edgeface.config_sources import read_secret_file
from edgeface.errors import BrokerError, ConfigError
from edgeface.mqtt.link import tls_context
from edgeface.mqtt.signing import parse_keys, sign
from edgeface.mqtt.topics import Topics

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_REPLY = BrokerError.exit_code  # 6
EXIT_REFUSED = 7
_UNSUPPORTED_PROTOCOL = 132


# Verbs about one photo (verify: two) take ``image``/``image_b`` instead of enrollment's ``images`` list.
_ONE_IMAGE_VERBS = frozenset({"identify", "verify", "detect", "analyze"})


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "cmd",
        help="send a command to a running device and print the reply",
        description="Send VERB (enroll, confirm, reject, ignore, list, get, rename, update, delete, backups, "
        "restore, reload, status, unknowns, fleet_status, identify, verify, detect, analyze, reset) with a JSON "
        "payload and print the device's JSON reply.",
    )
    parser.add_argument("cmd_verb", metavar="VERB", help="command verb")
    parser.add_argument("payload", metavar="JSON", nargs="?", help='payload object, e.g. \'{"person_id": "p1"}\'')
    fields = parser.add_argument_group("payload fields (merged into JSON)")
    fields.add_argument(
        "--image",
        type=Path,
        action="append",
        help="photo to enroll (repeatable); for identify/detect/analyze the photo, for verify one or two",
    )
    fields.add_argument("--name", help="person name")
    fields.add_argument("--person-id", help="person id")
    fields.add_argument("--metadata", help="metadata as a JSON object")
    fields.add_argument("--force", action="store_true", default=None, help="enroll even if the face matches someone")
    fields.add_argument("--request-id", help="idempotency key (default: random)")
    add_connection_arguments(parser)
    parser.set_defaults(handler=_run)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say which device on which broker to talk to (``cmd``, ``fleet status``)."""
    conn = parser.add_argument_group("connection")
    conn.add_argument("--config", type=Path, help="take broker, device and keys from this settings file")
    conn.add_argument("--host", help="broker host (default 127.0.0.1)")
    conn.add_argument("--port", type=int, help="broker port (default 1883)")
    conn.add_argument("--device", help="device id (default edgeface)")
    conn.add_argument("--base-topic", help="topic prefix (default edgeface)")
    conn.add_argument("--username", help="broker username")
    conn.add_argument("--password-file", type=Path, help="file holding the broker password (mode 0600)")
    conn.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the reply (default 10)")
    conn.add_argument("--key-id", help="sign the command with this key")
    conn.add_argument("--key-file", type=Path, help="secret of --key-id, or a JSON {key_id: secret} file (mode 0600)")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    topics: Topics
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None


def _run(args: argparse.Namespace) -> int:
    try:
        payload = _payload(args)
    except (ConfigError, ValueError) as exc:
        print(f"edgeface cmd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reply = exchange(args, args.cmd_verb, payload, "edgeface cmd")
    if isinstance(reply, int):
        return reply
    print(json.dumps(reply, indent=2, ensure_ascii=False))
    return EXIT_OK if reply.get("ok") is True else EXIT_REFUSED


def exchange(args: argparse.Namespace, verb: str, payload: dict[str, Any], prog: str) -> dict[str, Any] | int:
    """Sign (with --key-id/--key-file) and send one command per the connection options; the reply,
    or the exit code after printing why there is none."""
    try:
        target, keys_file = _target(args)
        if args.key_id or args.key_file:
            key_id, secret = _key(args.key_id, args.key_file or keys_file)
            payload = sign(payload, verb, key_id, secret)
    except (ConfigError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        reply = send_command(target, verb, payload, args.timeout)
    except BrokerError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    if reply is None:
        print(f"{prog}: no reply from device {target.topics.device_id!r} within {args.timeout:g}s", file=sys.stderr)
        return EXIT_NO_REPLY
    return reply


def _target(args: argparse.Namespace) -> tuple[Target, Path | None]:
    host: str | None = None
    port, device, base = 1883, "edgeface", "edgeface"
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    keys_file: Path | None = None
    if args.config is not None:
        settings = load_settings(args.config)
        mqtt_cfg = settings.mqtt
        host = mqtt_cfg.host
        port = mqtt_cfg.port if mqtt_cfg.host else mqtt_cfg.embedded_port
        device, base, username, tls = settings.device.id, mqtt_cfg.base_topic, mqtt_cfg.username, mqtt_cfg.tls
        if mqtt_cfg.password_file is not None:
            password = read_secret_file(mqtt_cfg.password_file, "MQTT password")
        elif mqtt_cfg.password is not None:
            password = mqtt_cfg.password.get_secret_value()
        keys_file = settings.security.keys_file
    if args.password_file is not None:
        password = read_secret_file(args.password_file, "MQTT password")
    target = Target(
        host=args.host or host or "127.0.0.1",
        port=args.port or port,
        topics=Topics(args.base_topic or base, args.device or device),
        username=args.username or username,
        password=password,
        tls=tls,
    )
    return target, keys_file


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if args.payload:
        loaded = json.loads(args.payload)  # JSONDecodeError is a ValueError
        if not isinstance(loaded, dict):
            raise ValueError("JSON payload must be an object")
        payload.update(loaded)
    if args.metadata:
        metadata = json.loads(args.metadata)
        if not isinstance(metadata, dict):
            raise ValueError("--metadata must be a JSON object")
        payload["metadata"] = metadata
    for flag, key in (("name", "name"), ("person_id", "person_id"), ("force", "force")):
        if getattr(args, flag) is not None:
            payload[key] = getattr(args, flag)
    if args.image:
        images = []
        for path in args.image:
            try:
                images.append(base64.b64encode(path.read_bytes()).decode("ascii"))
            except OSError as exc:
                raise ValueError(f"cannot read image {path}: {exc.strerror}") from exc
        if args.cmd_verb in _ONE_IMAGE_VERBS:
            payload.update(zip(("image", "image_b"), images, strict=False))
        else:
            payload["images"] = images
    payload["request_id"] = args.request_id or payload.get("request_id") or uuid.uuid4().hex
    return payload


def _key(key_id: str | None, key_file: Path | None) -> tuple[str, bytes]:
    if key_file is None:
        raise ValueError("--key-id needs --key-file (or security.keys_file in --config)")
    text = read_secret_file(key_file, "command key")
    if not text.startswith("{"):
        if key_id is None:
            raise ValueError("--key-file holds a bare secret: give its --key-id")
        return key_id, text.encode("utf-8")
    keys = parse_keys(text, str(key_file))
    if key_id is None:
        if len(keys) != 1:
            raise ValueError(f"{key_file} holds {len(keys)} keys: choose one with --key-id")
        key_id = next(iter(keys))
    if key_id not in keys:
        raise ValueError(f"{key_file} has no key {key_id!r}")
    return key_id, keys[key_id]


def send_command(target: Target, verb: str, payload: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Publish one command and return the device's reply, or None without one within ``timeout``.

    Tries MQTT v5 first and falls back to 3.1.1 when the broker refuses v5; BrokerError when the
    broker cannot be reached or refuses the connection."""
    deadline = time.monotonic() + timeout
    for protocol in (MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311):
        try:
            return _exchange(target, protocol, verb, payload, deadline)
        except _UnsupportedProtocolError:
            continue
    raise BrokerError(f"MQTT broker {target.host}:{target.port} speaks neither MQTT v5 nor 3.1.1")


class _UnsupportedProtocolError(Exception):
    """The broker refused this MQTT version."""


def _exchange(
    target: Target, protocol: MQTTProtocolVersion, verb: str, payload: dict[str, Any], deadline: float
) -> dict[str, Any] | None:
    request_id = str(payload["request_id"])
    reply_topic = target.topics.reply(request_id)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.on_connect = lambda _c, _u, _f, reason, _p: events.put(("connect", reason))
    client.on_subscribe = lambda _c, _u, _m, reasons, _p: events.put(("subscribe", reasons))
    client.on_message = lambda _c, _u, message: events.put(("message", message))
    client.on_disconnect = lambda _c, _u, _f, reason, _p: events.put(("disconnect", reason))
    if target.username is not None or target.password is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls is not None:
        client.tls_set_context(tls_context(target.tls))
        client.tls_insecure_set(target.tls.insecure)
    try:
        client.connect(target.host, target.port, keepalive=30)
    except OSError as exc:
        raise BrokerError(f"cannot reach MQTT broker {target.host}:{target.port}: {exc.strerror or exc}") from exc
    client.loop_start()
    try:
        kind, reason = _next(events, ("connect", "disconnect"), deadline)
        if kind != "connect":
            raise BrokerError(f"MQTT broker {target.host}:{target.port} did not accept the connection ({reason})")
        if reason.is_failure:
            if reason.value == _UNSUPPORTED_PROTOCOL and protocol == MQTTProtocolVersion.MQTTv5:
                raise _UnsupportedProtocolError
            raise BrokerError(f"MQTT broker {target.host}:{target.port} refused the connection: {reason}")
        client.subscribe(reply_topic, qos=1)
        if _next(events, ("subscribe",), deadline)[0] is None:
            return None
        properties = None
        if protocol == MQTTProtocolVersion.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = reply_topic
            properties.CorrelationData = request_id.encode()
        body = json.dumps(payload, separators=(",", ":")).encode()
        client.publish(target.topics.command(verb), body, qos=1, properties=properties)
        while True:
            kind, message = _next(events, ("message",), deadline)
            if kind is None:
                return None
            correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
            if correlation not in (None, request_id.encode()):
                continue
            try:
                reply = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(reply, dict):
                return reply
    finally:
        client.disconnect()
        client.loop_stop()


def _next(events: queue.Queue[tuple[str, Any]], kinds: tuple[str, ...], deadline: float) -> tuple[str | None, Any]:
    """The next (kind, value) event of one of ``kinds`` before ``deadline`` (others are skipped)."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            kind, value = events.get(timeout=left)
        except queue.Empty:
            break
        if kind in kinds:
            return kind, value
    return None, "timed out"
