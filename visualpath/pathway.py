"""Streams, the pathway graph, declared weight sharing and the built model.

BIMM (sections 3.1 and 3.3) trains a ventral branch on images (MAE) and a dorsal branch on
videos (VideoMAE); each branch's ViT is cut into intermediate blocks with a decoder each,
the two branches share the weights of their first two intermediate blocks, and the joint
objective is ``L = L_V + lambda * L_D`` (Eq. 4). Here a branch is a :class:`Stream`, an
intermediate block is an :class:`~visualpath.area.Area`'s stage, and sharing is declared on
the :class:`Pathway`::

    pathway = Pathway(encoder=vit_base(), streams=[ventral, dorsal], share=["V1", "V2"])
    model = pathway.build()
    out = model(batch)            # PathwayOutput: loss, per-stream and per-area losses, ...

Shared stages are one ``nn.ModuleList`` owned by the first stream that declares the area;
the other streams borrow it by reference, so the parameters are the same objects and a
``state_dict()`` stores them once, under the owner (``streams.ventral.stages.V1.*``). A
checkpoint of a ventral-only pathway therefore loads straight into a joint one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from visualpath._validate import non_negative_float, positive
from visualpath.area import Area, Decoder, TargetInput, area_name
from visualpath.masking import Mask, RandomMask, TubeMask, running_cell_subset
from visualpath.tokens import (  # noqa: F401 (IMAGENET_* re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODALITIES,
    Layout,
    PatchEmbed,
    cached_position_table,
    normalize_pixels,
)
from visualpath.vit import ViTSpec, init_embedding, init_weights

__all__ = [
    "Feedback",
    "Stream",
    "Pathway",
    "PathwayModel",
    "PathwayOutput",
    "StreamOutput",
    "inherit_stream",
    "copy_streams",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

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
        for a in self.areas:
            if a.name == name:
                return a
        raise KeyError(name)

    def block_span(self, name: str) -> range:
        """0-based encoder block indices of the named area's stage."""
        start = 0
        for a in self.areas:
            if a.name == name:
                return range(start, start + a.blocks)
            start += a.blocks
        raise KeyError(name)


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
            blocks = {self._stream(s).area(a).blocks for s, a in members}
            if len(blocks) > 1:
                raise ValueError(f"shared stages {members} have different block counts {sorted(blocks)}")
        return groups

    def _stream(self, name: str) -> Stream:
        return next(s for s in self.streams if s.name == name)

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

    def build(self) -> PathwayModel:
        """Instantiate the model (MAE/VideoMAE initialisation)."""
        return PathwayModel(self)

    # ------------------------------------------------------------------ as data

    def to_dict(self) -> dict:
        """A JSON-safe description (:mod:`visualpath.spec`); ``from_dict`` reads it back."""
        from visualpath.spec import pathway_to_dict

        return pathway_to_dict(self)

    @classmethod
    def from_dict(cls, spec: Mapping) -> Pathway:
        """The pathway a :meth:`to_dict` description (or a hand-written one) describes.

        Raises:
            visualpath.spec.SpecError: naming the field that is unknown, missing or wrong.
        """
        from visualpath.spec import pathway_from_dict

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


@dataclass
class StreamOutput:
    """One stream's result.

    Attributes:
        loss: weighted sum of its area losses (scalar).
        losses: per-area MSE at masked tokens.
        predictions: per-area ``(B, K, P)`` predictions at the tokens ``predicted`` names.
        targets: per-area ``(B, K, P)`` targets at the same tokens.
        mask: the mask used.
        grid: token grid ``(t, h, w)`` or ``(h, w)``.
        sources: per-area target source (``"pixels"``, ``"cache"``, ``"sobel"``...).
        predicted: per-area ``(B, K)`` token indices of its predictions and targets:
            ``mask.masked``, or a subset with decoder masking (``DecoderSpec.keep < 1``).
    """

    loss: Tensor
    losses: dict[str, Tensor]
    predictions: dict[str, Tensor]
    targets: dict[str, Tensor]
    mask: Mask
    grid: tuple[int, ...]
    sources: dict[str, str] = field(default_factory=dict)
    predicted: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class PathwayOutput:
    """The pathway's result: ``loss = sum(stream.weight * stream loss)``."""

    loss: Tensor
    streams: dict[str, StreamOutput]

    @property
    def losses(self) -> dict[str, Tensor]:
        """Flat per-area losses keyed ``"stream.area"``, for logging."""
        return {f"{s}.{a}": v for s, o in self.streams.items() for a, v in o.losses.items()}


class StreamModule(nn.Module):
    """A stream's own parameters: embedding, owned stages, decoders."""

    def __init__(self, stream: Stream, spec: ViTSpec, owned: Sequence[str]) -> None:
        super().__init__()
        self.layout = Layout(
            stream.modality, spec.patch, spec.tube if stream.modality == "video" else 1, spec.channels
        )
        self.embed = PatchEmbed(self.layout, spec.width)
        self.stages = nn.ModuleDict()
        for name in owned:
            span = stream.block_span(name)
            self.stages[name] = nn.ModuleList(spec.block(i) for i in span)
        self.decoders = nn.ModuleDict(
            {
                a.name: Decoder(
                    spec.width, a.decoder, a.target_dim(self.layout), stream.pos_embed, spec.norm_eps
                )
                for a in stream.areas
                if a.has_readout
            }
        )

        self.feedback = nn.ModuleDict({link.key: TopDown(spec.width, spec.norm_eps) for link in stream.feedback})

    def positions(self, grid: tuple[int, ...], kind: str, like: Tensor) -> Tensor:
        return cached_position_table(kind, grid, self.embed.proj.out_channels, like.device)


class TopDown(nn.Module):
    """The map of a :class:`Feedback` link: ``tanh(gate) * Linear(LayerNorm(h))``, gate 0 at first."""

    def __init__(self, width: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=norm_eps)
        self.proj = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.gate).to(h.dtype) * self.proj(self.norm(h))


class PathwayModel(nn.Module):
    """The built pathway: ``forward(batch)`` trains, ``features(x, stream)`` probes.

    Attributes:
        checkpointing: recompute each encoder block in the backward pass instead of keeping
            its activations (gradient checkpointing; training only): less memory, about one
            more forward's worth of compute.
    """

    def __init__(self, spec: Pathway) -> None:
        super().__init__()
        self.spec = spec
        self.checkpointing = False
        self.owner = spec.owners()
        self.streams = nn.ModuleDict()
        for s in spec.streams:
            owned = [a.name for a in s.areas if self.owner[(s.name, a.name)] == (s.name, a.name)]
            self.streams[s.name] = StreamModule(s, spec.encoder, owned)
        self.apply(init_weights)
        for module in self.streams.values():
            init_embedding(module.embed.proj)

    # ------------------------------------------------------------------ structure

    def stage(self, stream: str, area: str) -> nn.ModuleList:
        """The blocks of ``area``'s stage in ``stream`` (the owner's, if shared)."""
        owner_stream, owner_area = self.owner[(stream, area)]
        return self.streams[owner_stream].stages[owner_area]

    def blocks(self, stream: str) -> list[nn.Module]:
        """All encoder blocks of a stream, in order."""
        return [b for a in self.spec._stream(stream).areas for b in self.stage(stream, a.name)]

    # ------------------------------------------------------------------ inputs

    def _select(self, stream: Stream, batch: Mapping[str, Tensor], mask: Mask | None = None) -> _Selected:
        """Pick this stream's pixels and side maps from the batch; checks shapes only.

        Also checks that the stream's mask rule fits the token grid, or, when a fixed
        ``mask`` is given, that it covers the grid.
        """
        layout = self.streams[stream.name].layout
        if stream.modality == "video":
            key, prefix = "video", ""
        elif "image" in batch or "video" not in batch:
            key, prefix = "image", "image_"
        else:
            key, prefix = "video", ""  # one frame per clip, chosen in _prepare
        if key not in batch:
            raise ValueError(
                f"stream {stream.name!r} reads batch[{key!r}]: expected {layout.expected}; the "
                f"batch has keys {sorted(batch)}"
            )
        x = batch[key]
        if not isinstance(x, Tensor):
            raise ValueError(f"batch[{key!r}] must be a tensor, got {type(x).__name__}")
        if key == "video" and x.ndim == 5 and stream.frame_step > 1:
            x = x[:, :, ::stream.frame_step]
        if key == "video" and stream.modality == "image":
            if x.ndim != 5:
                raise ValueError(
                    f"stream {stream.name!r} takes frames of batch['video']: expected (B, C, T, H, W), "
                    f"got shape {tuple(x.shape)}"
                )
            grid = layout.grid((x.shape[0], x.shape[1], *x.shape[3:]), name="batch['video'] frames")
        else:
            step = f" every {stream.frame_step} frames of" if stream.frame_step > 1 else ""
            grid = layout.grid(x.shape, name=f"{step.strip() + ' ' if step else ''}batch[{key!r}]")
        if mask is None:
            try:
                stream.mask.count(grid)
            except ValueError as err:
                raise ValueError(f"stream {stream.name!r}, input {tuple(x.shape)}: {err}") from None
        elif tuple(mask.hidden.shape) != (x.shape[0], math.prod(grid)):
            raise ValueError(
                f"mask for stream {stream.name!r} must cover (B, N) = {(x.shape[0], math.prod(grid))} "
                f"tokens, got {tuple(mask.hidden.shape)}"
            )
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise ValueError(f"batch[{key!r}] must be uint8 or floating point, got {x.dtype}")
        maps = {}
        for name in stream.maps:
            m = batch.get(prefix + name)
            if m is None:
                continue
            if key == "video" and m.ndim == 4 and stream.frame_step > 1:
                m = m[:, ::stream.frame_step]
            expected = (x.shape[0], *x.shape[2:])
            if tuple(m.shape) != expected:
                raise ValueError(
                    f"batch[{prefix + name!r}] must be (B, [T,] H, W) = {expected} to match "
                    f"batch[{key!r}], got {tuple(m.shape)}"
                )
            maps[name] = m
        return _Selected(x, maps, key)

    def _prepare(self, stream: Stream, sel: _Selected, generator) -> tuple[Tensor, dict[str, Tensor]]:
        """uint8/float input -> float32 pixels in [0, 1] and ``(B, 1, [T,] H, W)`` maps,
        one frame per clip for an image stream fed clips."""
        x = sel.pixels
        pixels = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        maps = {}
        for name, m in sel.maps.items():  # uint8 maps in [0, 255] (binary: 0/255), bool, or float
            m = m.float() / 255 if m.dtype == torch.uint8 else m.float()
            maps[name] = m.unsqueeze(1)  # (B, 1, [T,] H, W)
        if sel.key == "video" and stream.modality == "image":
            B, T = x.shape[0], x.shape[2]
            t = torch.randint(T, (B,), device=x.device, generator=generator)
            rows = torch.arange(B, device=x.device)
            pixels = pixels[rows, :, t]  # (B, C, H, W)
            maps = {name: m[rows, :, t] for name, m in maps.items()}
        return pixels, maps

    def normalize(self, pixels: Tensor) -> Tensor:
        """ImageNet mean/std normalisation of [0, 1] pixels, the encoder's input."""
        return normalize_pixels(pixels)

    def _tokens(self, stream: Stream, pixels: Tensor, grid: tuple[int, ...]) -> Tensor:
        module = self.streams[stream.name]
        tokens = module.embed(normalize_pixels(pixels))  # (B, N, D)
        return tokens + module.positions(grid, stream.pos_embed, tokens).to(tokens.dtype)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        batch: Mapping[str, Tensor],
        masks: Mapping[str, Mask] | None = None,
        generator: torch.Generator | None = None,
    ) -> PathwayOutput:
        """Masked prediction for every stream.

        Args:
            batch: dict of tensors (see :class:`Stream` for the keys each stream reads).
            masks: optional fixed masks per stream name; others are drawn by the stream's rule.
            generator: optional RNG for masks and frame picks.

        Raises:
            ValueError: before any compute, when an input does not fit its stream.
        """
        masks = dict(masks or {})
        unknown = set(masks) - set(self.streams)
        if unknown:
            raise ValueError(f"masks given for unknown streams {sorted(unknown)}; expected {list(self.streams)}")
        # Every input is checked before any compute.
        selected = {s.name: self._select(s, batch, masks.get(s.name)) for s in self.spec.streams}
        outputs: dict[str, StreamOutput] = {}
        total = None
        for stream in self.spec.streams:
            out = self._forward_stream(stream, batch, selected[stream.name], masks.get(stream.name), generator)
            outputs[stream.name] = out
            weighted = stream.weight * out.loss
            total = weighted if total is None else total + weighted
        return PathwayOutput(loss=total, streams=outputs)

    def _forward_stream(self, stream, batch, sel: _Selected, mask, generator) -> StreamOutput:
        """One stream's masked-modeling step: targets -> encoder on visible tokens ->
        each area's decoder at its readout block -> per-area MSE."""
        module = self.streams[stream.name]
        pixels, maps = self._prepare(stream, sel, generator)
        grid = module.layout.grid(pixels.shape)
        if mask is None:
            mask = stream.mask(pixels.shape[0], grid, device=pixels.device, generator=generator)
        inp = TargetInput(pixels=pixels, layout=module.layout, batch=batch, maps=maps)
        targets, sources, predicted = self.forward_targets(stream, inp, mask, grid, generator)
        h = _gather(self._tokens(stream, pixels, grid), mask.keep)  # (B, N_visible, D)
        losses, predictions, loss, outputs = {}, {}, None, {}
        for name, h in self.forward_encoder(stream.name, h):
            outputs[name] = h
            if name in targets:
                reads = [outputs[r] for r in stream.area(name).decoder.reads]  # cross-layer inputs
                pred = self.forward_decoder(stream.name, name, h, mask.keep, predicted[name], grid, reads)
                predictions[name] = pred
                losses[name] = self.forward_loss(pred, targets[name])
                weighted = stream.area(name).weight * losses[name]
                loss = weighted if loss is None else loss + weighted
        if loss is None:
            loss = h.sum() * 0  # a stream of plain stages still joins the graph
        return StreamOutput(
            loss=loss, losses=losses, predictions=predictions, targets=targets,
            mask=mask, grid=grid, sources=sources, predicted=predicted,
        )

    def forward_targets(self, stream: Stream, inp: TargetInput, mask: Mask, grid: tuple[int, ...], generator=None
                        ) -> tuple[dict[str, Tensor], dict[str, str], dict[str, Tensor]]:
        """Each reading area's target at the tokens it predicts, without grad, in float32.

        Returns:
            ``(targets, sources, predicted)``: ``{area: (B, K, P)}``, where each target came
            from, and ``{area: (B, K)}`` the token indices: ``mask.masked``, or a running-cell
            subset of it with decoder masking (``DecoderSpec.keep < 1``).
        """
        targets, sources, predicted = {}, {}, {}
        with torch.no_grad(), torch.autocast(inp.pixels.device.type, enabled=False):
            for area in stream.areas:
                if area.has_readout:
                    keep = area.decoder.keep
                    predicted[area.name] = mask.masked if keep >= 1 else \
                        running_cell_subset(mask.masked, grid, keep, generator)
                    targets[area.name] = _gather(area.target(inp), predicted[area.name])
                    sources[area.name] = area.source(inp)
        return targets, sources, predicted

    def forward_encoder(self, stream: str, h: Tensor, by: str = "area") -> Iterator[tuple[str, Tensor]]:
        """The one block loop: run a stream's encoder blocks on tokens ``h`` ``(B, N, D)``
        (the visible ones in training) and yield ``(name, h)`` after each area's stage
        (``by="area"``; an area of 0 blocks reads the block before it) or after each block
        (``by="block"``: ``"block1"``, ``"block2"``, ...). Blocks are recomputed in the
        backward pass when ``checkpointing`` is on (training only)."""
        if by not in ("area", "block"):
            raise ValueError(f"by must be 'area' or 'block', got {by!r}")
        spec = self.spec._stream(stream)
        if not spec.feedback:
            yield from self._run_stages(stream, spec.areas, h, by)
            return
        # Feedback: a first pass up to the last source, then a second from the first target on,
        # each target's input plus the gated top-down map of its sources' first-pass outputs.
        names = [a.name for a in spec.areas]
        first = min(names.index(link.target) for link in spec.feedback)
        last = max(names.index(link.source) for link in spec.feedback)
        before = 1 + sum(a.blocks for a in spec.areas[:first])  # block numbers go on from here
        inputs, outputs = {}, {}
        first_pass = list(self._run_stages(stream, spec.areas[:last + 1], h, by, inputs, outputs))
        yield from first_pass[:first if by == "area" else before - 1]  # the stages below every target
        top_down = self.streams[stream].feedback
        extra = {}
        for link in spec.feedback:
            signal = top_down[link.key](outputs[link.source])
            extra[link.target] = signal if link.target not in extra else extra[link.target] + signal
        yield from self._run_stages(stream, spec.areas[first:], inputs[names[first]], by, extra=extra,
                                    start=before)

    def _run_stages(self, stream: str, areas, h: Tensor, by: str, inputs: dict | None = None,
                    outputs: dict | None = None, extra: Mapping[str, Tensor] | None = None, start: int = 1
                    ) -> Iterator[tuple[str, Tensor]]:
        """Run the stages of ``areas`` in order on ``h``, blocks numbered from ``start``;
        ``extra[name]`` is added to a stage's input; ``inputs`` / ``outputs`` keep each
        stage's input and output by area name."""
        recompute = self.checkpointing and self.training
        index = start - 1
        for area in areas:
            if extra and area.name in extra:
                h = h + extra[area.name]
            if inputs is not None:
                inputs[area.name] = h
            for block in self.stage(stream, area.name):
                h = checkpoint(block, h, use_reentrant=False) if recompute else block(h)
                index += 1
                if by == "block":
                    yield f"block{index}", h
            if outputs is not None:
                outputs[area.name] = h
            if by == "area":
                yield area.name, h

    def forward_decoder(self, stream: str, area: str, h: Tensor, keep: Tensor, predicted: Tensor,
                        grid: tuple[int, ...], sources: Sequence[Tensor] = ()) -> Tensor:
        """``area``'s decoder: visible tokens ``h`` at ``keep`` (and the outputs of the stages
        its ``DecoderSpec.reads`` names, ``sources``) -> ``(B, K, P)`` predictions at the
        token indices ``predicted``."""
        return self.streams[stream].decoders[area](h, keep, predicted, grid, sources)

    @staticmethod
    def forward_loss(pred: Tensor, target: Tensor) -> Tensor:
        """MSE between predictions and targets at the predicted tokens (in float32)."""
        return F.mse_loss(pred.float(), target)

    def target_input(self, batch: Mapping[str, Tensor], stream: str, generator=None) -> TargetInput:
        """What one stream's areas compute their targets from, as training picks it from
        ``batch`` (its frames every ``frame_step``, an image stream's frame of a clip)."""
        s = self.spec._stream(stream)
        pixels, maps = self._prepare(s, self._select(s, batch), generator)
        return TargetInput(pixels=pixels, layout=self.streams[stream].layout, batch=batch, maps=maps)

    @torch.no_grad()
    def targets(self, batch: Mapping[str, Tensor], stream: str, inp: TargetInput | None = None
                ) -> dict[str, Tensor]:
        """Every area's full ``(B, N, P)`` target for one stream (for figures and checks);
        ``inp``: this batch's :meth:`target_input`, when the caller already made it."""
        inp = inp if inp is not None else self.target_input(batch, stream)
        return {a.name: a.target(inp) for a in self.spec._stream(stream).areas if a.has_readout}

    def embed(self, x: Tensor, stream: str) -> Tensor:
        """Embedded tokens with positions of one stream's input, before any block and
        unmasked: ``(B, N, D)``. ``x`` is ``(B, C, [T,] H, W)``, uint8 or in [0, 1]; a stream
        with a ``frame_step`` takes every ``frame_step``-th frame of a clip."""
        if stream not in self.streams:
            raise ValueError(f"unknown stream {stream!r}; expected one of {list(self.streams)}")
        step = self.spec.stream(stream).frame_step
        if step > 1 and x.ndim == 5:  # the frames this stream sees
            x = x[:, :, ::step]
        grid = self.streams[stream].layout.grid(x.shape, name=f"stream {stream!r} input")
        return self._tokens(self.spec._stream(stream), x, grid)

    def features(
        self,
        x: Tensor,
        stream: str,
        mask: Mask | None = None,
        pooled: bool = False,
    ) -> dict[str, Tensor]:
        """Per-area token features of one stream.

        Args:
            x: the stream's input, ``(B, C, H, W)`` or ``(B, C, T, H, W)``, uint8 or [0, 1].
            stream: stream name.
            mask: optional mask; features then cover visible tokens only.
            pooled: mean over tokens, ``(B, D)`` per area.

        Returns:
            ``{area name: (B, N, D)}`` (or ``(B, D)``) outputs of each area's last block.
        """
        h = self.embed(x, stream)  # checks the stream and the input first
        if mask is not None:
            h = _gather(h, mask.keep)
        return {name: h.mean(1) if pooled else h for name, h in self.forward_encoder(stream, h)}


@dataclass
class _Selected:
    """A stream's raw input picked from the batch: pixels, side maps and the batch key."""

    pixels: Tensor
    maps: dict[str, Tensor]
    key: str


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for ``(B, N, P)`` x and ``(B, K)`` index -> ``(B, K, P)``."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@torch.no_grad()
def copy_streams(dst: PathwayModel, src: PathwayModel) -> dict[str, list[str]]:
    """Copy every stream of ``src`` that ``dst`` also has, stage by stage, with its embedding
    and the decoders both have (a ventral-stage model into the joint one).

    Stages are matched by (stream, area), wherever the two graphs store them: a stage that
    ``src`` owns may be borrowed in ``dst`` (shared with a stream that comes first there).

    Returns:
        ``{"copied": [...], "skipped": [...]}`` as ``stream.area`` / ``stream.embed`` /
        ``stream.decoder.area`` names; skipped parts are absent from ``dst`` or of another shape.
    """
    report: dict[str, list[str]] = {"copied": [], "skipped": []}
    done: set[int] = set()

    def copy(name: str, to: nn.Module | None, source: nn.Module) -> None:
        if to is None or id(to) in done:
            report["skipped" if to is None else "copied"].append(name)
            return
        mine, theirs = to.state_dict(), source.state_dict()
        if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
            report["skipped"].append(name)
            return
        to.load_state_dict(theirs)
        done.add(id(to))
        report["copied"].append(name)

    for stream in src.spec.streams:
        if stream.name not in dst.streams:
            continue
        copy(f"{stream.name}.embed", dst.streams[stream.name].embed, src.streams[stream.name].embed)
        names = {a.name for a in dst.spec.stream(stream.name).areas}
        for area in stream.areas:
            target = dst.stage(stream.name, area.name) if area.name in names else None
            copy(f"{stream.name}.{area.name}", target, src.stage(stream.name, area.name))
        for name, decoder in src.streams[stream.name].decoders.items():
            copy(f"{stream.name}.decoder.{name}", dst.streams[stream.name].decoders[name]
                 if name in dst.streams[stream.name].decoders else None, decoder)
    return report


@torch.no_grad()
def inherit_stream(
    model: PathwayModel, dst: str, src: str, source: PathwayModel | None = None, temporal_contrast: float = 0.0
) -> dict[str, list[str]]:
    """Initialise stream ``dst`` from stream ``src`` (BIMM: dorsal from the trained ventral).

    Copies the encoder blocks position by position and the patch embedding, inflating a 2-D
    ``(D, C, p, p)`` kernel to 3-D by repeating it over the tube and dividing by its length
    (a static clip then embeds exactly as its frame did), or deflating 3-D to 2-D by summing
    over time. Decoders are not copied: image and tube heads predict different shapes, and
    the paper initialises only the encoder. Stages that ``dst`` already shares with ``src``
    are left alone.

    Repeating a 2-D kernel over the tube averages the tube's frames, so the inflated
    embedding cannot tell a moving patch from a still one. ``temporal_contrast > 0`` adds
    back that many times the part of ``dst``'s own current kernel that varies over the tube
    (its kernel minus its mean over time): a still clip still embeds exactly as its frame did,
    since that part sums to zero over identical frames, while frame differences reach the
    encoder through the fresh initialisation's temporal filters (decision D21).

    Args:
        model: the model whose stream ``dst`` is overwritten.
        dst: stream to initialise.
        src: stream to copy from.
        source: model holding ``src``; defaults to ``model`` itself (e.g. a joint model after
            loading a ventral-only checkpoint).
        temporal_contrast: gain of ``dst``'s own temporal-difference filters kept in an
            inflated kernel; 0 (the default) is the plain repeat-and-divide inflation.

    Returns:
        ``{"copied": [...], "shared": [...], "inflated": [...]}`` parameter names of ``dst``.
    """
    if temporal_contrast < 0:
        raise ValueError(f"temporal_contrast must be >= 0, got {temporal_contrast}")
    source = source or model
    for m, name in ((model, dst), (source, src)):
        if name not in m.streams:
            raise ValueError(f"unknown stream {name!r}; expected one of {list(m.streams)}")
    dst_blocks, src_blocks = model.blocks(dst), source.blocks(src)
    if len(dst_blocks) != len(src_blocks):
        raise ValueError(
            f"stream {dst!r} has {len(dst_blocks)} blocks but {src!r} has {len(src_blocks)}"
        )
    report: dict[str, list[str]] = {"copied": [], "shared": [], "inflated": []}
    for i, (b_dst, b_src) in enumerate(zip(dst_blocks, src_blocks)):
        if b_dst is b_src:
            report["shared"].append(f"block {i}")
            continue
        b_dst.load_state_dict(b_src.state_dict())
        report["copied"].append(f"block {i}")
    w_dst = model.streams[dst].embed.proj
    w_src = source.streams[src].embed.proj
    weight = w_src.weight
    if weight.ndim == 4 and w_dst.weight.ndim == 5:
        t = w_dst.weight.shape[2]
        weight = weight.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        if temporal_contrast:
            own = w_dst.weight.detach()
            weight = weight + temporal_contrast * (own - own.mean(2, keepdim=True))
        report["inflated"].append("embed.proj.weight" + (f" (+{temporal_contrast:g} x its own temporal differences)"
                                                         if temporal_contrast and t > 1 else ""))
    elif weight.ndim == 5 and w_dst.weight.ndim == 4:
        weight = weight.sum(2)
        report["inflated"].append("embed.proj.weight (summed over time)")
    else:
        report["copied"].append("embed.proj.weight")
    if weight.shape != w_dst.weight.shape:
        raise ValueError(
            f"patch embedding of {src!r} {tuple(w_src.weight.shape)} does not fit {dst!r} "
            f"{tuple(w_dst.weight.shape)}"
        )
    w_dst.weight.copy_(weight)
    w_dst.bias.copy_(w_src.bias)
    report["copied"].append("embed.proj.bias")
    return report
