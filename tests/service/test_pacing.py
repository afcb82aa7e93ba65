"""The pacer keeps a stream of requests to its share of wall-clock time."""

from __future__ import annotations

import pytest

from edgeface.service.pacing import MAX_PACE_S, Pacer


class _Clock:
    """A manual monotonic clock whose ``sleep`` advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_next_turn_waits_for_the_idle_share() -> None:
    clock = _Clock()
    pacer = Pacer(0.5, monotonic=clock, sleep=clock.sleep)
    with pacer.turn() as waited:
        assert waited == 0.0
        clock.now += 0.2  # busy 200 ms
    clock.now += 0.3  # the next request comes 300 ms later: past its turn (200 ms of idle)
    with pacer.turn() as waited:
        assert waited == 0.0
        clock.now += 0.4
    clock.now += 0.1  # due 400 ms after the end, asked after 100 ms: waits the other 300 ms
    with pacer.turn() as waited:
        assert waited == pytest.approx(0.3)
    assert clock.slept == [pytest.approx(0.3)]


def test_full_share_never_waits_and_a_wait_is_bounded() -> None:
    clock = _Clock()
    free = Pacer(1.0, monotonic=clock, sleep=clock.sleep)
    with free.turn():
        clock.now += 5.0
    with free.turn() as waited:
        assert waited == 0.0
    slow = Pacer(0.05, monotonic=clock, sleep=clock.sleep)
    with slow.turn():
        clock.now += 10.0  # 190 s of idle time at a 5 % share
    with slow.turn() as waited:
        assert waited == MAX_PACE_S
    with pytest.raises(ValueError, match="share"):
        Pacer(0.0)
