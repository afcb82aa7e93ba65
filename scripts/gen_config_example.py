"""Write config/edgeface.example.toml from the Settings model, so every key is documented once.

Run after changing edgeface/config.py: ``python scripts/gen_config_example.py``.
tests/test_config.py fails when the example and the model disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgeface.config import DEFAULT_MODELS_DIR, DEFAULT_STATE_DIR, Settings

OUT = Path(__file__).resolve().parent.parent / "config" / "edgeface.example.toml"
HEADER = """\
# edgeface configuration. Every key is optional: the values shown are the defaults.
# Environment variables override this file: EDGEFACE_<SECTION>__<KEY>, e.g. EDGEFACE_MQTT__HOST=broker.lan
# Validate with: edgeface config check /etc/edgeface/edgeface.toml
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        if value == DEFAULT_STATE_DIR:
            return '"~/.local/share/edgeface"  # $STATE_DIRECTORY under systemd'
        if value == DEFAULT_MODELS_DIR:
            return '"<install dir>/models"'
        return json.dumps(str(value))
    if isinstance(value, str | tuple | list):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return repr(value)


def render() -> str:
    lines = [HEADER]
    for section, field in Settings.model_fields.items():
        model = field.default
        assert isinstance(model, BaseModel)
        lines.append(f"[{section}]")
        for name, sub in type(model).model_fields.items():
            value = getattr(model, name)
            lines.append(f"# {sub.description}")
            if value is None or isinstance(value, BaseModel):
                lines.append(f"# {name} =")
            else:
                prefix = "# " if isinstance(value, Path) else ""
                lines.append(f"{prefix}{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
