"""Settings from one YAML file per service, overridable by environment variables, validated at start-up.

Settings are frozen dataclasses. The loader walks the dataclass fields, takes each value from the
environment (``{PREFIX}_{SECTION}__{KEY}``), else from the YAML file, else the field default, and checks it
against the field's type hint. The first problem raises :class:`ConfigError`, which names the key, the file
and what was expected, so start-up can stop with one line instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")
REDACTED = "********"
URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")  # user:password@ in a URL that is not a secret field


class ConfigError(Exception):
    """A configuration value that cannot be used; ``str()`` is the one line shown to the operator."""

    def __init__(self, key: str, source: str, expected: str, got: object = None) -> None:
        self.key, self.source, self.expected, self.got = key, source, expected, got
        got_text = "" if got is None else ", got " + URL_PASSWORD.sub(rf"\1{REDACTED}@", repr(got))
        super().__init__(f"config error in {source}: {key}: expected {expected}{got_text}")


def secret(default: str = "") -> Any:
    """A field that may only come from the environment (or a file named by ``{VAR}_FILE``)."""
    return dataclasses.field(default=default, repr=False, metadata={"secret": True})


def checked(default: Any, check: Callable[[Any], str | None], **kwargs: Any) -> Any:
    """A field with an extra check; ``check(value)`` returns what was expected, or None when fine."""
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"check": check})
    return dataclasses.field(default=default, metadata={"check": check}, **kwargs)


def env_name(prefix: str, path: tuple[str, ...]) -> str:
    """``("database", "url")`` with prefix ``TICKETS`` -> ``TICKETS_DATABASE__URL``."""
    return f"{prefix}_" + "__".join(part.upper() for part in path)


def load_settings(
    cls: type[T], path: str | Path | None, env_prefix: str, environ: Mapping[str, str] | None = None
) -> T:
    """Build ``cls`` from the YAML file at ``path`` (optional) and the environment."""
    environ = os.environ if environ is None else environ
    source = str(path) if path else "<defaults>"
    data: Any = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError("(file)", source, "an existing YAML file") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark else "(file)"
            raise ConfigError(where, source, "valid YAML") from None
    return _build(cls, data, (), _Context(source, env_prefix, environ))


@dataclasses.dataclass
class _Context:
    source: str
    prefix: str
    environ: Mapping[str, str]


def _build(cls: type[T], data: Any, path: tuple[str, ...], ctx: _Context, base: Any = None) -> T:
    """``base``: the instance a section's ``default_factory`` gives (a service's own defaults, e.g. its port)."""
    dotted = ".".join(path) or "(top level)"
    if not isinstance(data, dict):
        raise ConfigError(dotted, ctx.source, "a mapping", data)
    hints = typing.get_type_hints(cls)
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(".".join((*path, str(unknown[0]))), ctx.source, f"one of {sorted(known)}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        field_path = (*path, field.name)
        key = ".".join(field_path)
        hint = hints[field.name]
        variable = env_name(ctx.prefix, field_path)
        if field.metadata.get("secret"):
            if field.name in data:
                raise ConfigError(key, ctx.source, f"no secret in the file; set {variable} instead")
            value = _secret_from_env(variable, ctx.environ, field.default)
            if value is not None:
                values[field.name] = value
            continue
        if dataclasses.is_dataclass(hint):
            section_base = None if field.default_factory is dataclasses.MISSING else field.default_factory()
            values[field.name] = _build(hint, data.get(field.name, {}), field_path, ctx, section_base)  # type: ignore[arg-type]
            continue
        if _is_named_sections(hint) and field.name in data:
            # named entries (probes, queries): each entry is a section, so {PREFIX}_{FIELD}__{NAME}__{KEY}
            # overrides one key of an entry the file defines
            entries = data[field.name]
            if not isinstance(entries, dict):
                raise ConfigError(key, ctx.source, "a mapping of named sections", entries)
            section = typing.get_args(hint)[1]
            values[field.name] = {
                str(name): _build(section, entry, (*field_path, str(name)), ctx) for name, entry in entries.items()
            }
            continue
        if variable in ctx.environ:
            raw, where = _parse_env(ctx.environ[variable], hint), f"environment variable {variable}"
        elif field.name in data:
            raw, where = data[field.name], ctx.source
        else:
            continue
        value = _coerce(raw, hint, key, where)
        check = field.metadata.get("check")
        if check is not None and (expected := check(value)):
            raise ConfigError(key, where, expected, raw)
        values[field.name] = value
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _secret_from_env(variable: str, environ: Mapping[str, str], default: Any) -> str | None:
    if variable in environ:
        return environ[variable]
    file_variable = f"{variable}_FILE"
    if file_variable in environ:
        try:
            return Path(environ[file_variable]).read_text(encoding="utf-8").strip()
        except OSError:
            raise ConfigError(variable, f"environment variable {file_variable}", "a readable file") from None
    return None if default is dataclasses.MISSING else default


def _parse_env(text: str, hint: Any) -> Any:
    """Environment values are strings; anything but a plain string is read as a YAML scalar or list."""
    if hint is str or _is_optional_of(hint, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _is_named_sections(hint: Any) -> bool:
    """``dict[str, SomeSettings]``: a mapping of named sections."""
    return typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1])


def _is_optional_of(hint: Any, inner: type) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType) and inner in typing.get_args(hint)


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner[0], key, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, where, "one of " + ", ".join(map(str, args)), value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, where, "a list", value)
        return [_coerce(item, args[0], f"{key}[{i}]", where) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, where, "a mapping", value)
        return {str(k): _coerce(v, args[1], f"{key}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, tuple(key.split(".")), _Context(where, "", {}))  # type: ignore[arg-type]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, where, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, where, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, where, "a number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, where, "a string", value)
        return value
    return value


def describe_environment(
    cls: type, env_prefix: str, settings: object | None = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, str]]:
    """Yield (variable, current value) for every setting; secrets masked."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        value = getattr(settings, field.name) if settings is not None else field.default
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from describe_environment(hint, env_prefix, value, (*path, field.name))  # type: ignore[arg-type]
            continue
        if _is_named_sections(hint) and isinstance(value, dict):
            for name, entry in value.items():
                yield from describe_environment(type(entry), env_prefix, entry, (*path, field.name, str(name)))
            continue
        shown = REDACTED if field.metadata.get("secret") and value else value
        if shown is dataclasses.MISSING:
            shown = "(required)"
        yield env_name(env_prefix, (*path, field.name)), URL_PASSWORD.sub(rf"\1{REDACTED}@", str(shown))


# Checks shared by several services' settings.
def port_check(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "a TCP port between 1 and 65535"


def positive(value: float) -> str | None:
    return None if value > 0 else "a number greater than 0"


def ratio(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else "a ratio between 0 and 1"


def url_check(*schemes: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not value:
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        return None if scheme in schemes else "a URL starting with " + " or ".join(f"{s}://" for s in schemes)

    return check
