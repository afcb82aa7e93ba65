"""Who is present, and which recognitions are held back by their cooldown.

Pure bookkeeping on the frame clock (``now``), used by the decide stage only: presence turns on when
a person is recognised live and off ``timeout_s`` after the last sighting of a track that named them;
a cooldown key (a person, an unknown id, a grant) is published at most once per ``cooldown_s``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PresenceChange:
    person_id: str
    name: str
    on: bool


class Presence:
    """Persons currently present, with when they were last seen."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._present: dict[str, tuple[str, float]] = {}  # person id -> (name, last seen)

    def seen(self, person_id: str, name: str, now: float) -> tuple[PresenceChange, ...]:
        """Refresh the person; the change when they were not present yet."""
        new = person_id not in self._present
        self._present[person_id] = (name, now)
        return (PresenceChange(person_id, name, True),) if new else ()

    def refresh(self, person_id: str, name: str, now: float) -> None:
        """A track that named the person was seen again: they stay present (no change is reported)."""
        self._present[person_id] = (name, now)

    def expire(self, now: float) -> list[PresenceChange]:
        gone = [pid for pid, (_, seen) in self._present.items() if now - seen > self.timeout_s]
        changes = [PresenceChange(pid, self._present[pid][0], False) for pid in gone]
        for pid in gone:
            del self._present[pid]
        return changes

    def clear(self) -> list[PresenceChange]:
        """Everyone leaves (the source ended)."""
        changes = [PresenceChange(pid, name, False) for pid, (name, _) in self._present.items()]
        self._present.clear()
        return changes

    def present(self) -> dict[str, str]:
        return {pid: name for pid, (name, _) in self._present.items()}


class Cooldown:
    """``cooling(key, now)``: True while ``key`` was published less than ``cooldown_s`` ago."""

    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._published: dict[tuple[object, ...], float] = {}

    def cooling(self, key: tuple[object, ...], now: float) -> bool:
        """Whether ``key`` is held back; when it is not, it is marked published at ``now``."""
        last = self._published.get(key)
        if last is not None and now - last < self.cooldown_s:
            return True
        self._published[key] = now
        return False
