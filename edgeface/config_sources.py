"""Where settings come from: the TOML file, ``EDGEFACE_`` environment overrides, secret files.

The environment source is ours rather than pydantic-settings': the one feature the daemon used
from it (``EDGEFACE_<SECTION>__<KEY>`` over the file) cost 9 MB of resident memory and 0.2 s of
start-up, since it imports asyncio, email, http, urllib, dotenv and importlib.metadata.

Rules: a variable ``EDGEFACE_A__B__C`` sets key ``a.b.c``;
names are case-insensitive; the environment beats the file; a partial section or sub-table is
merged into the file's, key by key; a value for a table or a list (``EDGEFACE_MQTT__TLS``,
``EDGEFACE_LIVENESS__PASSIVE_MODELS``) is JSON; so is a scalar that is only valid as JSON
(``EDGEFACE_MQTT__QOS=2`` for ``Literal[0, 1, 2]``, ``null`` to restore a ``None`` default). A variable
with ``__`` naming no key is an error that names it. A variable without ``__`` is an override only
when it names a whole section (``EDGEFACE_MQTT='{"host": "broker.lan"}'``); any other
(``EDGEFACE_COMMAND_KEYS``, ``EDGEFACE_SAMPLES_DIR``) belongs to someone else and is left alone.
"""

from __future__ import annotations

import json
import stat
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from edgeface.errors import ConfigError

ENV_PREFIX = "EDGEFACE_"
ENV_DELIMITER = "__"
_CONTAINERS = (tuple, list, dict, set, frozenset)

Key = tuple[str, ...]


@dataclass(frozen=True)
class EnvOverrides:
    """The environment's settings as nested plain values, and which variable set each key."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[Key, str] = field(default_factory=dict)

    def origin_of(self, loc: Key) -> str | None:
        """The variable that set ``loc`` or the table holding it (longest match), if any."""
        for end in range(len(loc), 0, -1):
            if (name := self.origins.get(loc[:end])) is not None:
                return name
        return None


def format_validation_error(exc: ValidationError, origin: str, env: EnvOverrides | None = None) -> str:
    """One line per problem: ``origin: key.path: message (got value)``; the origin of a key set by the
    environment is its variable."""
    lines = []
    for err in exc.errors():
        key = tuple(str(part) for part in err["loc"])
        loc = ".".join(key) or "<root>"
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        source = (env.origin_of(key) if env is not None else None) or origin
        lines.append(f"{source}: {loc}: {err['msg']}{shown}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file into a dict, with a ConfigError naming the file and line on failure."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror}") from exc


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret from a file that only its owner may read (mode 0600 or stricter)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{what} file {path} cannot be read: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} file {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return path.read_text(encoding="utf-8").strip()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top; tables present in both are merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def env_overrides(model: type[BaseModel], environ: Mapping[str, str]) -> EnvOverrides:
    """The ``EDGEFACE_`` variables that set keys of ``model``; a ConfigError lists every bad one."""
    wanted: list[tuple[Key, str, str]] = []
    for name, text in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))
        if len(key) == 1 and key[0] not in model.model_fields:
            continue  # not a settings variable (EDGEFACE_COMMAND_KEYS, EDGEFACE_SAMPLES_DIR, ...)
        wanted.append((key, name, text))
    # Shallow first, so that EDGEFACE_MQTT__TLS__INSECURE refines a JSON EDGEFACE_MQTT__TLS.
    wanted.sort(key=lambda item: (len(item[0]), item[1]))
    out = EnvOverrides()
    problems: list[str] = []
    for key, name, text in wanted:
        try:
            _assign(out.values, key, _env_value(model, key, name, text))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        out.origins[key] = name
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def _env_value(model: type[BaseModel], key: Key, name: str, text: str) -> Any:
    """The value of one variable, typed enough for the model to validate it (constraints come later)."""
    annotation: Any = model
    for depth, part in enumerate(key):
        section = _model_in(annotation)
        if section is None:
            raise ValueError(f"{'.'.join(key[:depth])} is not a table, so it has no key {part!r}")
        if part not in section.model_fields:
            known = ", ".join(section.model_fields)
            if depth == 0:
                raise ValueError(f"no settings section {part!r} (sections: {known})")
            raise ValueError(f"{'.'.join(key[:depth])} has no key {part!r} (keys: {known})")
        annotation = section.model_fields[part].annotation
    if _is_complex(annotation):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{'.'.join(key)} takes a JSON value here: {exc}") from exc
    return _scalar(annotation, text)


def _scalar(annotation: Any, text: str) -> Any:
    """``text`` as is when the field takes it (strings, numbers and booleans in their usual spelling),
    else its JSON value when that fits (``2`` for ``Literal[0, 1, 2]``, ``null`` for an optional field);
    failing both, the text, so that the model's error shows what was given."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        adapter.validate_python(text)
    except ValidationError:
        pass
    else:
        return text
    try:
        decoded = json.loads(text)
        adapter.validate_python(decoded)
    except (json.JSONDecodeError, ValidationError):
        return text
    return decoded


def _assign(tree: dict[str, Any], key: Key, value: Any) -> None:
    for part in key[:-1]:
        below = tree.get(part)
        if not isinstance(below, dict):
            below = tree[part] = {}  # a table given as JSON null, then refined key by key
        tree = below
    existing = tree.get(key[-1])
    tree[key[-1]] = deep_merge(existing, value) if isinstance(existing, dict) and isinstance(value, dict) else value


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for a in get_args(annotation) if a is not type(None))
    return (annotation,)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _is_complex(annotation: Any) -> bool:
    return any(
        _model_in(member) is not None or get_origin(member) in _CONTAINERS or member in _CONTAINERS
        for member in _members(annotation)
        if get_origin(member) is not Literal
    )
