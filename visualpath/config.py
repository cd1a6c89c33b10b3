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

from visualpath.errors import Refused, one_line

__all__ = ["ConfigError", "apply_overrides", "flat_fields", "flatten", "to_dict", "parse_cli", "help_text", "field_notes",
           "attribute_docs"]


class ConfigError(Refused):
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
    """A command line's ``text`` as the field's ``kind`` (:func:`visualpath.spec.convert`, the one
    converter of config and graph keys)."""
    from visualpath.spec import SpecError, convert

    try:
        return convert(text, kind, key, text=True)
    except SpecError as err:
        raise ConfigError(str(err)) from None


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
    moved = getattr(type(cfg), "MOVED_KEYS", {})  # a key that became another's: say where it went
    for key, raw in items:
        if key in moved:
            raise ConfigError(f"{key} is set by the graph's own key now: {moved[key]}")
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
              help_extra: Callable[[Any], str] | None = None, options: Sequence[tuple[str, str]] = (),
              variant_notes: Mapping[str, str] | None = None) -> tuple[str, Any]:
    """``[--variant V] [key=value ...]`` -> (variant name, config); ``--help`` lists the
    variants (with ``variant_notes``), the options (with the command's own ``options``, as
    ``(option, what it does)``), every key with its type and description, and what
    ``help_extra(config)`` adds.

    Raises:
        SystemExit: after printing help, or with status 2 and the reason for a bad command.
    """
    import sys

    args = list(argv)
    default = next(iter(variants))
    wants_help = "-h" in args or "--help" in args
    printing = "--print-config" in args
    args = [a for a in args if a not in ("-h", "--help", "--print-config")]
    try:
        name = _variant_from(args, variants, default)
        args, saved = _config_file(args)
        base = apply_overrides(variants[name], saved) if saved else variants[name]
        overrides = _overrides(args)
        _check_options(args, base)
        cfg = apply_overrides(base, overrides)
    except ConfigError as err:
        if not wants_help:
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        cfg = variants[_variant_from([], variants, default)]
    if wants_help:
        print(help_text(prog, doc, variants, cfg, help_extra, options, variant_notes))
        raise SystemExit(0)
    if printing:
        import json

        print(json.dumps(to_dict(cfg), indent=2))
        raise SystemExit(0)
    return name, cfg


def help_text(prog: str, doc: str, variants: Mapping[str, Any], cfg: Any,
              help_extra: Callable[[Any], str] | None = None, options: Sequence[tuple[str, str]] = (),
              variant_notes: Mapping[str, str] | None = None) -> str:
    """What ``--help`` prints (see :func:`parse_cli`)."""
    default = next(iter(variants))
    lines = [f"usage: python -m {prog} [--variant V] [options] [key.path=value ...]", "", doc.strip(), "",
             f"variants (--variant V; default {default}):"]
    notes = variant_notes or {}
    width = max(len(v) for v in variants)
    lines += [f"  {v:<{width}}  {notes.get(v, '')}".rstrip() for v in variants]
    every = [("--variant V", "start from variant V (above)"),
             ("--config FILE", "start from a saved run's config.json, or a JSON/YAML mapping of keys"),
             ("--print-config", "print the resolved configuration and stop"),
             *options,
             ("--KEY VALUE, --KEY=VALUE", "the same as KEY=VALUE for any key below (dashes read as underscores)"),
             ("-h, --help", "this help")]
    width = max(len(o) for o, _ in every)
    lines += ["", "options:"] + [f"  {o:<{width}}  {what}" for o, what in every]
    lines += ["", "keys (KEY=VALUE; type = value as this command line makes it; what it is):"]
    field_help = field_notes(cfg)
    for key, (kind, value) in flat_fields(cfg).items():
        note = field_help.get(key, "")
        lines.append(f"  {key}: {type_name(kind)} = {value!r}" + (f"  # {note}" if note else ""))
    if help_extra is not None:
        lines += ["", help_extra(cfg)]
    return "\n".join(lines)


def _config_file(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``--config FILE`` out of ``args``: the file's settings as ``{key.path: value}``. A run's
    ``config.json`` (``{"config": {...}}``) or any JSON or YAML mapping of (nested) keys."""
    rest, settings, i = [], {}, 0
    while i < len(args):
        a = args[i]
        if a == "--config" or a.startswith("--config="):
            if a == "--config":
                if i + 1 >= len(args):
                    raise ConfigError("--config needs a file")
                path, i = args[i + 1], i + 2
            else:
                path, i = a.split("=", 1)[1], i + 1
            settings.update({k: tuple(v) if isinstance(v, list) else v for k, v in flatten(_read_settings(path)).items()})
            continue
        rest.append(a)
        i += 1
    return rest, settings


def _read_settings(path: str) -> dict:
    import json
    from pathlib import Path

    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = file.read_text()
    if file.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"--config {path}: reading YAML needs the pyyaml package") from None
        try:
            data = yaml.safe_load(text)  # plain data only: a !!python tag is refused, never constructed
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ConfigError(f"--config {path}: not plain YAML data{at} "
                              f"({getattr(err, 'problem', None) or type(err).__name__})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--config {path}: not valid JSON ({err})") from None
        except RecursionError:
            raise ConfigError(f"--config {path}: nested too deeply to be settings") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]  # a run directory's config.json
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of keys")
    return data


def flatten(data: Mapping, prefix: str = "", skip: Sequence[str] = ()) -> dict[str, Any]:
    """``{"a.b": leaf}`` of nested mappings (the top level's ``skip`` keys left out)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if k in skip:
            continue
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_options(args: list[str], cfg: Any) -> None:
    """A ``--flag`` that names no key is an unknown option (with the closest one)."""
    known = flat_fields(cfg)
    for a in args:
        if a.startswith("--") and a != "--variant" and not a.startswith("--variant="):
            key = a[2:].split("=", 1)[0].replace("-", "_")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                raise ConfigError(f"unknown option {a.split('=', 1)[0]}{hint}")


def type_name(kind: Any) -> str:
    """A readable name of a field's annotation (``int``, ``str | None``, ``one of [...]``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return "one of " + str(list(args))
    if origin is tuple:
        return f"tuple[{', '.join(type_name(a) for a in args if a is not Ellipsis)}{', ...' if Ellipsis in args else ''}]"
    if kind is type(None):
        return "None"
    return getattr(kind, "__name__", str(kind))


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: "what it is"}`` for a class's fields, in one line each: the entries of the
    ``Attributes:`` (or ``Args:``) section of its docstring and its bases' (Google style, read by
    ``docstring_parser``); a subclass's word wins over its bases'."""
    import docstring_parser

    out: dict[str, str] = {}
    for klass in reversed(getattr(cls, "__mro__", (cls,))):
        doc = klass.__dict__.get("__doc__")
        if klass is object or not doc:
            continue
        parsed = docstring_parser.parse(doc, style=docstring_parser.DocstringStyle.GOOGLE)
        out.update({p.arg_name: " ".join((p.description or "").split()).rstrip(".").replace("``", "")
                    for p in parsed.params if p.description})
    return out


def field_notes(cfg: Any, prefix: str = "") -> dict[str, str]:
    """``{"a.b": "what it is"}`` for every leaf field of a nested attrs config
    (:func:`attribute_docs`), with the allowed values of fields whose validator names them."""
    out: dict[str, str] = {}
    cls = type(cfg)
    docs = attribute_docs(cls)
    for f in attrs.fields(cls):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if attrs.has(type(value)):
            out.update(field_notes(value, key + "."))
            continue
        parts = []
        options = getattr(f.validator, "options", None)
        if options is not None:
            parts.append(f"one of {list(options)}")
        if f.name in docs:
            parts.append(docs[f.name])
        if parts:
            out[key] = "; ".join(parts)
    return out


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
