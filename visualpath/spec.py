"""A pathway graph as plain data: JSON in, JSON out, overrides by name.

A run is defined by its graph, so the graph must survive a trip through a file. This module
turns a :class:`~visualpath.Pathway` into a JSON-safe dict and back::

    spec = pathway.to_dict()            # {"format": ..., "encoder": {...}, "streams": [...], "share": ...}
    assert Pathway.from_dict(spec) == pathway

An area is stored with its class (``"type"``) and every attrs field, its decoder included.
The class is found again by a registered name (every :class:`~visualpath.Area` subclass
registers its class name when it is defined) or by an import path: ``"package.module:Class"``
for an importable module, ``"path/to/file.py:Class"`` for a plain file. Written specs always
use the import path, so a stored graph loads without anything imported first (decisions G1,
G2 and G4 in docs/decisions.md). Importing a path outside the installed packages is the
reader's decision (:mod:`visualpath.trust`), and a run's stored graph carries its own copy of
such code (:mod:`visualpath.usercode`, format 2 of the spec; decisions T1 and T2).

:func:`apply_overrides` edits a graph by name, as the command line does
(``dorsal.MT.normalize=false``, ``V1.wavelengths=4,8``, ``ventral.mask.ratio=0.6``), and
every error names the field it is about.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from visualpath.errors import SpecError
from visualpath.trust import trusting

__all__ = [
    "SpecError",
    "FORMAT",
    "register_area",
    "area_class",
    "class_ref",
    "import_object",
    "pathway_to_dict",
    "pathway_from_dict",
    "apply_overrides",
    "override_keys",
]

FORMAT = "visualpath.pathway/1"
CODE_FORMAT = "visualpath.pathway/2"  # a spec that carries its code (``"code"``, :mod:`visualpath.usercode`)
MASKS = ("RandomMask", "TubeMask")

_AREAS: dict[str, type] = {}
_AMBIGUOUS: dict[str, set[str]] = {}


# --------------------------------------------------------------------------- finding classes


def register_area(cls: type, name: str | None = None) -> type:
    """Make ``cls`` findable by ``name`` (default: its class name) in a spec's ``"type"``.

    Every :class:`~visualpath.Area` subclass is registered under its class name when it is
    defined; two different classes with one name make the name ambiguous (a spec must then
    use the import path). Usable as a decorator.
    """
    key = name or cls.__name__
    known = _AREAS.get(key)
    where = f"{cls.__module__}:{cls.__qualname__}"
    if known is not None and f"{known.__module__}:{known.__qualname__}" != where:
        _AMBIGUOUS.setdefault(key, {f"{known.__module__}:{known.__qualname__}"}).add(where)
    _AREAS[key] = cls
    return cls


def area_class(ref: str, where: str = "type", code=None) -> type:
    """The area class a spec's ``"type"`` names: a registered name or an import path (found
    in the run's ``code`` first, see :func:`import_object`). The class is checked to be an
    :class:`~visualpath.Area` before anything is made of it."""
    from visualpath.area import Area

    if ":" in ref:
        cls = import_object(ref, where, code, from_data=True)
    elif ref in _AMBIGUOUS:
        raise SpecError(f"{where}: the area name {ref!r} is defined by several classes "
                        f"({', '.join(sorted(_AMBIGUOUS[ref]))}); use the import path")
    elif ref in _AREAS:
        cls = _AREAS[ref]
    else:
        close = difflib.get_close_matches(ref, _AREAS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{where}: unknown area {ref!r}{hint}. Registered areas: {', '.join(sorted(_AREAS))}; "
                        "an area of your own is named by its import path, 'package.module:Class' or "
                        "'path/to/file.py:Class'")
    if not (isinstance(cls, type) and issubclass(cls, Area)):
        raise SpecError(f"{where}: {ref!r} is not an Area subclass")
    return cls


def class_ref(cls: type) -> str:
    """The import path of a class: ``"module:Qualname"``, or ``"/abs/file.py:Qualname"``
    for a class defined in a file loaded by path (or in the ``__main__`` script)."""
    if "<locals>" in cls.__qualname__:
        raise SpecError(f"{cls.__qualname__} is defined inside a function: a stored graph can only name classes "
                        "defined at the top level of a module or file")
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__visualpath_file__", None)
    if file is None and cls.__module__ == "__main__" and getattr(module, "__file__", None):
        file = str(Path(module.__file__).resolve())  # a script: named by its path, found again in __main__
    return f"{file or cls.__module__}:{cls.__qualname__}"


def import_object(ref: str, where: str = "reference", code=None, from_data: bool = False) -> Any:
    """The object ``"package.module:name"`` or ``"path/to/file.py:name"`` names.

    Args:
        from_data: the reference was read from data (a spec, a run, a config file), not
            written by the caller: code outside the installed packages is then imported only
            under the trust rule of :mod:`visualpath.trust`. A caller naming a reference in
            Python has chosen it.
        code: a run's carried code (:class:`visualpath.usercode.Carried`); a reference it
            holds is loaded from the run's own copy.

    Raises:
        SpecError: naming ``where`` and what could not be found.
        CodeNotTrusted: the code is not installed and the reader has not trusted it.
    """
    from visualpath import usercode

    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise SpecError(f"{where}: expected 'package.module:name' or 'path/to/file.py:name', got {ref!r}")
    if code is not None and module_part in code:
        module = code.load(module_part, where)
    else:
        with contextlib.nullcontext() if from_data else trusting(named=[module_part]):
            module = usercode.module_of(module_part, where)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{where}: {module_part} has no {attr!r}{hint}")
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------- to and from dicts


def _plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value)) if f.init}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def pathway_to_dict(pathway) -> dict:
    """The JSON-safe description of ``pathway`` (see the module docstring)."""
    streams = []
    for s in pathway.streams:
        streams.append({
            "name": s.name,
            "modality": s.modality,
            "mask": {"type": type(s.mask).__name__, "ratio": s.mask.ratio},
            "weight": s.weight,
            "pos_embed": s.pos_embed,
            "frame_step": s.frame_step,
            "feedback": [_plain(link) for link in s.feedback],
            "areas": [{"type": class_ref(type(a)), **_plain(a)} for a in s.areas],
        })
    return {"format": FORMAT, "encoder": _plain(pathway.encoder), "streams": streams, "share": _plain(pathway.share)}


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to the declared ones
        return {f.name: f.type for f in attrs.fields(cls)}


def _convert(value: Any, kind: Any, where: str) -> Any:
    """``value`` from JSON as the annotated ``kind`` (attrs classes, tuples, optionals, numbers)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except SpecError as err:
                errors.append(str(err))
        raise SpecError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is none of {kind}")
    if origin is typing.Literal:
        if value not in args:
            raise SpecError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise SpecError(f"{where} must hold {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args \
            else tuple(value)
    if isinstance(kind, type) and attrs.has(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise SpecError(f"{where} must be a mapping of {kind.__name__} fields, got {value!r}")
        return _build(kind, value, where)
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, got {value!r}")
        return value
    return value  # Any, or a type we do not check: the class's own validators decide


def _build(cls: type, fields: Mapping[str, Any], where: str, skip: Sequence[str] = ()):
    """``cls(**fields)`` with each field converted by its annotation; unknown and missing
    fields, type errors and the class's own validation errors name the field."""
    declared = {f.name: f for f in attrs.fields(cls) if f.init}
    hints = _hints(cls)
    unknown = [k for k in fields if k not in declared and k not in skip]
    if unknown:
        close = difflib.get_close_matches(unknown[0], declared, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; its fields: {', '.join(declared)}"
        raise SpecError(f"{where}: unknown field {unknown[0]!r} of {cls.__name__}{hint}")
    missing = [n for n, f in declared.items() if f.default is attrs.NOTHING and n not in fields]
    if missing:
        raise SpecError(f"{where}: missing field {missing[0]!r} of {cls.__name__}")
    kwargs = {k: _convert(v, hints.get(k, Any), f"{where}.{k}") for k, v in fields.items() if k in declared}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise SpecError(f"{where}: {err}") from None


def _stream_from_dict(d: Any, i: int, code=None):
    from visualpath.masking import RandomMask, TubeMask
    from visualpath.pathway import Stream

    where = f"streams[{i}]"
    if not isinstance(d, Mapping):
        raise SpecError(f"{where} must be a mapping, got {d!r}")
    known = ("name", "modality", "areas", "mask", "weight", "pos_embed", "frame_step", "feedback")
    unknown = [k for k in d if k not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise SpecError(f"{where}: unknown field {unknown[0]!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    for key in ("name", "modality", "areas"):
        if key not in d:
            raise SpecError(f"{where}: missing field {key!r}")
    where = f"streams[{i}] ({d['name']})"
    if not isinstance(d["areas"], Sequence) or isinstance(d["areas"], str):
        raise SpecError(f"{where}.areas must be a list, got {d['areas']!r}")
    areas = []
    for j, a in enumerate(d["areas"]):
        w = f"{where}.areas[{j}]"
        if not isinstance(a, Mapping) or "type" not in a:
            raise SpecError(f"{w}: missing field 'type' (a registered area name or 'module:Class')")
        if "name" in a:
            w = f"{where}.areas[{j}] ({a['name']})"
        areas.append(_build(area_class(a["type"], f"{w}.type", code), a, w, skip=("type",)))
    mask = None
    if d.get("mask") is not None:
        m = d["mask"]
        if not isinstance(m, Mapping) or m.get("type") not in MASKS:
            raise SpecError(f"{where}.mask must be {{'type': 'RandomMask' or 'TubeMask', 'ratio': r}}, got {m!r}")
        mask = _build({"RandomMask": RandomMask, "TubeMask": TubeMask}[m["type"]],
                      {k: v for k, v in m.items() if k != "type"}, f"{where}.mask")
    kwargs = {k: d[k] for k in ("weight", "pos_embed", "frame_step") if k in d}
    if d.get("feedback"):
        from visualpath.pathway import Feedback

        if not isinstance(d["feedback"], Sequence) or isinstance(d["feedback"], str):
            raise SpecError(f"{where}.feedback must be a list of {{'source': A, 'target': B}}, got {d['feedback']!r}")
        kwargs["feedback"] = tuple(_build(Feedback, f, f"{where}.feedback[{j}]") if isinstance(f, Mapping) else f
                                   for j, f in enumerate(d["feedback"]))
    try:
        return Stream(d["name"], d["modality"], areas, mask=mask, **kwargs)
    except (ValueError, TypeError) as err:
        raise SpecError(f"{where}: {err}") from None


def _share_from(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, Sequence):
        raise SpecError(f"share must be 'none', 'partial', 'all' or a list of area names, got {value!r}")
    return tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in value)


def pathway_from_dict(spec: Mapping[str, Any], root: str | Path | None = None, where: str = "spec"):
    """The :class:`~visualpath.Pathway` a spec describes.

    Args:
        root: the run directory of a spec that carries its code (format 2: a ``"code"`` list
            of files in ``root/code/``); its areas are loaded from those copies, under the
            trust rule of :mod:`visualpath.trust`.
        where: what to call the spec in messages (its file).

    Raises:
        SpecError: an unknown format, area or field, a missing field or a wrong type,
            naming where in the spec it is.
        CodeNotTrusted: the spec needs code the reader has not trusted.
    """
    from visualpath.pathway import Pathway
    from visualpath.vit import ViTSpec

    if not isinstance(spec, Mapping):
        raise SpecError(f"a pathway spec is a mapping, got {type(spec).__name__}")
    fmt = spec.get("format", FORMAT)
    if fmt not in (FORMAT, CODE_FORMAT):
        raise SpecError(f"format: this version reads {FORMAT!r} and {CODE_FORMAT!r}, got {fmt!r}")
    for key in ("encoder", "streams"):
        if key not in spec:
            raise SpecError(f"missing field {key!r} (a spec holds 'encoder', 'streams' and 'share')")
    known = ("format", "encoder", "streams", "share") + (("code",) if fmt == CODE_FORMAT else ())
    unknown = [k for k in spec if k not in known]
    if unknown:
        raise SpecError(f"unknown field {unknown[0]!r} (a {fmt} spec holds {', '.join(map(repr, known[1:]))})")
    code = None
    if spec.get("code"):
        from visualpath.usercode import Carried

        if root is None:
            raise SpecError(f"{where} carries its code (code/ beside it): read it with its run directory "
                            "(visualpath.rundir.read_pathway)")
        code = Carried(root, spec["code"], where)
    encoder = _build(ViTSpec, spec["encoder"], "encoder") if isinstance(spec["encoder"], Mapping) else None
    if encoder is None:
        raise SpecError(f"encoder must be a mapping of ViTSpec fields, got {spec['encoder']!r}")
    if not isinstance(spec["streams"], Sequence) or isinstance(spec["streams"], str):
        raise SpecError(f"streams must be a list, got {spec['streams']!r}")
    streams = [_stream_from_dict(d, i, code) for i, d in enumerate(spec["streams"])]
    try:
        return Pathway(encoder=encoder, streams=streams, share=_share_from(spec.get("share", "none")))
    except (ValueError, TypeError) as err:
        raise SpecError(str(err)) from None


# --------------------------------------------------------------------------- overrides by name


def _stream_fields() -> dict[str, Any]:
    return {"weight": float, "pos_embed": str | None, "frame_step": int}


def override_keys(pathway) -> dict[str, Any]:
    """Every key :func:`apply_overrides` accepts, with its current value.

    ``encoder.F``; ``share``; ``S.F`` for a stream ``S`` (``weight``, ``pos_embed``,
    ``frame_step``, ``mask.ratio``, ``feedback`` as ``MT>V1,...``); ``S.A.F`` for area ``A`` of stream ``S``
    (``decoder.F`` for its decoder); and ``A.F``, which sets the field in every stream that
    has area ``A`` (shared areas stay identical that way).
    """
    spec = pathway_to_dict(pathway)
    keys: dict[str, Any] = {f"encoder.{k}": v for k, v in spec["encoder"].items()}
    keys["share"] = spec["share"]
    seen: dict[str, dict] = {}
    for s in spec["streams"]:
        for f in _stream_fields():
            keys[f"{s['name']}.{f}"] = s[f]
        keys[f"{s['name']}.mask.ratio"] = s["mask"]["ratio"]
        keys[f"{s['name']}.feedback"] = ",".join(f"{f['source']}>{f['target']}" for f in s["feedback"]) or "none"
        for a in s["areas"]:
            for k, v in _leaves(a, ("type", "name")):
                keys[f"{s['name']}.{a['name']}.{k}"] = v
                seen.setdefault(a["name"], {})[k] = v
    for area, fields in seen.items():
        for k, v in fields.items():
            keys.setdefault(f"{area}.{k}", v)
    return keys


def override_notes(pathway) -> dict[str, tuple[str, str]]:
    """``{key: (type, what it is)}`` for every key of :func:`override_keys`: types from the
    classes' fields, words from their docstrings and field comments
    (:func:`visualpath.config.attribute_docs`), allowed values where a validator names them.
    A user's area is described as its class documents its fields."""
    from visualpath.config import attribute_docs
    from visualpath.area import DecoderSpec
    from visualpath.pathway import Stream
    from visualpath.vit import ViTSpec

    def described(cls) -> dict[str, tuple[str, str]]:
        docs = attribute_docs(cls)
        out = {}
        for f in attrs.fields(cls):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            note = docs.get(f.name, "")
            options = getattr(f.validator, "options", None)
            if options is not None:
                note = f"one of {list(options)}" + (f"; {note}" if note else "")
            out[f.name] = (str(kind), note)
        return out

    encoder, stream, decoder = described(ViTSpec), described(Stream), described(DecoderSpec)
    streams = {s.name: s for s in pathway.streams}
    areas = {a.name: a for s in pathway.streams for a in s.areas}
    notes: dict[str, tuple[str, str]] = {}
    for key in override_keys(pathway):
        head, *rest = key.split(".")
        if head == "encoder":
            notes[key] = encoder.get(rest[0], ("", ""))
        elif key == "share":
            notes[key] = ("str", "which stages are one set of weights across streams: none, partial (every area "
                                 "name in two or more streams), all (stage i of every stream), or area names "
                                 "joined by commas")
        elif head in streams and rest == ["mask", "ratio"]:
            notes[key] = ("float", "fraction of tokens masked (at random in an image stream, as tubes in a video one)")
        elif head in streams and rest == ["feedback"]:
            notes[key] = ("str", "top-down links as SOURCE>TARGET,... (e.g. MT>V1), or none")
        elif head in streams and len(rest) == 1:
            notes[key] = stream.get(rest[0], ("", ""))
        else:
            area, field = (streams[head].area(rest[0]), rest[1:]) if head in streams else (areas[head], rest)
            if field[0] == "decoder" and len(field) == 2:
                notes[key] = decoder.get(field[1], ("", ""))
            else:
                notes[key] = described(type(area)).get(field[0], ("", ""))
    return notes


def _leaves(d: Mapping, skip: Sequence[str] = (), prefix: str = ""):
    for k, v in d.items():
        if k in skip:
            continue
        if isinstance(v, Mapping):
            yield from _leaves(v, (), f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _parse_text(text: str, kind: Any, key: str) -> Any:
    from visualpath.config import ConfigError, _parse

    try:
        return _parse(text, kind, key)
    except ConfigError as err:
        raise SpecError(str(err)) from None


def _area_field_kind(area_dict: Mapping, path: list[str], key: str) -> Any:
    cls = area_class(area_dict["type"], key)
    for i, part in enumerate(path):
        hints = _hints(cls)
        names = [f.name for f in attrs.fields(cls) if f.init and f.name != "type"]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; its fields: {', '.join(names)}"
            raise SpecError(f"unknown graph key {key!r}: {cls.__name__} has no field {part!r}{hint}")
        kind = hints.get(part, Any)
        if i < len(path) - 1:
            if not (isinstance(kind, type) and attrs.has(kind)):
                raise SpecError(f"unknown graph key {key!r}: {part!r} has no fields")
            cls = kind
    return kind


def _set_path(d: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        d = d[part]
    d[path[-1]] = value


def apply_overrides(pathway, overrides: Sequence[str] | Mapping[str, Any]):
    """``pathway`` with ``key=value`` edits applied (keys as :func:`override_keys` lists).

    Values given as text are parsed by the field's annotation (``4,8`` for a tuple,
    ``false``, ``none``); the result is rebuilt from its spec, so every class validates
    again.

    Raises:
        SpecError: an unknown key (with the closest known one) or a value the field rejects.
    """
    from visualpath.vit import ViTSpec

    spec = pathway_to_dict(pathway)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    streams = {s["name"]: s for s in spec["streams"]}
    for key, raw in items:
        parts = key.split(".")
        text = isinstance(raw, str)
        if parts[0] == "encoder" and len(parts) == 2:
            kind = _hints(ViTSpec).get(parts[1])
            if kind is None:
                _unknown(key, pathway)
            spec["encoder"][parts[1]] = _parse_text(raw, kind, key) if text else raw
        elif key == "share":
            spec["share"] = [n.strip() for n in raw.split(",") if n.strip()] \
                if text and raw not in ("none", "partial", "all") else raw
        elif parts[0] in streams and parts[1:] == ["mask", "ratio"]:
            streams[parts[0]]["mask"]["ratio"] = _parse_text(raw, float, key) if text else raw
        elif parts[0] in streams and parts[1:] == ["feedback"]:
            streams[parts[0]]["feedback"] = _feedback_links(raw, key) if text else _plain(raw)
        elif parts[0] in streams and len(parts) == 2 and parts[1] in _stream_fields():
            streams[parts[0]][parts[1]] = _parse_text(raw, _stream_fields()[parts[1]], key) if text else raw
        else:
            if parts[0] in streams and len(parts) >= 3:
                targets = [a for a in streams[parts[0]]["areas"] if a["name"] == parts[1]]
                path = parts[2:]
            else:
                targets = [a for s in spec["streams"] for a in s["areas"] if a["name"] == parts[0]]
                path = parts[1:]
            if not targets or not path:
                _unknown(key, pathway)
            for area in targets:
                kind = _area_field_kind(area, path, key)
                _set_path(area, path, _plain(_parse_text(raw, kind, key)) if text else _plain(raw))
    try:
        return pathway_from_dict(spec)
    except SpecError as err:
        raise SpecError(f"graph override rejected: {err}") from None


def _feedback_links(text: str, key: str) -> list[dict]:
    """``"MT>V1,V4>V2"`` (or ``none``) -> ``[{"source": "MT", "target": "V1"}, ...]``."""
    if text.strip().lower() in ("", "none"):
        return []
    links = []
    for part in text.split(","):
        ends = [e.strip() for e in part.split(">")]
        if len(ends) != 2 or not all(ends):
            raise SpecError(f"{key} takes SOURCE>TARGET links separated by commas (e.g. MT>V1), or none; got {text!r}")
        links.append({"source": ends[0], "target": ends[1]})
    return links


def _unknown(key: str, pathway) -> typing.NoReturn:
    known = list(override_keys(pathway))
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SpecError(f"unknown graph key {key!r}{hint} (streams: {', '.join(s.name for s in pathway.streams)})")


def _split(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise SpecError(f"graph overrides look like stream.area.field=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def builder_takes_config(fn) -> bool:
    """Whether a graph builder wants the recipe's model scale: its first positional parameter
    is called ``model`` or has no default (``build(model)``, ``build(model=None)``, ``build(m)``;
    not ``build(depth=4)``)."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return bool(params) and (params[0].name == "model" or params[0].default is inspect.Parameter.empty)
