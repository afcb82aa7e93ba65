"""HMAC command signatures: signing, every refusal reason, nonce memory and key loading."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from edgeface.errors import CommandError, ConfigError
from edgeface.mqtt.nonces import SqliteNonces
from edgeface.mqtt.signing import KEYS_ENV, ReplayError, Verifier, canonical, load_keys, sign, signature

SECRET = b"a-shared-secret-of-some-length"
KEYS = {"k1": SECRET}


class Clock:
    """A settable wall clock (a real clock of its own, not a patch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _reason(exc: pytest.ExceptionInfo[CommandError]) -> str:
    assert exc.value.code == "unauthorized"
    return exc.value.message


def test_signature_is_hmac_over_verb_and_canonical_json() -> None:
    signed = sign({"person_id": "p1", "request_id": "r"}, "get", "k1", SECRET, ts=1_700_000_000)
    assert set(signed) == {"person_id", "request_id", "ts", "nonce", "key_id", "sig"}
    assert len(signed["nonce"]) >= 16
    unsigned = {k: v for k, v in signed.items() if k != "sig"}
    body = json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()
    assert canonical(unsigned) == body
    assert signed["sig"] == hmac.new(SECRET, b"get\n" + body, hashlib.sha256).hexdigest()
    # Key order and whitespace of the client's JSON do not matter.
    reordered = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=2))
    Verifier(KEYS, 300, clock=Clock(1_700_000_000)).verify("get", reordered)


def test_valid_signature_passes_and_nonce_is_single_use() -> None:
    clock = Clock()
    verifier = Verifier(KEYS, 300, clock=clock)
    signed = sign({"x": 1}, "status", "k1", SECRET, ts=clock.now)
    verifier.verify("status", signed)
    with pytest.raises(ReplayError) as exc:
        verifier.verify("status", signed)
    assert "nonce already used" in _reason(exc)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: {k: v for k, v in p.items() if k not in ("sig", "key_id")}, "not signed"),
        (lambda p: p | {"key_id": "k9"}, "unknown key_id"),
        (lambda p: p | {"sig": "00" * 32}, "bad signature"),
        (lambda p: p | {"x": 2}, "bad signature"),
        (lambda p: p | {"sig": 5}, "must be strings"),
        (lambda p: p | {"nonce": "abc"}, "nonce must be"),
        (lambda p: p | {"ts": "now"}, "ts must be a number"),
        (lambda p: p | {"ts": True}, "ts must be a number"),
    ],
)
def test_refusals(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    payload = mutate(sign({"x": 1}, "status", "k1", SECRET, ts=clock.now))
    with pytest.raises(CommandError) as exc:
        Verifier(KEYS, 300, clock=clock).verify("status", payload)
    assert reason in _reason(exc)


def test_signature_is_bound_to_the_verb() -> None:
    clock = Clock()
    with pytest.raises(CommandError) as exc:
        Verifier(KEYS, 300, clock=clock).verify("delete", sign({"person_id": "p"}, "get", "k1", SECRET, ts=clock.now))
    assert "bad signature" in _reason(exc)


def test_stale_and_future_timestamps() -> None:
    clock = Clock()
    verifier = Verifier(KEYS, 60, clock=clock)
    verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now - 59))
    verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now + 59))
    with pytest.raises(CommandError) as exc:
        verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now - 61))
    assert "stale" in _reason(exc)
    with pytest.raises(CommandError) as exc:
        verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now + 61))
    assert "in the future" in _reason(exc)


def test_nonce_memory_expires_and_is_bounded() -> None:
    clock = Clock()
    verifier = Verifier(KEYS, 10, nonce_cache_size=2, clock=clock)
    first = sign({}, "status", "k1", SECRET, ts=clock.now)
    verifier.verify("status", first)
    verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now))
    with pytest.raises(CommandError) as exc:
        verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now))
    assert "retry later" in _reason(exc)  # full of live nonces: fail closed, never evict one
    clock.now += 21  # 2 x max_skew later every nonce has expired, and so has its timestamp
    with pytest.raises(CommandError) as exc:
        verifier.verify("status", first)
    assert "stale" in _reason(exc)
    verifier.verify("status", sign({}, "status", "k1", SECRET, ts=clock.now))


def test_same_nonce_under_another_key_is_not_a_replay() -> None:
    clock = Clock()
    verifier = Verifier({"k1": SECRET, "k2": b"another-secret-0123456789"}, 300, clock=clock)
    one = sign({}, "status", "k1", SECRET, ts=clock.now)
    two = {k: v for k, v in one.items() if k != "sig"} | {"key_id": "k2"}
    two["sig"] = signature("status", two, b"another-secret-0123456789")
    verifier.verify("status", one)
    verifier.verify("status", two)


def test_keys_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"door": "0123456789abcdef"}))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_keys(path)
    path.chmod(0o600)
    assert load_keys(path) == {"door": b"0123456789abcdef"}


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ("[]", "non-empty object"), ('{"k": "short"}', ">= 16 characters")],
)
def test_malformed_keys(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=message):
        load_keys(path)


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, json.dumps({"env-key": "0123456789abcdef0"}))
    assert load_keys(None) == {"env-key": b"0123456789abcdef0"}
    monkeypatch.delenv(KEYS_ENV)
    assert load_keys(None) == {}


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_timestamps_are_refused(ts: float) -> None:
    # NaN compares false with everything: it would never be stale.
    payload = sign({"x": 1}, "status", "k1", SECRET, ts=ts)
    with pytest.raises(CommandError) as exc:
        Verifier(KEYS, 300, clock=Clock()).verify("status", payload)
    assert "finite" in _reason(exc)


def test_persisted_window_refuses_a_replay_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state" / "mqtt.sqlite3"
    signed = sign({"x": 1}, "status", "k1", SECRET, ts=clock.now)
    first = SqliteNonces(path, 100)
    Verifier(KEYS, 300, clock=clock, nonces=first).verify("status", signed)
    first.close()  # the daemon stops (or reloads)
    again = SqliteNonces(path, 100)
    try:
        verifier = Verifier(KEYS, 300, clock=clock, nonces=again)
        with pytest.raises(ReplayError):
            verifier.verify("status", signed)
        verifier.verify("status", sign({"x": 1}, "status", "k1", SECRET, ts=clock.now))  # a fresh one passes
        # Expired entries are pruned: once the timestamp is stale the nonce is forgotten.
        clock.now += 601
        verifier.verify("status", sign({"x": 2}, "status", "k1", SECRET, ts=clock.now))
        assert again.live(clock.now) == 1
    finally:
        again.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_persisted_window_fails_closed_when_full(tmp_path: Path) -> None:
    clock = Clock()
    nonces = SqliteNonces(tmp_path / "mqtt.sqlite3", 2)
    try:
        verifier = Verifier(KEYS, 300, clock=clock, nonces=nonces)
        for n in range(2):
            verifier.verify("status", sign({"n": n}, "status", "k1", SECRET, ts=clock.now))
        with pytest.raises(CommandError) as exc:
            verifier.verify("status", sign({"n": 3}, "status", "k1", SECRET, ts=clock.now))
        assert "too many signed commands" in _reason(exc)
    finally:
        nonces.close()
