"""Command-line overrides of nested attrs configs: ``key.path=value``, checked before compute.

``python -m recipes.NAME [--variant V] [key.path=value ...]``: each key must name a field of
the config (a close match is suggested otherwise), each value is parsed by the field's type
(``int``, ``float``, ``bool``, ``str``, tuples, ``X | None``, ``Literal[...]``) and the
config's own validators run on the result, so a bad value fails naming the field and the
allowed form.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Callable, Literal, Mapping, Sequence

import attrs

__all__ = ["ConfigError", "apply_overrides", "flat_fields", "to_dict", "parse_cli"]


class ConfigError(ValueError):
    """A bad override: unknown key, unparsable or invalid value."""


def flat_fields(cfg: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{"a.b": (type, value)}`` for every leaf field of a nested attrs config."""
    out = {}
    hints = typing.get_type_hints(type(cfg))
    for f in attrs.fields(type(cfg)):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if attrs.has(type(value)):
            out.update(flat_fields(value, key + "."))
        else:
            out[key] = (hints.get(f.name, f.type), value)
    return out


def to_dict(cfg: Any) -> dict:
    """A JSON-ready dict of a nested attrs config."""
    return attrs.asdict(cfg, value_serializer=lambda inst, field, v: list(v) if isinstance(v, tuple) else v)


def _parse(text: str, kind: Any, key: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(text, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: cannot read {text!r} as {kind}")
    if origin is Literal:
        for option in args:
            if str(option) == text:
                return option
        raise ConfigError(f"{key} must be one of {list(args)}, got {text!r}")
    if origin is tuple:
        items = [t for t in text.strip("()[]").split(",") if t.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(t.strip(), args[0], key) for t in items)
        if len(items) != len(args):
            raise ConfigError(f"{key} needs {len(args)} comma-separated values, got {text!r}")
        return tuple(_parse(t.strip(), a, key) for t, a in zip(items, args))
    if kind is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{key} must be an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {text!r}") from None
    if kind is str or kind is Any:
        return text
    raise ConfigError(f"{key}: values of type {kind} cannot be set from the command line")


def _set(cfg: Any, path: list[str], value: Any) -> Any:
    head, *rest = path
    if not rest:
        return attrs.evolve(cfg, **{head: value})
    return attrs.evolve(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def apply_overrides(cfg: Any, overrides: Sequence[str] | Mapping[str, Any]) -> Any:
    """Return ``cfg`` with ``key.path=value`` overrides applied and validated.

    Raises:
        ConfigError: unknown key (with a suggestion), unparsable value, or a value the
            config's validators reject (their message names the field).
    """
    fields = flat_fields(cfg)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    for key, raw in items:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        kind, _ = fields[key]
        value = _parse(raw, kind, key) if isinstance(raw, str) else raw
        try:
            cfg = _set(cfg, key.split("."), value)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{key}={raw!r} rejected: {err}") from None
    return cfg


def _split(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"overrides look like key.path=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def parse_cli(argv: Sequence[str], variants: Mapping[str, Any], prog: str, doc: str,
              help_extra: Callable[[Any], str] | None = None) -> tuple[str, Any]:
    """``[--variant V] [key=value ...]`` -> (variant name, config); ``--help`` lists both
    (and what ``help_extra(config)`` adds).

    Raises:
        SystemExit: after printing help, or with status 2 and the reason for a bad command.
    """
    import sys

    args = list(argv)
    default = next(iter(variants))
    if "-h" in args or "--help" in args:
        print(f"usage: python -m {prog} [--variant V] [key.path=value ...]\n\n{doc.strip()}\n")
        print("variants: " + ", ".join(variants) + f" (default {default})\n")
        print("keys (defaults of the chosen variant):")
        chosen = variants[_variant_from(args, variants, default)]
        try:  # the defaults as this command line changes them
            chosen = apply_overrides(chosen, _overrides([a for a in args if a not in ("-h", "--help")]))
        except ConfigError:
            pass
        for key, (kind, value) in flat_fields(chosen).items():
            print(f"  {key} = {value!r}")
        if help_extra is not None:
            print("\n" + help_extra(chosen))
        raise SystemExit(0)
    try:
        name = _variant_from(args, variants, default)
        return name, apply_overrides(variants[name], _overrides(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _overrides(args: list[str]) -> list[str]:
    """``key=value``, ``--key=value`` and ``--key value`` (dashes read as underscores)."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--variant":
            i += 2
            continue
        if a.startswith("--variant="):
            i += 1
            continue
        if a.startswith("--"):
            if "=" in a:
                key, value = a[2:].split("=", 1)
            elif i + 1 < len(args):
                key, value = a[2:], args[i + 1]
                i += 1
            else:
                raise ConfigError(f"{a} needs a value")
            out.append(f"{key.replace('-', '_')}={value}")
        else:
            out.append(a)
        i += 1
    return out


def _variant_from(args: list[str], variants: Mapping[str, Any], default: str) -> str:
    name = default
    for i, a in enumerate(args):
        if a == "--variant":
            if i + 1 >= len(args):
                raise ConfigError("--variant needs a name")
            name = args[i + 1]
        elif a.startswith("--variant="):
            name = a.split("=", 1)[1]
    if name not in variants:
        close = difflib.get_close_matches(name, variants, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown variant {name!r}{hint}; variants: {', '.join(variants)}")
    return name
