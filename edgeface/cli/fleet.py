"""``edgeface fleet status``: ask a running device how its fleet replication stands."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from edgeface.cli.cmd import EXIT_OK, EXIT_REFUSED, add_connection_arguments, exchange


def register(sub: Any) -> None:
    parser = sub.add_parser("fleet", help="fleet replication of enrollments", description="Fleet replication.")
    actions = parser.add_subparsers(dest="fleet_action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="persons in sync, pending, refused and the last applied record of a running device",
        description="Send the fleet_status command to a running device and print its replication state.",
    )
    status.add_argument("--json", action="store_true", help="print the reply as JSON")
    add_connection_arguments(status)
    status.set_defaults(handler=_status)


_ROWS = (
    ("fleet", "fleet_id"),
    ("connected", "connected"),
    ("caught up", "synced"),
    ("persons", "persons"),
    ("in sync", "in_sync"),
    ("pending", "pending"),
    ("published", "published"),
    ("applied", "applied"),
    ("deleted", "deleted"),
    ("tombstones", "tombstones"),
    ("refused", "refused"),
    ("invalid", "invalid"),
    ("other model", "other_model"),
    ("too large", "too_large"),
    ("failed", "failed"),
)


def _status(args: argparse.Namespace) -> int:
    reply = exchange(args, "fleet_status", {"request_id": uuid.uuid4().hex}, "edgeface fleet status")
    if isinstance(reply, int):
        return reply
    if args.json or reply.get("ok") is not True:
        print(json.dumps(reply, indent=2, ensure_ascii=False))
        return EXIT_OK if reply.get("ok") is True else EXIT_REFUSED
    fleet = reply["fleet"]
    if not fleet.get("enabled"):
        print("fleet replication is off on this device (fleet.enabled = false)")
        return EXIT_OK
    for label, key in _ROWS:
        print(f"{label:<12} {fleet.get(key)}")
    last = fleet.get("last_applied")
    shown = "-" if last is None else f"{last['change']} of {last['person_id']} from {last['origin']} at {last['at']}"
    print(f"{'last applied':<12} {shown}")
    return EXIT_OK
