"""HMAC-SHA256 signatures on commands, so that only key holders can change the face database.

A signed command payload is the command's JSON object plus four fields:

* ``ts``     -- unix time in seconds (int or float) when it was signed
* ``nonce``  -- a random string of 16..128 characters, never reused within ``max_skew_s``
* ``key_id`` -- which shared secret signed it
* ``sig``    -- lowercase hex HMAC-SHA256, keyed with that secret, over
  ``<verb> "\\n" <canonical JSON of the payload without "sig">`` where canonical JSON is
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"))`` (``ensure_ascii`` left on, so the
  bytes are pure ASCII whatever the client's JSON library emits). The verb is part of the signed
  bytes, so a signed ``get`` cannot be replayed as ``delete``.

``ts`` must be a finite number (NaN or infinity never goes stale, so it is refused). The nonce window
(``nonces``) is kept in the device's state file by the daemon, so a captured command stays refused
after a restart or a config reload.

Keys come from a JSON file ``{key_id: secret}`` of mode 0600, or from the environment variable
``EDGEFACE_COMMAND_KEYS`` holding the same JSON. Secrets are used as their UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgeface.config_sources import read_secret_file
from edgeface.errors import CommandError, ConfigError
from edgeface.mqtt.nonces import MemoryNonces, NonceStore

KEYS_ENV = "EDGEFACE_COMMAND_KEYS"
SIGNATURE_FIELDS = ("ts", "nonce", "key_id", "sig")
MIN_NONCE_LEN = 16
MAX_NONCE_LEN = 128
# Enough for a burst of commands from several controllers within the default 5 minute skew.
DEFAULT_NONCE_CACHE = 10_000


class ReplayError(CommandError):
    """A correctly signed command whose nonce was already used: a replay or a client's retry."""

    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message)


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of ``payload`` (sorted keys, no spaces, ASCII)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("ascii")


def signature(verb: str, payload: Mapping[str, Any], secret: bytes) -> str:
    """Hex HMAC-SHA256 of ``verb`` and the canonical payload without ``sig``."""
    unsigned = {k: v for k, v in payload.items() if k != "sig"}
    return hmac.new(secret, verb.encode("utf-8") + b"\n" + canonical(unsigned), hashlib.sha256).hexdigest()


def sign(
    payload: Mapping[str, Any], verb: str, key_id: str, secret: bytes, *, ts: float | None = None
) -> dict[str, Any]:
    """A copy of ``payload`` with ``ts``, a fresh ``nonce``, ``key_id`` and ``sig`` added."""
    signed = dict(payload)
    signed.update(ts=int(time.time()) if ts is None else ts, nonce=secrets.token_hex(16), key_id=key_id)
    signed.pop("sig", None)
    signed["sig"] = signature(verb, signed, secret)
    return signed


def parse_keys(text: str, origin: str) -> dict[str, bytes]:
    """``{key_id: secret}`` JSON into key bytes; ConfigError naming ``origin`` when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"command keys {origin}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f'command keys {origin}: expected a non-empty object {{"key_id": "secret"}}')
    keys: dict[str, bytes] = {}
    for key_id, secret in data.items():
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError(f"command keys {origin}: secret of key {key_id!r} must be a string of >= 16 characters")
        keys[key_id] = secret.encode("utf-8")
    return keys


def load_keys(keys_file: Path | None) -> dict[str, bytes]:
    """Keys from ``keys_file`` (must be mode 0600), else from ``EDGEFACE_COMMAND_KEYS``; {} if neither."""
    if keys_file is not None:
        return parse_keys(read_secret_file(keys_file, "command keys"), str(keys_file))
    env = os.environ.get(KEYS_ENV)
    return parse_keys(env, f"${KEYS_ENV}") if env else {}


class Verifier:
    """Checks signed commands: known key, valid HMAC, fresh timestamp, unused nonce. Thread-safe."""

    def __init__(
        self,
        keys: Mapping[str, bytes],
        max_skew_s: float,
        nonce_cache_size: int = DEFAULT_NONCE_CACHE,
        clock: Callable[[], float] = time.time,
        nonces: NonceStore | None = None,
    ) -> None:
        """``clock`` returns unix seconds (tests give a controllable one); ``nonces`` is the window
        (default: in memory, holding ``nonce_cache_size``)."""
        self._clock = clock
        self._keys = dict(keys)
        self._max_skew_s = max_skew_s
        self._nonces = nonces if nonces is not None else MemoryNonces(nonce_cache_size)
        self._lock = threading.Lock()

    def verify(self, verb: str, payload: Mapping[str, Any]) -> None:
        """Raise CommandError("unauthorized", reason) unless ``payload`` is validly signed for ``verb``.

        A reused nonce raises ``ReplayError`` (a subclass), checked last: the caller may answer an
        exact retry of an already answered command with the stored reply.
        """
        sig, key_id, ts, nonce = (payload.get(f) for f in ("sig", "key_id", "ts", "nonce"))
        if sig is None and key_id is None:
            raise CommandError("unauthorized", "command is not signed (ts, nonce, key_id, sig required)")
        if not isinstance(sig, str) or not isinstance(key_id, str):
            raise CommandError("unauthorized", "sig and key_id must be strings")
        if not isinstance(nonce, str) or not MIN_NONCE_LEN <= len(nonce) <= MAX_NONCE_LEN:
            raise CommandError("unauthorized", f"nonce must be a string of {MIN_NONCE_LEN}..{MAX_NONCE_LEN} characters")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise CommandError("unauthorized", "ts must be a number (unix seconds)")
        if not math.isfinite(ts):
            # NaN compares false with everything, so it would never be stale.
            raise CommandError("unauthorized", f"ts must be a finite number, got {ts}")
        secret = self._keys.get(key_id)
        if secret is None:
            raise CommandError("unauthorized", f"unknown key_id {key_id!r}")
        expected = signature(verb, payload, secret)
        if not hmac.compare_digest(expected.encode("ascii"), sig.lower().encode("utf-8", "replace")):
            raise CommandError("unauthorized", "bad signature")
        now = self._clock()
        if abs(now - ts) > self._max_skew_s:
            when = "in the future" if ts > now else "stale"
            message = f"timestamp {when}: {ts - now:+.0f}s off, max skew {self._max_skew_s:g}s"
            raise CommandError("unauthorized", message)
        self._remember(key_id, nonce, now)

    def _remember(self, key_id: str, nonce: str, now: float) -> None:
        # Every entry lives 2 x max_skew_s from when it was seen, which outlasts the timestamp's own
        # validity (ts <= now + skew, so ts + skew <= now + 2 skew). A full window refuses rather
        # than evicting a live nonce, which would reopen it for replay (fail closed).
        with self._lock:
            if not self._nonces.remember(key_id, nonce, now + 2 * self._max_skew_s, now):
                raise ReplayError(f"nonce already used (key {key_id!r})")
