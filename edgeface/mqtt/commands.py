"""The command protocol: every message on ``<base>/<device>/cmd/<verb>`` gets exactly one reply.

Request: a JSON object; optional ``request_id`` (``[A-Za-z0-9_.:-]{1,128}``), the signature fields
when signatures are in use (see ``signing``), and the verb's own fields (see ``verbs``). An empty
payload counts as ``{}``.

Reply, on the MQTT v5 response topic with the request's correlation data when one was given,
else on ``<base>/<device>/reply/<request_id>`` (an id is generated when the request had none)::

    {"ok": true,  "request_id": "...", "verb": "...", ...result}
    {"ok": false, "request_id": "...", "verb": "...", "error": {"code": "...", "message": "..."}}

Checks, in order: size (``too_large``), shape before parsing (nesting deeper than ``MAX_DEPTH``:
``bad_request``), JSON (``bad_request``), signature (``unauthorized``) when
``security.require_signature`` -- or whenever a command carries one and keys are configured --, verb
and payload model (``bad_request`` naming the field), then idempotency: a ``request_id`` answered
within ``REPLY_TTL_S`` gets the stored reply again without re-applying (an id reused for another
verb is a ``conflict``).
Handler errors carry their own codes; anything unexpected is ``internal``.

Handlers run on one worker thread, never on paho's network thread: enrollment decodes and embeds
images for a noticeable time. The queue in front of it is bounded; when full the command is
answered ``busy`` at once instead of blocking the network loop. A command that arrives while the
device stops is answered ``internal`` ("shutting down"): every command gets exactly one reply.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import numpy as np
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ValidationError

from edgeface.config import SecurityConfig
from edgeface.errors import CommandError, ErrorCode, StorageError
from edgeface.mqtt.signing import SIGNATURE_FIELDS, ReplayError, Verifier
from edgeface.mqtt.topics import Topics
from edgeface.mqtt.verbs import VERBS, DeviceContext

_LOGGER = logging.getLogger(__name__)

# Commands waiting for the worker; a controller retrying a slow enrollment should hear "busy"
# quickly rather than pile up minutes of work.
QUEUE_SIZE = 16
# Replies remembered for idempotent retries: enough for every command of a busy hour.
REPLY_CACHE_SIZE = 1000
REPLY_TTL_S = 600.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_ENVELOPE = ("request_id", *SIGNATURE_FIELDS)
_GET_TIMEOUT_S = 0.5
# No verb nests deeper than 4; 32 leaves room for metadata while keeping ``json`` far from its
# recursion limit (a deeply nested payload otherwise ends in RecursionError, on paho's thread too).
MAX_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPEN = {ord("["), ord("{")}
_CLOSE = {ord("]"), ord("}")}


class Publisher(Protocol):
    """Where replies go (``MqttLink`` is one)."""

    def publish(
        self,
        topic: str,
        payload: dict[str, Any],
        retain: bool = False,
        qos: int | None = None,
        correlation_data: bytes | None = None,
    ) -> None: ...


AppliedHook = Callable[[str, BaseModel, dict[str, Any]], None]
"""``on_applied(verb, payload, result)`` after a verb succeeded (e.g. refresh discovery on delete)."""


@dataclass(frozen=True, slots=True)
class Request:
    verb: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


class ReplyCache:
    """Bounded LRU of recent replies by request_id, each kept at most ``ttl_s``. Not thread-safe."""

    def __init__(
        self, size: int = REPLY_CACHE_SIZE, ttl_s: float = REPLY_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._size = size
        self._ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, str, dict[str, Any]]] = OrderedDict()

    def get(self, request_id: str) -> tuple[str, dict[str, Any]] | None:
        """(verb, reply) of an answered request, or None."""
        entry = self._items.get(request_id)
        if entry is None:
            return None
        stored_at, verb, reply = entry
        if self._clock() - stored_at > self._ttl_s:
            del self._items[request_id]
            return None
        self._items.move_to_end(request_id)
        return verb, reply

    def put(self, request_id: str, verb: str, reply: dict[str, Any]) -> None:
        self._items[request_id] = (self._clock(), verb, reply)
        self._items.move_to_end(request_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def error_reply(
    request_id: str, verb: str, code: ErrorCode, message: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The reply document of a refused command; ``extra`` fields never override the envelope."""
    error = {"code": code, "message": message}
    reply: dict[str, Any] = {"ok": False, "request_id": request_id, "verb": verb, "error": error}
    reply.update((k, v) for k, v in (extra or {}).items() if k not in reply)
    return reply


def ok_reply(request_id: str, verb: str, result: dict[str, Any]) -> dict[str, Any]:
    """The reply document of a successful command; the envelope keys win over the result's."""
    reply: dict[str, Any] = {"ok": True, "request_id": request_id, "verb": verb}
    reply.update((k, v) for k, v in result.items() if k not in reply)
    return reply


def valid_response_topic(topic: str | None) -> TypeGuard[str]:
    """A topic we may publish a reply to (no wildcards, not empty, not ``$SYS``-like)."""
    if not topic:
        return False
    return "+" not in topic and "#" not in topic and "\0" not in topic and not topic.startswith("$")


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class CommandDispatcher:
    """Validates, applies and answers commands; ``submit`` is the link's ``on_command``."""

    def __init__(
        self,
        ctx: DeviceContext,
        publisher: Publisher,
        topics: Topics,
        security: SecurityConfig,
        stop: threading.Event,
        *,
        verifier: Verifier | None = None,
        on_applied: AppliedHook | None = None,
        queue_size: int = QUEUE_SIZE,
        reply_cache: ReplyCache | None = None,
    ) -> None:
        if security.require_signature and verifier is None:
            raise ValueError("security.require_signature needs a Verifier")
        self._ctx = ctx
        self._publisher = publisher
        self._topics = topics
        self._security = security
        self._stop = stop
        self._verifier = verifier
        self._on_applied = on_applied
        # None is a wake-up call from ``join`` (the worker then notices ``stop`` at once).
        self._queue: queue.Queue[Request | None] = queue.Queue(maxsize=queue_size)
        self._replies = reply_cache or ReplyCache()  # worker thread only
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name=f"mqtt-commands:{self._topics.device_id}")
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the worker after ``stop`` was set; commands still queued are answered 'shutting down'."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):  # full: the worker is busy and sees ``stop`` next
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            _LOGGER.warning("command worker still busy %gs after stop", timeout)
        self._thread = None

    def submit(self, verb: str, payload: bytes, properties: Properties | None = None) -> None:
        """Queue a command (paho's thread): refuse oversized ones and answer 'busy' when full."""
        response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
        correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
        request = Request(verb, payload, response_topic, correlation)
        if len(payload) > self._security.max_payload_bytes:
            message = f"payload is {len(payload)} bytes; the limit is {self._security.max_payload_bytes}"
            self._send(request, error_reply(_new_request_id(), verb, "too_large", message))
            return
        if self._stop.is_set():
            self._send(request, error_reply(_peek_request_id(payload), verb, "internal", "device is shutting down"))
            return
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            message = f"busy: {self._queue.qsize()} commands waiting; retry later"
            self._send(request, error_reply(_peek_request_id(payload), verb, "busy", message))

    def handle(self, request: Request) -> dict[str, Any]:
        """Validate and apply one command; returns its reply (never raises)."""
        request_id = _new_request_id()
        try:
            obj = _parse(request.payload)
            given_id = obj.get("request_id")
            if given_id is not None:
                if not isinstance(given_id, str) or not _REQUEST_ID.match(given_id):
                    raise CommandError("bad_request", "request_id must match [A-Za-z0-9_.:-]{1,128}")
                request_id = given_id
            # Only a client's own id can come back in a retry; generated ones are not remembered.
            return self._apply(request.verb, obj, request_id, remember=given_id is not None)
        except CommandError as exc:
            return error_reply(request_id, request.verb, exc.code, exc.message, exc.extra)
        except StorageError as exc:
            return error_reply(request_id, request.verb, "storage", str(exc))
        except Exception:
            _LOGGER.exception("command %s (request %s) failed", request.verb, request_id)
            return error_reply(request_id, request.verb, "internal", "internal error; see the device log")

    # --- worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=_GET_TIMEOUT_S)
            except queue.Empty:
                continue
            if request is not None:
                self._process(request)
        # Every command is answered, even the ones the shutdown overtook.
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is None:
                continue
            rid = _peek_request_id(request.payload)
            self._send(request, error_reply(rid, request.verb, "internal", "device is shutting down"))

    def _process(self, request: Request) -> None:
        started = time.monotonic()
        try:
            reply = self.handle(request)
            self._send(request, reply)
        except Exception:
            # Top of the worker: a failure to reply must not end the thread.
            _LOGGER.exception("answering command %s failed", request.verb)
            return
        outcome = "ok" if reply["ok"] else reply["error"]["code"]
        _LOGGER.info(
            "command %s (request %s): %s in %.0f ms",
            request.verb,
            reply["request_id"],
            outcome,
            (time.monotonic() - started) * 1000,
        )

    def _apply(self, verb: str, obj: dict[str, Any], request_id: str, remember: bool) -> dict[str, Any]:
        signed = any(field in obj for field in SIGNATURE_FIELDS)
        if self._security.require_signature or (signed and self._verifier is not None):
            assert self._verifier is not None
            try:
                self._verifier.verify(verb, obj)
            except ReplayError:
                # An exact retry of an answered command is correctly signed: give it its answer.
                cached = self._replies.get(request_id) if remember else None
                if cached is not None and cached[0] == verb:
                    return cached[1]
                raise
        spec = VERBS.get(verb)
        if spec is None:
            raise CommandError("bad_request", f"unknown verb {verb!r}; known: {', '.join(sorted(VERBS))}")
        try:
            payload = spec.model.model_validate({k: v for k, v in obj.items() if k not in _ENVELOPE})
        except ValidationError as exc:
            raise CommandError("bad_request", _validation_message(exc)) from exc
        if remember and (cached := self._replies.get(request_id)) is not None:
            if cached[0] != verb:
                raise CommandError("conflict", f"request_id {request_id!r} was already used for {cached[0]!r}")
            return cached[1]
        try:
            reply = ok_reply(request_id, verb, spec.handler(self._ctx, payload))
        except CommandError as exc:
            reply = error_reply(request_id, verb, exc.code, exc.message, exc.extra)
        except StorageError as exc:
            # Disk full / read-only: the caller can act on it (and nothing was half-written).
            reply = error_reply(request_id, verb, "storage", str(exc))
        if remember:
            self._replies.put(request_id, verb, reply)
        if reply["ok"] and self._on_applied is not None:
            try:
                self._on_applied(verb, payload, reply)
            except Exception:
                _LOGGER.exception("after-command hook for %s failed", verb)
        return reply

    def _send(self, request: Request, reply: dict[str, Any]) -> None:
        if valid_response_topic(request.response_topic):
            self._publisher.publish(request.response_topic, reply, correlation_data=request.correlation_data)
            return
        if request.response_topic is not None:
            _LOGGER.warning(
                "command %s: unusable response topic %r; replying on reply/<id>", request.verb, request.response_topic
            )
        self._publisher.publish(self._topics.reply(reply["request_id"]), reply)


def _new_request_id() -> str:
    return uuid.uuid4().hex


def nesting_depth(payload: bytes) -> int:
    """How deep ``[``/``{`` nest in a JSON text, outside strings; counted without parsing it."""
    structure = _STRING.sub(b"", payload)
    if not structure:
        return 0
    codes = np.frombuffer(structure, dtype=np.uint8)
    steps = np.isin(codes, list(_OPEN)).astype(np.int32) - np.isin(codes, list(_CLOSE)).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _parse(payload: bytes) -> dict[str, Any]:
    if not payload.strip():
        return {}
    depth = nesting_depth(payload)
    if depth > MAX_DEPTH:
        raise CommandError("bad_request", f"payload nests {depth} levels deep; the limit is {MAX_DEPTH}")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError("bad_request", f"payload is not valid JSON: {exc}") from exc
    except (RecursionError, ValueError) as exc:
        # Past the depth check only by a quirk of the input (e.g. an integer of 5000 digits).
        raise CommandError("bad_request", f"payload cannot be decoded: {exc}") from exc
    if not isinstance(obj, dict):
        raise CommandError("bad_request", f"payload must be a JSON object, got {type(obj).__name__}")
    return obj


def _peek_request_id(payload: bytes) -> str:
    """The request's own id when it is readable, for replies sent without processing it."""
    try:
        given = _parse(payload).get("request_id")
    except CommandError:
        return _new_request_id()
    return given if isinstance(given, str) and _REQUEST_ID.match(given) else _new_request_id()
