"""DurableOutbox on a real SQLite file: order, restarts, latest-value retained topics, bounds, counters."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgeface.mqtt.durable import DurableOutbox
from edgeface.mqtt.outbox import OutMessage


class Clock:
    """A settable wall clock (a real clock of its own, not a patch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _outbox(path: Path, clock: Clock | None = None, **bounds: float) -> DurableOutbox:
    limits = {"max_messages": 100, "max_bytes": 1_000_000, "max_age_s": 3600.0, **bounds}
    return DurableOutbox(
        path,
        max_messages=int(limits["max_messages"]),
        max_bytes=int(limits["max_bytes"]),
        max_age_s=limits["max_age_s"],
        clock=clock or Clock(),
    )


def _event(n: int, size: int = 10) -> OutMessage:
    return OutMessage("edgeface/door/recognition", f"{n:0{size}d}".encode(), 1)


def _drain(outbox: DurableOutbox) -> list[OutMessage]:
    taken = []
    while (message := outbox.take()) is not None:
        taken.append(message)
        outbox.done(message)
    return taken


def test_order_requeue_and_done(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "o.sqlite3")
    try:
        for n in range(3):
            outbox.put(_event(n))
        first = outbox.take()
        assert first is not None and first.payload == _event(0).payload
        assert len(outbox) == 2  # the taken one is in flight, not waiting
        outbox.requeue(first)  # could not be handed over: it keeps its place
        assert [m.payload for m in _drain(outbox)] == [_event(n).payload for n in range(3)]
        stats = outbox.stats()
        assert (stats.queued, stats.delivered, stats.dropped, stats.oldest_age_s) == (0, 3, 0, None)
        assert stats.durable
    finally:
        outbox.close()


def test_waiting_and_in_flight_messages_survive_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    clock = Clock()
    outbox = _outbox(path, clock)
    for n in range(5):
        outbox.put(_event(n))
    in_flight = outbox.take()
    assert in_flight is not None
    # No done(): the process dies with the message handed to paho but never acknowledged.
    outbox._conn.close()  # a crash: nothing flushed, nothing closed
    clock.now += 30
    reopened = _outbox(path, clock)
    try:
        assert reopened.stats().oldest_age_s == 30.0
        assert [m.payload for m in _drain(reopened)] == [_event(n).payload for n in range(5)]
    finally:
        reopened.close()
    again = _outbox(path, clock)
    try:
        assert again.take() is None  # acknowledged ones are gone for good
        assert again.stats().delivered == 5
    finally:
        again.close()


def test_retained_topics_are_latest_value_and_never_push_events_out(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "o.sqlite3", max_messages=2)
    try:
        outbox.put(_event(0))
        for n in range(50):  # a long outage of periodic state documents
            outbox.put(OutMessage("edgeface/door/state", f"state {n}".encode(), 1, retain=True))
            outbox.put(OutMessage("edgeface/door/presence/p1", b"on" if n % 2 else b"off", 1, retain=True))
        outbox.put(_event(1))
        taken = _drain(outbox)
        assert [(m.topic.rsplit("/", 1)[-1], m.payload) for m in taken] == [
            ("recognition", _event(0).payload),
            ("state", b"state 49"),
            ("p1", b"on"),
            ("recognition", _event(1).payload),
        ]
        assert outbox.dropped == 0
    finally:
        outbox.close()


def test_an_in_flight_retained_value_is_not_replaced(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "o.sqlite3")
    try:
        outbox.put(OutMessage("edgeface/door/state", b"v1", 1, retain=True))
        v1 = outbox.take()
        outbox.put(OutMessage("edgeface/door/state", b"v2", 1, retain=True))
        outbox.put(OutMessage("edgeface/door/state", b"v3", 1, retain=True))
        assert v1 is not None
        outbox.done(v1)
        assert [m.payload for m in _drain(outbox)] == [b"v3"]
    finally:
        outbox.close()


def test_bounds_drop_the_oldest_events_and_count_them_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    clock = Clock()
    outbox = _outbox(path, clock, max_messages=3, max_bytes=45, max_age_s=60.0)
    for n in range(5):
        outbox.put(_event(n))  # count bound: 0 and 1 go
    assert outbox.dropped == 2
    outbox.put(_event(5, size=20))  # 10 + 10 + 20 fit in 45 bytes only without event 2
    assert outbox.dropped == 3
    outbox.close()
    clock.now += 61  # everything waiting is now older than the age bound
    reopened = _outbox(path, clock, max_messages=3, max_bytes=45, max_age_s=60.0)
    try:
        assert reopened.dropped == 3  # persisted
        assert reopened.take() is None
        assert reopened.dropped == 6
        stats = reopened.stats()
        assert (stats.queued, stats.bytes) == (0, 0)
    finally:
        reopened.close()


def test_acknowledgements_are_committed_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = _outbox(path)
    try:
        for n in range(25):
            outbox.put(_event(n))
        taken = [outbox.take() for _ in range(12)]
        for message in taken[:11]:
            assert message is not None
            outbox.done(message)
        with sqlite3.connect(path) as reader:
            # 10 deleted in one batch; the 11th waits for the batch (one is still in flight).
            assert reader.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 15
    finally:
        outbox.close()  # commits the pending acknowledgement
    with sqlite3.connect(path) as reader:
        assert reader.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 14


def test_an_unreadable_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    outbox = _outbox(path)
    try:
        outbox.put(_event(1))
        assert [m.payload for m in _drain(outbox)] == [_event(1).payload]
    finally:
        outbox.close()
    assert len(list(tmp_path.glob("o.sqlite3.corrupt-*"))) == 1
    assert "unreadable" in caplog.text


def test_an_acknowledged_message_is_never_handed_out_again_before_its_batch_commits(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "o.sqlite3", max_messages=3)
    try:
        for n in range(3):
            outbox.put(_event(n))
        first, second = outbox.take(), outbox.take()
        assert first is not None and second is not None
        outbox.done(first)  # acknowledged; its delete waits for the batch (the second is in flight)
        third = outbox.take()
        assert third is not None and third.payload == _event(2).payload
        assert outbox.take() is None  # not the acknowledged first one again
        outbox.put(_event(3))  # the count bound drops no acknowledged or in-flight row
        assert outbox.dropped == 0
        outbox.done(second)
        outbox.done(third)
        assert [m.payload for m in _drain(outbox)] == [_event(3).payload]
    finally:
        outbox.close()
