"""``edgeface config check FILE`` and ``edgeface config show [FILE]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeface.config import load_settings
from edgeface.errors import ConfigError


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="validate or show the configuration")
    verbs = parser.add_subparsers(dest="config_verb", required=True, metavar="ACTION")
    check = verbs.add_parser("check", help="validate a TOML file (and EDGEFACE_ env overrides); exit 2 on errors")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check)
    show = verbs.add_parser("show", help="print the effective settings as JSON (secrets masked)")
    show.add_argument("file", type=Path, nargs="?")
    show.set_defaults(handler=_show)


def _check(args: argparse.Namespace) -> int:
    try:
        load_settings(args.file)
    except ConfigError as exc:
        print(str(exc))
        return exc.exit_code
    print(f"{args.file}: ok")
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0
