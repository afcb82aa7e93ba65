"""What a device remembers about replication between runs, beside its database.

The database holds persons; this file holds what replication needs on top of them:

* ``origins``    -- which device made each person's current version (the tie-break of merge.py);
* ``removed``    -- sample ids deleted from each person, so a merge never brings one back;
* ``tombstones`` -- deletions still inside the horizon, so an older record cannot resurrect a person;
* ``known``      -- the person ids present at the last save: one missing from the database at the next
  start was deleted while the daemon was not running (``edgeface db delete``), and gets a tombstone.

One JSON file written atomically (``<state_dir>/fleet-<fleet_id>.json``); a damaged one is set aside
and replication starts from the database alone (the broker's records fill the rest in).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeface.errors import DatabaseError
from edgeface.fleet.records import MAX_REMOVED, Tombstone
from edgeface.matching.atomic import write_bytes_atomic

_LOGGER = logging.getLogger(__name__)
STATE_VERSION = 1


@dataclass
class FleetState:
    """Mutable, owned by the replicator thread alone."""

    path: Path
    origins: dict[str, str] = field(default_factory=dict)
    removed: dict[str, set[str]] = field(default_factory=dict)
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    known: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> FleetState:
        """The saved state, or an empty one when there is none (or it is unreadable)."""
        state = cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("v") != STATE_VERSION:
                raise ValueError(f"state version {raw.get('v')!r}")
            state.origins = {str(k): str(v) for k, v in raw["origins"].items()}
            state.removed = {str(k): {str(s) for s in v} for k, v in raw["removed"].items()}
            state.tombstones = {
                str(k): Tombstone(str(k), str(t["deleted"]), str(t["origin"])) for k, t in raw["tombstones"].items()
            }
            state.known = {str(k) for k in raw["known"]}
        except FileNotFoundError:
            return state
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            _LOGGER.warning("fleet state %s is unreadable (%s); moved to %s, starting afresh", path, exc, aside.name)
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            return cls(path)
        return state

    def save(self) -> None:
        body: dict[str, Any] = {
            "v": STATE_VERSION,
            "origins": self.origins,
            "removed": {k: sorted(v)[-MAX_REMOVED:] for k, v in self.removed.items() if v},
            "tombstones": {k: t.to_json() for k, t in self.tombstones.items()},
            "known": sorted(self.known),
        }
        try:
            write_bytes_atomic(self.path, json.dumps(body, separators=(",", ":")).encode())
        except OSError as exc:
            raise DatabaseError(f"fleet state {self.path}: cannot save: {exc}") from exc

    def forget(self, person_id: str) -> None:
        """A person is gone for good (its tombstone expired)."""
        self.origins.pop(person_id, None)
        self.removed.pop(person_id, None)
        self.tombstones.pop(person_id, None)
        self.known.discard(person_id)
