"""The outbox: messages waiting to be handed to the MQTT client, oldest first.

paho keeps its own queue of unsent messages, but it is unbounded: a device that is offline for a
weekend would grow it until the process is killed. The link therefore keeps this bounded outbox in
front of paho and hands paho only a few messages at a time.

``Outbox`` is a protocol so that the durable, on-disk implementation (``durable.DurableOutbox``,
which the daemon uses) can replace the in-memory one without touching the link. Its contract:

* ``put`` never blocks and never fails for lack of room: when full it drops the oldest message and
  counts the drop.
* ``take`` removes the oldest message; ``requeue`` puts a taken message back at the front (it could
  not be handed over, so it keeps its place); ``done`` reports a taken message as delivered (the
  broker acknowledged it) -- an in-memory outbox has nothing left to do, a durable one deletes it.
* Implementations need not be thread-safe: the link calls them under its own lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to publish; plain data so that a durable outbox can serialise it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    # MQTT v5 correlation data of a command reply (sent with the reply so the caller can match it).
    correlation_data: bytes | None = None
    # Set by the outbox that holds it: its key in a durable outbox, and when it was queued (unix s).
    seq: int | None = field(default=None, compare=False)
    queued_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What the outbox holds and what it did since it was created (the ``state`` document's ``outbox``)."""

    queued: int
    bytes: int
    delivered: int
    dropped: int
    oldest_age_s: float | None  # None when empty
    durable: bool
    spilled: int = 0  # messages a durable outbox had to hold in memory (the disk refused them)


class Outbox(Protocol):
    """Bounded FIFO of messages waiting for the broker (see the module docstring for the contract)."""

    @property
    def dropped(self) -> int:
        """Messages discarded because the outbox was full, since creation."""
        ...

    def put(self, message: OutMessage) -> None:
        """Append ``message``; drop the oldest one first when full."""
        ...

    def take(self) -> OutMessage | None:
        """Remove and return the oldest message, or None when empty."""
        ...

    def requeue(self, message: OutMessage) -> None:
        """Put a taken, unsent message back at the front."""
        ...

    def done(self, message: OutMessage) -> None:
        """A taken message was delivered."""
        ...

    def stats(self) -> OutboxStats:
        """Counters for the health document."""
        ...

    def __len__(self) -> int: ...


class MemoryOutbox:
    """The in-memory ``Outbox``: a bounded deque, lost on restart."""

    def __init__(self, maxlen: int, clock: Callable[[], float] = time.time) -> None:
        if maxlen < 1:
            raise ValueError(f"outbox size must be >= 1, got {maxlen}")
        self._items: deque[tuple[float, OutMessage]] = deque()  # (queued at, message)
        self._taken: dict[int, float] = {}  # id of a taken message -> when it was queued
        self._maxlen = maxlen
        self._dropped = 0
        self._delivered = 0
        self._clock = clock

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def maxlen(self) -> int:
        return self._maxlen

    def put(self, message: OutMessage) -> None:
        while len(self._items) >= self._maxlen:
            self._items.popleft()
            self._dropped += 1
        self._items.append((self._clock(), message))

    def take(self) -> OutMessage | None:
        if not self._items:
            return None
        queued_at, message = self._items.popleft()
        self._taken[id(message)] = queued_at
        return message

    def requeue(self, message: OutMessage) -> None:
        # It was accepted once, so it is kept even if that briefly exceeds the bound by the few
        # messages the link has in flight; the next ``put`` trims back to ``maxlen``, oldest first.
        self._items.appendleft((self._taken.pop(id(message), self._clock()), message))

    def done(self, message: OutMessage) -> None:
        self._taken.pop(id(message), None)
        self._delivered += 1

    def stats(self) -> OutboxStats:
        oldest = self._items[0][0] if self._items else None
        return OutboxStats(
            queued=len(self._items),
            bytes=sum(len(m.payload) for _, m in self._items),
            delivered=self._delivered,
            dropped=self._dropped,
            oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            durable=False,
        )

    def __len__(self) -> int:
        return len(self._items)
