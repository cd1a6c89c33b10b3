"""The graph a user declares: streams of areas over one encoder, with declared sharing.

BIMM (sections 3.1 and 3.3) trains a ventral branch on images (MAE) and a dorsal branch on
videos (VideoMAE); each branch's ViT is cut into intermediate blocks with a decoder each,
the two branches share the weights of their first two intermediate blocks, and the joint
objective is ``L = L_V + lambda * L_D`` (Eq. 4). Here a branch is a :class:`Stream`, an
intermediate block is an :class:`~visualpath.area.Area`'s stage, and sharing is declared on
the :class:`Pathway`::

    pathway = Pathway(encoder=vit_base(), streams=[ventral, dorsal], share=["V1", "V2"])
    model = pathway.build()       # visualpath.model.PathwayModel
    out = model(batch)            # PathwayOutput: loss, per-stream and per-area losses, ...

A declaration is plain data and survives a trip through a file::

    spec = pathway.to_dict()      # {"format": ..., "encoder": {...}, "streams": [...], "share": ...}
    assert Pathway.from_dict(spec) == pathway

An area is stored with its class (``"type"``) and every attrs field, its decoder included.
The class is found again by a registered name (every :class:`~visualpath.Area` subclass
registers its class name when it is defined) or by an import path (:func:`visualpath.spec.area_class`;
decisions G1, G2 and G4 in docs/decisions.md). A run's stored graph carries its own copy of
code outside the installed packages (:mod:`visualpath.usercode`, format 2 of the spec;
decisions T1 and T2). Editing a graph by name (``dorsal.MT.normalize=false``) is
:mod:`visualpath.overrides`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from visualpath._validate import non_negative_float, positive
from visualpath.area import Area, area_name
from visualpath.errors import Refused
from visualpath.masking import RandomMask, TubeMask
from visualpath.model import PathwayModel
from visualpath.spec import CODE_FORMAT, FORMAT, SpecError, area_class, build, class_ref, plain
from visualpath.tokens import MODALITIES
from visualpath.usercode import Carried
from visualpath.vit import ViTSpec

__all__ = [
    "Feedback",
    "Stream",
    "Pathway",
    "pathway_to_dict",
    "pathway_from_dict",
]

MASKS = ("RandomMask", "TubeMask")
MAX_PARAMETERS_ENV = "VISUALPATH_MAX_PARAMETERS"  # Pathway.build refuses a graph larger than this
DEFAULT_MAX_PARAMETERS = 5e9

SHARE_MODES = ("none", "partial", "all")


def _stream_name(instance, attribute, value) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"Stream.name must be a Python identifier, got {value!r}")


def _modality(instance, attribute, value) -> None:
    if value not in MODALITIES:
        raise ValueError(f"Stream.modality must be one of {MODALITIES}, got {value!r}")


@attrs.frozen
class Feedback:
    """A top-down (feedback) link of a stream, from a later area's stage to an earlier one's.

    The stream runs its encoder once up to ``source``; then ``target``'s stage runs again on
    its input plus a gated map of ``source``'s output, ``tanh(g) * W LN(h_source)``, and every
    stage after ``target`` runs again on that. Decoders and features read the second pass
    from ``target`` on. It stays one masked-modeling step: both passes see only the visible
    tokens, and the targets are unchanged. The gate ``g`` starts at 0, so a graph with
    feedback starts as the same graph without it and learns how much to use (decision X3).

    Attributes:
        source: the later area whose stage output is sent back.
        target: the earlier area whose stage input receives it.
    """

    source: str = attrs.field(validator=area_name)
    target: str = attrs.field(validator=area_name)

    @property
    def key(self) -> str:
        return f"{self.source}_to_{self.target}"


@attrs.frozen
class Stream:
    """One branch: a modality, its masking rule and an ordered list of areas.

    Attributes:
        name: stream name (``"ventral"``, ``"dorsal"``).
        modality: ``"image"`` or ``"video"``.
        areas: areas in encoder order; their ``blocks`` sum to the encoder depth.
        mask: masking rule; defaults to ``RandomMask(0.75)`` for images and
            ``TubeMask(0.9)`` for videos (the paper's settings).
        weight: this stream's loss weight (``lambda`` of Eq. 4 for the dorsal stream).
        pos_embed: fixed sin-cos table, ``"grid"`` (MAE's 2-D / separable space-time) or
            ``"flat"`` (VideoMAE's 1-D table over the token index). Defaults to ``"grid"``
            for images and ``"flat"`` for videos, each branch's reference convention.
        frame_step: a video stream sees every ``frame_step``-th frame of the clip (a
            stream at a lower frame rate beside one at the full rate); 1 for images.
        feedback: top-down links (:class:`Feedback`) from later areas to earlier ones.

    Batch keys read: an image stream reads ``batch["image"]`` ``(B, C, H, W)``; when the
    batch has no image it takes one random frame per clip from ``batch["video"]``, as in
    the paper's joint training (Algorithm 1, line 9). A video stream reads
    ``batch["video"]`` ``(B, C, T, H, W)``. Pixels are uint8 in [0, 255] or floating point
    in [0, 1]. A per-pixel side map ``M`` that an area declares (``Area.maps``, e.g. V2's
    ``"contour"``) is read from ``batch[M]`` ``(B, T, H, W)`` beside a clip and from
    ``batch["image_" + M]`` ``(B, H, W)`` beside an image, and follows its pixels (the same
    frame pick and frame step); an area reads it as ``TargetInput.maps[M]`` (decision G8).
    """

    name: str = attrs.field(validator=_stream_name)
    modality: str = attrs.field(validator=_modality)
    areas: tuple[Area, ...] = attrs.field(converter=tuple)
    mask: RandomMask | TubeMask | None = attrs.field(default=None, kw_only=True)
    weight: float = attrs.field(default=1.0, kw_only=True, validator=non_negative_float)
    pos_embed: str | None = attrs.field(default=None, kw_only=True)
    frame_step: int = attrs.field(default=1, kw_only=True, validator=positive)
    feedback: tuple[Feedback, ...] = attrs.field(default=(), kw_only=True, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.frame_step != 1 and self.modality != "video":
            raise ValueError(f"stream {self.name!r}: frame_step applies to video streams, got {self.frame_step}")
        if not self.areas:
            raise ValueError(f"stream {self.name!r} needs at least one area")
        if isinstance(self.areas[0], Area) and self.areas[0].blocks < 1:
            raise ValueError(f"stream {self.name!r}: the first area ({self.areas[0].name}) needs at least one "
                             "block; later areas may have 0 (read out at the block before them)")
        for area in self.areas:
            if not isinstance(area, Area):
                raise ValueError(
                    f"stream {self.name!r}: areas must be Area objects, got {type(area).__name__}"
                )
            area_name(area, attrs.fields(type(area)).name, area.name)
        names = [a.name for a in self.areas]
        for i, area in enumerate(self.areas):
            if names.count(area.name) > 1:
                raise ValueError(f"stream {self.name!r} lists area {area.name!r} twice")
            bad = [r for r in area.decoder.reads if r not in names[:i]] if area.has_readout else []
            if bad:
                raise ValueError(
                    f"stream {self.name!r}: {area.name}'s decoder reads {bad[0]!r}, which is not an area before "
                    f"{area.name} in this stream (areas before it: {names[:i] or 'none'})"
                )
            if self.modality not in area.modalities:
                raise ValueError(
                    f"area {area.name!r} ({type(area).__name__}) needs modality "
                    f"{' or '.join(area.modalities)}, but stream {self.name!r} is {self.modality!r}"
                )
        for link in self.feedback:
            if not isinstance(link, Feedback):
                raise ValueError(f"stream {self.name!r}: feedback must be Feedback(source, target) links, got {link!r}")
            for end in (link.source, link.target):
                if end not in names:
                    raise ValueError(f"stream {self.name!r}: feedback {link.source} -> {link.target} names {end!r}, "
                                     f"which is not an area of this stream ({names})")
            if names.index(link.target) >= names.index(link.source):
                raise ValueError(f"stream {self.name!r}: feedback {link.source} -> {link.target} must run from a "
                                 f"later area to an earlier one")
            if self.area(link.target).blocks < 1:
                raise ValueError(f"stream {self.name!r}: feedback target {link.target} has no blocks to run again")
        keys = [link.key for link in self.feedback]
        if len(set(keys)) != len(keys):
            raise ValueError(f"stream {self.name!r} lists a feedback link twice: {keys}")
        if self.mask is None:
            default = RandomMask(0.75) if self.modality == "image" else TubeMask(0.9)
            object.__setattr__(self, "mask", default)
        if not isinstance(self.mask, (RandomMask, TubeMask)):
            raise ValueError(
                f"stream {self.name!r}: mask must be RandomMask(ratio) or TubeMask(ratio), "
                f"got {self.mask!r}"
            )
        if isinstance(self.mask, TubeMask) and self.modality != "video":
            raise ValueError(f"stream {self.name!r}: TubeMask needs a video stream")
        if self.pos_embed is None:
            object.__setattr__(self, "pos_embed", "grid" if self.modality == "image" else "flat")
        if self.pos_embed not in ("grid", "flat"):
            raise ValueError(
                f"stream {self.name!r}: pos_embed must be 'grid' or 'flat', got {self.pos_embed!r}"
            )

    @property
    def depth(self) -> int:
        return sum(a.blocks for a in self.areas)

    @property
    def maps(self) -> tuple[str, ...]:
        """Per-pixel side maps its areas read (``Area.maps``), each named once."""
        return tuple(dict.fromkeys(m for a in self.areas if a.has_readout for m in a.maps))

    def area(self, name: str) -> Area:
        """The area called ``name``."""
        for a in self.areas:
            if a.name == name:
                return a
        raise ValueError(f"unknown area {name!r} of stream {self.name!r}; it has {[a.name for a in self.areas]}")

    def block_span(self, name: str) -> range:
        """0-based encoder block indices of the named area's stage."""
        start = 0
        for a in self.areas:
            if a.name == name:
                return range(start, start + a.blocks)
            start += a.blocks
        raise ValueError(f"unknown area {name!r} of stream {self.name!r}; it has {[a.name for a in self.areas]}")


Member = tuple[str, str]  # (stream name, area name)


@attrs.frozen
class Pathway:
    """Streams over one encoder shape, with declared sharing of encoder stages.

    Attributes:
        encoder: the ViT shape every stream uses (``vit_base()`` etc.).
        streams: the streams, in order; the first stream owns shared stages.
        share: which stages are one set of weights across streams:
            ``"none"``; ``"partial"`` (every area name that appears in two or more
            streams -- V1 and V2 in the paper); ``"all"`` (stage *i* of every stream, which
            needs identical block spans; Table 7e "All Sharing"); or a list whose entries
            are an area name (``"V1"``) or a tuple of area names shared across streams
            (``("V4", "MT")``).
    """

    encoder: ViTSpec = attrs.field(kw_only=True)
    streams: tuple[Stream, ...] = attrs.field(converter=tuple, kw_only=True)
    share: str | tuple = attrs.field(default="none", kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.encoder, ViTSpec):
            raise ValueError(
                f"Pathway.encoder must be a ViTSpec (vit_base() etc.), got {type(self.encoder).__name__}"
            )
        if not self.streams:
            raise ValueError("Pathway needs at least one stream")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        for s in self.streams:
            if not isinstance(s, Stream):
                raise ValueError(f"Pathway.streams must hold Stream objects, got {type(s).__name__}")
            if s.depth != self.encoder.depth:
                spans = " + ".join(f"{a.name}:{a.blocks}" for a in s.areas)
                raise ValueError(
                    f"stream {s.name!r}: area blocks ({spans} = {s.depth}) must sum to the "
                    f"encoder depth {self.encoder.depth}; change the blocks or the encoder "
                    f"(e.g. vit_base(depth={s.depth}))"
                )
        if not isinstance(self.share, str):
            object.__setattr__(self, "share", tuple(
                tuple(e) if isinstance(e, (list, tuple)) else e for e in self.share
            ))
        self.groups()  # validates the declaration

    def groups(self) -> list[list[Member]]:
        """Resolve ``share`` into groups of (stream, area) stages that are one module."""
        if isinstance(self.share, str):
            if self.share not in SHARE_MODES:
                raise ValueError(
                    f"Pathway.share must be one of {SHARE_MODES} or a list of area names, "
                    f"got {self.share!r}"
                )
            if self.share == "none":
                return []
            if self.share == "all":
                return self._share_all()
            common = [n for n in self._area_names() if len(self._members((n,))) > 1]
            if not common:
                raise ValueError("share='partial' found no area name present in two or more streams")
            return [self._members((n,)) for n in common]
        known = self._area_names()
        groups, seen = [], set()
        for entry in self.share:
            names = entry if isinstance(entry, tuple) else (entry,)
            for n in names:
                if n not in known:
                    raise ValueError(
                        f"unknown area {n!r} in share; expected names from {known}, "
                        f"'none', 'partial' or 'all'"
                    )
            members = self._members(names)
            streams = [s for s, _ in members]
            if len(set(streams)) != len(streams):
                raise ValueError(f"share entry {entry!r} names two areas of one stream")
            if len(members) < 2:
                raise ValueError(
                    f"share entry {entry!r} appears only in stream {streams[0]!r}; sharing needs "
                    f"two or more streams"
                )
            if seen & set(members):
                raise ValueError(f"share entry {entry!r} repeats an area already shared")
            seen |= set(members)
            groups.append(members)
        for members in groups:
            blocks = {self.stream(s).area(a).blocks for s, a in members}
            if len(blocks) > 1:
                raise ValueError(f"shared stages {members} have different block counts {sorted(blocks)}")
        return groups

    def _area_names(self) -> list[str]:
        names: list[str] = []
        for s in self.streams:
            names += [a.name for a in s.areas if a.name not in names]
        return names

    def _members(self, names: tuple[str, ...]) -> list[Member]:
        return [(s.name, a.name) for s in self.streams for a in s.areas if a.name in names]

    def _share_all(self) -> list[list[Member]]:
        spans = {tuple(a.blocks for a in s.areas) for s in self.streams}
        if len(self.streams) < 2 or len(spans) > 1:
            raise ValueError(
                "share='all' needs two or more streams with identical block spans, got "
                + ", ".join(f"{s.name}: {[a.blocks for a in s.areas]}" for s in self.streams)
            )
        n = len(self.streams[0].areas)
        return [[(s.name, s.areas[i].name) for s in self.streams] for i in range(n)]

    def owners(self) -> dict[Member, Member]:
        """Map every (stream, area) stage to the (stream, area) that owns its weights."""
        owner = {(s.name, a.name): (s.name, a.name) for s in self.streams for a in s.areas}
        for members in self.groups():
            for m in members:
                owner[m] = members[0]
        return owner

    def parameters_estimate(self) -> int:
        """About how many parameters :meth:`build` makes (every stream's blocks and decoders,
        shared ones counted in each): checked before anything is allocated."""
        e = self.encoder
        per_block = int((4 + 2 * e.mlp_ratio) * e.width * e.width)
        total = 0
        for stream in self.streams:
            total += e.channels * e.tube * e.patch * e.patch * e.width  # the patch embedding
            for area in stream.areas:
                total += area.blocks * per_block
                d = getattr(area, "decoder", None)
                if d is not None:
                    total += int(d.depth * (4 + 2 * d.mlp_ratio) * d.width * d.width) + e.width * d.width
        return total

    def build(self) -> PathwayModel:
        """Instantiate the model (MAE/VideoMAE initialisation).

        Raises:
            Refused: the graph would hold more than ``VISUALPATH_MAX_PARAMETERS`` parameters
                (default 5e9, 20 GB in float32): a size read from a file is bounded before
                anything is allocated; raise the limit to build a larger one.
        """
        try:
            limit = float(os.environ.get(MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS))
        except ValueError:
            raise Refused(f"{MAX_PARAMETERS_ENV}={os.environ[MAX_PARAMETERS_ENV]!r} is not a number") from None
        size = self.parameters_estimate()
        if size > limit:
            raise Refused(f"the graph asks for about {size:.3g} parameters (encoder width {self.encoder.width}), over "
                          f"the limit of {limit:.3g}; set {MAX_PARAMETERS_ENV} higher to build it")
        return PathwayModel(self)

    # ------------------------------------------------------------------ as data

    def to_dict(self) -> dict:
        """A JSON-safe description (:func:`pathway_to_dict`); ``from_dict`` reads it back."""
        return pathway_to_dict(self)

    @classmethod
    def from_dict(cls, spec: Mapping) -> Pathway:
        """The pathway a :meth:`to_dict` description (or a hand-written one) describes.

        Raises:
            visualpath.spec.SpecError: naming the field that is unknown, missing or wrong.
        """
        return pathway_from_dict(spec)

    def stream(self, name: str) -> Stream:
        """The stream called ``name``."""
        for s in self.streams:
            if s.name == name:
                return s
        raise ValueError(f"unknown stream {name!r}; the pathway has {[s.name for s in self.streams]}")

    def select(self, names: Sequence[str]) -> Pathway:
        """The sub-graph of the named streams, with the sharing that remains among them.

        A checkpoint of the sub-graph loads into the whole graph (shared stages are stored
        under their first owner, which a sub-graph keeps when it keeps the first stream).
        """
        for n in names:
            self.stream(n)
        streams = [s for s in self.streams if s.name in names]
        if isinstance(self.share, str):
            share = self.share
            if share != "none" and len(streams) < 2:
                share = "none"
            elif share == "partial":
                names_seen = [a.name for s in streams for a in s.areas]
                share = share if any(names_seen.count(n) > 1 for n in set(names_seen)) else "none"
        else:
            kept = {s.name for s in streams}
            entries = []
            for entry, members in zip(self.share, self.groups()):
                left = [m for m in members if m[0] in kept]
                if len(left) > 1:  # still shared: keep the names of the areas that remain
                    names = tuple(dict.fromkeys(a for _, a in left))
                    entries.append(names if isinstance(entry, tuple) else names[0])
            share = tuple(entries) or "none"
        return attrs.evolve(self, streams=streams, share=share)


# --------------------------------------------------------------------------- as data


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
            "feedback": [plain(link) for link in s.feedback],
            "areas": [{"type": class_ref(type(a)), **plain(a)} for a in s.areas],
        })
    return {"format": FORMAT, "encoder": plain(pathway.encoder), "streams": streams, "share": plain(pathway.share)}


def _stream_from_dict(d: Any, i: int, code=None):
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
        areas.append(build(area_class(a["type"], f"{w}.type", code), a, w, skip=("type",)))
    mask = None
    if d.get("mask") is not None:
        m = d["mask"]
        if not isinstance(m, Mapping) or m.get("type") not in MASKS:
            raise SpecError(f"{where}.mask must be {{'type': 'RandomMask' or 'TubeMask', 'ratio': r}}, got {m!r}")
        mask = build({"RandomMask": RandomMask, "TubeMask": TubeMask}[m["type"]],
                      {k: v for k, v in m.items() if k != "type"}, f"{where}.mask")
    kwargs = {k: d[k] for k in ("weight", "pos_embed", "frame_step") if k in d}
    if d.get("feedback"):
        if not isinstance(d["feedback"], Sequence) or isinstance(d["feedback"], str):
            raise SpecError(f"{where}.feedback must be a list of {{'source': A, 'target': B}}, got {d['feedback']!r}")
        kwargs["feedback"] = tuple(build(Feedback, f, f"{where}.feedback[{j}]") if isinstance(f, Mapping) else f
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
        if root is None:
            raise SpecError(f"{where} carries its code (code/ beside it): read it with its run directory "
                            "(visualpath.rundir.read_pathway)")
        code = Carried(root, spec["code"], where)
    encoder = build(ViTSpec, spec["encoder"], "encoder") if isinstance(spec["encoder"], Mapping) else None
    if encoder is None:
        raise SpecError(f"encoder must be a mapping of ViTSpec fields, got {spec['encoder']!r}")
    if not isinstance(spec["streams"], Sequence) or isinstance(spec["streams"], str):
        raise SpecError(f"streams must be a list, got {spec['streams']!r}")
    streams = [_stream_from_dict(d, i, code) for i, d in enumerate(spec["streams"])]
    try:
        return Pathway(encoder=encoder, streams=streams, share=_share_from(spec.get("share", "none")))
    except (ValueError, TypeError) as err:
        raise SpecError(str(err)) from None
