"""Editing a pathway graph by name, as the command line does: ``dorsal.MT.normalize=false``,
``V1.wavelengths=4,8``, ``ventral.mask.ratio=0.6`` (decision G4).

:func:`override_keys` lists every key a graph has with its value, :func:`override_notes`
says what each is (type and one line, for ``--help``), and :func:`apply_overrides` returns
the edited graph, rebuilt from its spec so that every class validates again; every error
names the key it is about.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from visualpath.area import DecoderSpec
from visualpath.config import attribute_docs, flatten
from visualpath.graph import Stream, pathway_from_dict, pathway_to_dict
from visualpath.spec import SpecError, area_class, convert, field_types, plain
from visualpath.vit import ViTSpec

__all__ = ["apply_overrides", "override_keys", "override_notes"]


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
            for k, v in flatten(a, skip=("type", "name")).items():
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


def _parse_text(text: str, kind: Any, key: str) -> Any:
    return convert(text, kind, key, text=True)


def _area_field_kind(area_dict: Mapping, path: list[str], key: str) -> Any:
    cls = area_class(area_dict["type"], key)
    for i, part in enumerate(path):
        hints = field_types(cls)
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
    spec = pathway_to_dict(pathway)
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    streams = {s["name"]: s for s in spec["streams"]}
    for key, raw in items:
        parts = key.split(".")
        text = isinstance(raw, str)
        if parts[0] == "encoder" and len(parts) == 2:
            kind = field_types(ViTSpec).get(parts[1])
            if kind is None:
                _unknown(key, pathway)
            spec["encoder"][parts[1]] = _parse_text(raw, kind, key) if text else raw
        elif key == "share":
            spec["share"] = [n.strip() for n in raw.split(",") if n.strip()] \
                if text and raw not in ("none", "partial", "all") else raw
        elif parts[0] in streams and parts[1:] == ["mask", "ratio"]:
            streams[parts[0]]["mask"]["ratio"] = _parse_text(raw, float, key) if text else raw
        elif parts[0] in streams and parts[1:] == ["feedback"]:
            streams[parts[0]]["feedback"] = _feedback_links(raw, key) if text else plain(raw)
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
                _set_path(area, path, plain(_parse_text(raw, kind, key)) if text else plain(raw))
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
    parts = key.split(".")
    by_stream = {s.name: [a.name for a in s.areas] for s in pathway.streams}
    if parts[0] in by_stream and len(parts) >= 3 and parts[1] not in by_stream[parts[0]]:
        holders = [name for name, areas in by_stream.items() if parts[1] in areas]
        if holders:
            hint = (f": {parts[1]} is an area of the {', '.join(holders)} stream{'s' if len(holders) > 1 else ''} only, "
                    f"not of {parts[0]}" + (f" ({'.'.join([holders[0], *parts[1:]])})" if len(holders) == 1 else ""))
    areas = "; ".join(f"{name}: {', '.join(areas)}" for name, areas in by_stream.items())
    raise SpecError(f"unknown graph key {key!r}{hint} (the graph's streams and areas: {areas})")


def _split(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise SpecError(f"graph overrides look like stream.area.field=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()

