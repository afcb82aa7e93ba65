"""Home Assistant controls: the ``confirm_name`` text and the confirm / ignore / reload buttons.

Home Assistant publishes a text value or a button press to ``ha/<control>``; each press becomes an
ordinary command (``confirm``, ``ignore``, ``reload``) handed to the ``CommandDispatcher`` -- the
same validation, idempotency and handlers as any MQTT client gets -- with ``control_result`` as
its response topic, which the *Last control result* sensor shows.

"The last unknown" is the newest ``unknown_id`` the device published; a confirm or ignore uses it
once (a second press without a new stranger answers ``not_found``).

With ``security.require_signature`` the controls exist only when ``mqtt.controls_key_id`` names a
configured key: the device then signs what Home Assistant asked for with that key, so the broker's
ACL on ``ha/#`` is what guards them. Without a key they are neither announced nor subscribed.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeface.config import MqttConfig, SecurityConfig
from edgeface.errors import ConfigError, ErrorCode
from edgeface.mqtt.commands import error_reply
from edgeface.mqtt.link import MessageCallback
from edgeface.mqtt.signing import sign
from edgeface.mqtt.topics import Topics

_LOGGER = logging.getLogger(__name__)

CONFIRM_NAME = "confirm_name"
BUTTONS = ("confirm", "ignore", "reload")
MAX_NAME_CHARS = 128


class Submitter(Protocol):
    """``CommandDispatcher.submit``."""

    def submit(self, verb: str, payload: bytes, properties: Properties | None = None) -> None: ...


class ControlLink(Protocol):
    def publish(
        self, topic: str, payload: dict[str, Any] | str, retain: bool = False, qos: int | None = None
    ) -> None: ...

    def subscribe(self, topic_filter: str, on_message: MessageCallback) -> None: ...


def controls_key(mqtt: MqttConfig, keys: Mapping[str, bytes]) -> tuple[str, bytes] | None:
    """The key that signs control commands; None when none is needed. ConfigError for an unknown key id."""
    key_id = mqtt.controls_key_id
    if key_id is None:
        return None
    if key_id not in keys:
        raise ConfigError(f"mqtt.controls_key_id {key_id!r} is not one of the command keys ({', '.join(sorted(keys))})")
    return key_id, keys[key_id]


def controls_enabled(mqtt: MqttConfig, security: SecurityConfig) -> bool:
    """Whether the device offers the controls: discovery on, controls on, and a key when signatures are required."""
    if not (mqtt.discovery and mqtt.controls):
        return False
    return not security.require_signature or mqtt.controls_key_id is not None


class HaControls:
    """Turns Home Assistant text values and button presses into commands."""

    def __init__(
        self, link: ControlLink, topics: Topics, dispatcher: Submitter, key: tuple[str, bytes] | None = None
    ) -> None:
        self._link = link
        self._topics = topics
        self._dispatcher = dispatcher
        self._key = key
        self._lock = threading.Lock()
        self._name: str | None = None  # guarded by _lock
        self._unknown_id: str | None = None  # guarded by _lock
        self._properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._properties.ResponseTopic = topics.control_result

    def attach(self) -> None:
        """Subscribe to the control topics (before the link connects)."""
        self._link.subscribe(self._topics.control_filter, self._on_control)

    def unknown_seen(self, unknown_id: str) -> None:
        """The device published this unknown: it is now "the last unknown"."""
        with self._lock:
            self._unknown_id = unknown_id

    def _on_control(self, topic: str, payload: bytes, retained: bool) -> None:
        control = self._topics.control_of(topic)
        if control is None:
            return
        if retained:
            # A retained press would fire again at every reconnect.
            _LOGGER.warning("ignoring retained Home Assistant control on %s", topic)
            return
        if control == CONFIRM_NAME:
            name = payload.decode("utf-8", "replace").strip()
            with self._lock:
                self._name = name[:MAX_NAME_CHARS] or None
            return
        if control == "reload":
            self._submit("reload", {})
        elif control in ("confirm", "ignore"):
            self._unknown_command(control)
        else:
            _LOGGER.debug("unknown Home Assistant control %s", control)

    def _unknown_command(self, verb: str) -> None:
        with self._lock:
            unknown_id, name = self._unknown_id, self._name
            if unknown_id is not None and (verb == "ignore" or name is not None):
                self._unknown_id = None  # used once: the spool forgets it on success
        if unknown_id is None:
            self._refuse(verb, "not_found", "no unknown face seen since the device started (or it was already used)")
        elif verb == "ignore":
            self._submit("ignore", {"unknown_id": unknown_id})
        elif name is None:
            self._refuse(verb, "bad_request", "type a name into 'Name for the last unknown' first")
        else:
            self._submit("confirm", {"unknown_id": unknown_id, "name": name})

    def _submit(self, verb: str, fields: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"request_id": _request_id(), **fields}
        if self._key is not None:
            key_id, secret = self._key
            payload = sign(payload, verb, key_id, secret)
        _LOGGER.info("Home Assistant control: %s %s", verb, fields)
        self._dispatcher.submit(verb, json.dumps(payload).encode("utf-8"), self._properties)

    def _refuse(self, verb: str, code: ErrorCode, message: str) -> None:
        _LOGGER.warning("Home Assistant control %s refused: %s", verb, message)
        self._link.publish(self._topics.control_result, error_reply(_request_id(), verb, code, message))


def _request_id() -> str:
    return f"ha-{uuid.uuid4().hex[:16]}"
