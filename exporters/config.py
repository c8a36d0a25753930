"""Reading an exporter's YAML: environment overrides and typed fields with one-line errors.

The exporters' configs hold lists of named entries (probes, queries) besides flat sections, so they read
YAML into plain dicts here and build their own dataclasses with `field_of()`, which names the key and the
file in every error. An environment variable `{PREFIX}_{A}__{B}__{C}` overrides key `a.b.c`, so a probe's
target or the database URL (which can hold a password) can come from the environment only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    bool: "true or false",
}


class ConfigError(Exception):
    """A bad config value: which key, in which file, and what was expected, as one line."""

    def __init__(self, key: str, file: str, expected: str) -> None:
        super().__init__(f"{file}: {key}: {expected}")
        self.key = key
        self.file = file
        self.expected = expected


def load_yaml_with_env(
    path: str | Path, env_prefix: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The YAML mapping in `path`; a variable `{env_prefix}_A__B` overrides key a.b (parsed as YAML)."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError("(file)", file, f"cannot read: {error.strerror}") from error
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(where, file, "valid YAML") from error
    if not isinstance(data, dict):
        raise ConfigError("(top level)", file, "a mapping")
    prefix = env_prefix.upper() + "_"
    for name, raw in sorted((environ if environ is not None else os.environ).items()):
        if not name.startswith(prefix):
            continue
        keys = [part.lower() for part in name[len(prefix) :].split("__")]
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw else raw
    return data


def field_of(
    section: Mapping[str, Any], key: str, kind: type[T], file: str, where: str, default: Any = ...
) -> T:
    """section[key] checked against `kind` (ints accepted for floats); ConfigError naming `where.key`."""
    name = f"{where}.{key}" if where else key
    if key not in section or section[key] is None:
        if default is ...:
            raise ConfigError(name, file, f"required: {TYPE_NAMES.get(kind, kind.__name__)}")
        return default
    value = section[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(name, file, f"{TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
    return value


def section_of(data: Mapping[str, Any], key: str, file: str, where: str = "") -> dict[str, Any]:
    """A nested mapping (empty when absent); ConfigError when it is something else."""
    return field_of(data, key, dict, file, where, default={})
