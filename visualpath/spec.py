"""Reading typed objects from plain data: the classes a stored graph names, and the values
of their fields.

A run is defined by its graph, so the graph must survive a trip through a file
(:func:`visualpath.graph.pathway_to_dict` and back). An area is stored with its class
(``"type"``): a registered name (every :class:`~visualpath.Area` subclass registers its class
name when it is defined, :data:`visualpath.area.AREAS`) or an import path,
``"package.module:Class"`` for an importable module, ``"path/to/file.py:Class"`` for a plain
file (:func:`area_class`, :func:`import_object`). Written specs always use the import path, so
a stored graph loads without anything imported first (decisions G1, G2 and G4 in
docs/decisions.md). Importing a path outside the installed packages is the reader's decision
(:mod:`visualpath.trust`), and a run's stored graph carries its own copy of such code
(:mod:`visualpath.usercode`, format 2 of the spec; decisions T1 and T2). Field values are
converted by their annotations (:func:`build`, :func:`convert`), and every error names the field it is about.
"""

from __future__ import annotations

import contextlib
import difflib
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from visualpath.area import AMBIGUOUS_AREA_NAMES, AREAS, Area, register_area  # noqa: F401 (register_area re-exported)
from visualpath.errors import SpecError
from visualpath import registry, trust, usercode
from visualpath.trust import CodeNotTrusted, trusting

__all__ = [
    "SpecError",
    "FORMAT",
    "CODE_FORMAT",
    "area_class",
    "class_ref",
    "import_object",
    "register_area",
    "build",
    "convert",
    "plain",
]

FORMAT = "visualpath.pathway/1"
CODE_FORMAT = "visualpath.pathway/2"  # a spec that carries its code (``"code"``, :mod:`visualpath.usercode`)


# --------------------------------------------------------------------------- finding classes


def area_class(ref: str, where: str = "type", code=None) -> type:
    """The area class a spec's ``"type"`` names: a registered name or an import path (found
    in the run's ``code`` first, see :func:`import_object`). The class is checked to be an
    :class:`~visualpath.Area` before anything is made of it."""
    if ":" in ref:
        cls = import_object(ref, where, code, from_data=True, kind="area")
    elif ref in AMBIGUOUS_AREA_NAMES:
        raise SpecError(f"{where}: the area name {ref!r} is defined by several classes "
                        f"({', '.join(sorted(AMBIGUOUS_AREA_NAMES[ref]))}); use the import path")
    elif ref in AREAS:
        cls = AREAS[ref]
    else:
        close = difflib.get_close_matches(ref, AREAS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"{where}: unknown area {ref!r}{hint}. Registered areas: {', '.join(sorted(AREAS))}; "
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


def import_object(ref: str, where: str = "reference", code=None, from_data: bool = False,
                  kind: typing.Literal["area", "graph"] | None = None) -> Any:
    """The object ``"package.module:name"`` or ``"path/to/file.py:name"`` names.

    Args:
        from_data: the reference was read from data (a spec, a run, a config file), not
            written by the caller: code outside the installed packages is then imported only
            under the trust rule of :mod:`visualpath.trust`. A caller naming a reference in
            Python has chosen it.
        code: a run's carried code (:class:`visualpath.usercode.Carried`); a reference it
            holds is loaded from the run's own copy.
        kind: what data names (``"area"`` or ``"graph"``): an installed module is then
            imported only if it is registered for it (:mod:`visualpath.registry`).

    Raises:
        SpecError: naming ``where`` and what could not be found.
        CodeNotTrusted: the code is not installed and the reader has not trusted it, or it is
            installed and data names it without its being registered.
    """
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise SpecError(f"{where}: expected 'package.module:name' or 'path/to/file.py:name', got {ref!r}")
    if code is not None and module_part in code:
        module = code.load(module_part, where)
    else:
        if from_data:
            _check_registered(ref, module_part, where, kind)
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


def _check_registered(ref: str, module_part: str, where: str, kind: str | None) -> None:
    """Refuse, before anything is imported, an installed module that data names without its
    being registered for ``kind`` (decision T3); the reader's own naming and
    ``--trust-code`` pass, and code outside the installed packages is left to the trust rule."""
    if usercode.is_path(module_part) or trust.named(module_part) or trust.policy().trust_code:
        return
    if not all(p.isidentifier() for p in module_part.split(".")):
        raise SpecError(f"{where}: {module_part!r} is not a module name (a file is named by its path: "
                        "'path/to/file.py:NAME')")
    if not trust.installed(module_part):
        return  # the user's own code: the trust rule decides (visualpath.trust)
    if kind == "area":
        ok, group = registry.area_module(module_part), registry.AREA_GROUP
        what = f"module {module_part!r} is installed code not registered as holding visualpath areas"
    elif kind == "graph":
        ok, group = registry.graph_builder(ref), registry.GRAPH_GROUP
        what = f"builder {ref!r} is installed code not registered as a visualpath graph builder"
    else:
        raise ValueError(f"import_object(from_data=True) needs kind='area' or 'graph', got {kind!r}")
    if not ok:
        raise CodeNotTrusted(f"{where}: the {what}, so a run, a spec or a config file may not name it (nothing was "
                             f"imported); its package can register it in the entry-point group {group!r}, or pass "
                             "--trust-code (trust_code=True in Python) to import it anyway (docs/reliability.md#security)")


# --------------------------------------------------------------------------- field values


def plain(value: Any) -> Any:
    if attrs.has(type(value)):
        return {f.name: plain(getattr(value, f.name)) for f in attrs.fields(type(value)) if f.init}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to the declared ones
        return {f.name: f.type for f in attrs.fields(cls)}


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def convert(value: Any, kind: Any, where: str, text: bool = False) -> Any:
    """``value`` as the annotated ``kind`` (attrs classes, tuples, optionals, literals,
    numbers): a value read from JSON, or with ``text=True`` one typed on a command line
    (``4,8`` for a tuple, ``true``, ``none``, ``0.5``). The one converter of config keys and
    graph keys alike; an error names ``where``.

    Raises:
        SpecError: the value is not of the kind (nor, as text, readable as it).
    """
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    typed = text and isinstance(value, str)
    if origin in (typing.Union, types.UnionType):
        if (value is None or typed and value.lower() in ("none", "null")) and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(value, arg, where, text)
            except SpecError as err:
                errors.append(str(err))
        if typed:
            raise SpecError(f"{where}: cannot read {value!r} as {kind}")
        raise SpecError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is none of {kind}")
    if origin is typing.Literal:
        match = [a for a in args if (str(a) == value if typed else a == value)]
        if not match:
            raise SpecError(f"{where} must be one of {list(args)}, got {value!r}")
        return match[0]
    if origin is tuple:
        if typed:
            value = [t.strip() for t in value.strip("()[]").split(",") if t.strip()]
            if args and args[-1] is not Ellipsis and len(args) != len(value):
                raise SpecError(f"{where} needs {len(args)} comma-separated values, got {','.join(value)!r}")
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{where}[{i}]" if not typed else where, text)
                         for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise SpecError(f"{where} must hold {len(args)} values, got {len(value)}")
        return tuple(convert(v, a, f"{where}[{i}]" if not typed else where, text)
                     for i, (v, a) in enumerate(zip(value, args))) if args else tuple(value)
    if isinstance(kind, type) and attrs.has(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise SpecError(f"{where} must be a mapping of {kind.__name__} fields, got {value!r}")
        return build(kind, value, where)
    if kind is bool:
        if typed and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if typed:
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if typed:
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise SpecError(f"{where} must be a string, got {value!r}")
        return value
    if typed and kind is not Any and not isinstance(kind, str):
        raise SpecError(f"{where}: values of type {kind} cannot be set from the command line")
    return value  # Any, or a type we do not check: the class's own validators decide


def build(cls: type, fields: Mapping[str, Any], where: str, skip: Sequence[str] = ()):
    """``cls(**fields)`` with each field converted by its annotation; unknown and missing
    fields, type errors and the class's own validation errors name the field."""
    declared = {f.name: f for f in attrs.fields(cls) if f.init}
    hints = field_types(cls)
    unknown = [k for k in fields if k not in declared and k not in skip]
    if unknown:
        close = difflib.get_close_matches(unknown[0], declared, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; its fields: {', '.join(declared)}"
        raise SpecError(f"{where}: unknown field {unknown[0]!r} of {cls.__name__}{hint}")
    missing = [n for n, f in declared.items() if f.default is attrs.NOTHING and n not in fields]
    if missing:
        raise SpecError(f"{where}: missing field {missing[0]!r} of {cls.__name__}")
    kwargs = {k: convert(v, hints.get(k, Any), f"{where}.{k}") for k, v in fields.items() if k in declared}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise SpecError(f"{where}: {err}") from None
