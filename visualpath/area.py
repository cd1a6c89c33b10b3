"""The idea of a cortical area: an encoder stage plus a readout (decoder, target, loss weight).

BIMM (section 3.1) splits each branch's ViT into intermediate blocks and attaches a light
decoder to each, predicting a "progressive" target at the masked positions (section 3.2).
This module defines only the protocol; the paper's areas (V1 Gabor, V2 contour, V4 colour,
MT motion) live in the ``areas`` package, and a user's own area is written the same way::

    @attrs.frozen(kw_only=True)
    class V3Edges(Area):
        name: str = "V3"

        def target_dim(self, layout):
            return layout.pixels_per_token

        def target(self, inp):
            return inp.layout.patchify(my_edge_map(inp.pixels))   # (B, N, P)

The core never imports a particular area.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import ClassVar

import attrs
import torch
from torch import Tensor, nn

from visualpath._validate import non_negative, non_negative_float, positive, positive_float
from visualpath.errors import SpecError
from visualpath.tokens import MODALITIES, Layout, cached_position_table, standardise_sample
from visualpath.vit import Block

__all__ = ["Area", "DecoderSpec", "Stage", "TargetInput", "Decoder", "area_name"]


@attrs.frozen(kw_only=True)
class DecoderSpec:
    """A light decoder: transformer blocks of its own width, then a linear head.

    Attributes:
        width: decoder token width (VideoMAE-B uses 384).
        depth: decoder blocks; 0 gives a head on mask tokens + positions only.
        heads: attention heads per decoder block.
        mlp_ratio: MLP hidden width as a multiple of ``width``.
        keep: fraction of the masked tokens the decoder reconstructs (VideoMAE V2's decoder
            masking). Below 1 the decoder predicts, and the loss covers, a running-cell
            subset of the masked tokens (:func:`visualpath.masking.running_cell_subset`),
            which cuts its cost roughly in proportion; 1 reconstructs them all (the paper).
        reads: cross-layer connections: earlier areas of the same stream whose stage
            outputs this decoder reads besides its own area's (e.g. MT's decoder reading V1,
            ``reads=("V1",)``). Empty (the paper): its own area's output only.
        fusion: how the inputs of ``reads`` join the area's own: ``"learned"`` adds each
            source through its own LayerNorm and linear map into the decoder width;
            ``"mean"`` averages the sources with the area's output before the decoder's
            input map (fixed, no parameters).
    """

    width: int = attrs.field(default=384, validator=positive)
    depth: int = attrs.field(default=4, validator=non_negative)
    heads: int = attrs.field(default=6, validator=positive)
    mlp_ratio: float = attrs.field(default=4.0, validator=positive_float)
    keep: float = attrs.field(default=1.0)
    reads: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    fusion: str = attrs.field(default="learned")

    @reads.validator
    def _reads(self, attribute, value) -> None:
        if any(not isinstance(v, str) or not v for v in value) or len(set(value)) != len(value):
            raise ValueError(f"DecoderSpec.reads must be distinct area names, got {list(value)!r}")

    @fusion.validator
    def _fusion(self, attribute, value) -> None:
        if value not in ("learned", "mean"):
            raise ValueError(f"DecoderSpec.fusion must be 'learned' or 'mean', got {value!r}")

    @keep.validator
    def _keep(self, attribute, value) -> None:
        if not 0 < value <= 1:
            raise ValueError(f"DecoderSpec.keep must be in (0, 1], got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(
                f"DecoderSpec.width ({self.width}) must be divisible by heads ({self.heads})"
            )


class TargetInput:
    """What an area's target sees for one stream, on the device.

    Attributes:
        pixels: ``(B, C, H, W)`` or ``(B, C, T, H, W)`` float32 in [0, 1], not normalised.
        layout: the stream's token layout (modality, patch, tube).
        batch: the raw batch, for user areas that read other keys.
        maps: the per-pixel side maps the stream's areas declare (``Area.maps``) that the
            batch carries, each ``(B, 1, [T,] H, W)`` float32, cropped, flipped and framed
            with ``pixels``; a map the batch lacks is absent.
    """

    __slots__ = ("pixels", "layout", "batch", "maps")

    def __init__(self, pixels: Tensor, layout: Layout, batch: Mapping[str, Tensor] | None = None,
                 maps: Mapping[str, Tensor] | None = None) -> None:
        self.pixels, self.layout, self.batch = pixels, layout, batch if batch is not None else {}
        self.maps = dict(maps or {})


# --------------------------------------------------------------------------- the registry

# Area classes by name, for a stored graph's ``"type"`` (:func:`visualpath.spec.area_class`):
# every Area subclass adds itself when it is defined, so the arrows run one way (an area
# module imports this one; readers of stored graphs look names up here).
AREAS: dict[str, type] = {}
AMBIGUOUS_AREA_NAMES: dict[str, set[str]] = {}  # names that two different classes define


def register_area(cls: type, name: str | None = None) -> type:
    """Make ``cls`` findable by ``name`` (default: its class name) in a spec's ``"type"``.

    Every :class:`~visualpath.Area` subclass is registered under its class name when it is
    defined; two different classes with one name make the name ambiguous (a spec must then
    use the import path). Usable as a decorator.
    """
    key = name or cls.__name__
    known = AREAS.get(key)
    where = f"{cls.__module__}:{cls.__qualname__}"
    if known is not None and f"{known.__module__}:{known.__qualname__}" != where:
        AMBIGUOUS_AREA_NAMES.setdefault(key, {f"{known.__module__}:{known.__qualname__}"}).add(where)
    AREAS[key] = cls
    return cls


def area_name(instance, attribute, value) -> None:
    """attrs validator for area names (subclasses that redefine ``name`` reuse it)."""
    if not isinstance(value, str) or not value or "." in value or "/" in value:
        raise ValueError(
            f"{type(instance).__name__}.name must be a non-empty string without '.' or '/', "
            f"got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Area(abc.ABC):
    """An encoder stage of ``blocks`` transformer blocks with a readout.

    Attributes:
        name: the area's name in outputs, checkpoints and ``share`` declarations.
        blocks: number of encoder blocks in this area's stage; 0 reads the area out at the
            same block as the area before it (the first area needs at least one).
        decoder: the readout decoder's shape.
        weight: loss weight; 0 makes the area a plain stage (no decoder, no target).

    Subclasses set ``modalities`` when they need one (MT needs video), ``maps`` when their
    target reads a precomputed per-pixel map (V2: ``("contour",)``; flow, depth, saliency),
    and implement :meth:`target_dim` and :meth:`target`. Targets run without grad, in
    float32. A declared map is loaded from its cache by the data pipeline, cropped, flipped
    and resized with the clip, and reaches the target as ``TargetInput.maps[name]``.

    The loss sees :meth:`loss_target`: the target standardised per sample (mean 0, variance 1
    over its tokens and values, :func:`~visualpath.tokens.standardise_sample`), so an area
    whose raw target is tiny (contrast in [0, 0.05]) or huge learns at the other areas' scale.
    An area that sets its own scale says how in ``target_scale`` and is left as it is (the
    paper's areas: MAE's per-token normalisation, their ``normalize`` field; decision D22).
    """

    modalities: ClassVar[tuple[str, ...]] = MODALITIES
    maps: ClassVar[tuple[str, ...]] = ()
    map_fallback: ClassVar[bool] = False  # computes its target without its maps (V2: an edge detector)
    target_scale: ClassVar[str | None] = None  # None: standardised per sample; else how the area scales it

    name: str = attrs.field(validator=area_name)
    blocks: int = attrs.field(validator=non_negative)
    decoder: DecoderSpec = attrs.field(factory=DecoderSpec)
    weight: float = attrs.field(default=1.0, validator=non_negative_float)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        register_area(cls)  # found by its class name in a stored graph

    def __new__(cls, *args, **kwargs):
        # a subclass that declares fields without @attrs.frozen would otherwise fail in attrs'
        # generated __init__ ("unexpected keyword argument"), or silently keep class defaults
        own = [n for n, kind in cls.__dict__.get("__annotations__", {}).items()
               if "ClassVar" not in str(kind)]
        if own and "__attrs_attrs__" not in cls.__dict__:
            raise SpecError(f"{cls.__name__} declares fields ({', '.join(own)}) but is not an attrs class: put "
                            f"@attrs.frozen(kw_only=True) on the line above 'class {cls.__name__}(...)', as every "
                            "area has (docs/guide.md#your-own-area-in-one-file)")
        return super().__new__(cls)

    @property
    def has_readout(self) -> bool:
        return self.weight > 0

    @abc.abstractmethod
    def target_dim(self, layout: Layout) -> int:
        """Values ``P`` the target holds per token for this layout."""

    @abc.abstractmethod
    def target(self, inp: TargetInput) -> Tensor:
        """The prediction target for every token, ``(B, N, P)`` float32."""

    def loss_target(self, inp: TargetInput) -> Tensor:
        """What the decoder learns to predict: :meth:`target`, standardised per sample unless
        the area sets its own scale (``target_scale``)."""
        target = self.target(inp)
        return target if self.target_scale is not None else standardise_sample(target)

    def source(self, inp: TargetInput) -> str:
        """Where the target came from, reported in the pathway output (e.g. a cache)."""
        return "pixels"

    def map_computer(self, name: str, options: Mapping[str, str]):
        """How map ``name`` (one of :attr:`maps`) is computed offline: a function from an
        ``(H, W, 3)`` uint8 frame to its ``(H, W)`` map (bool, or uint8 values), given
        ``options`` from ``python -m recipes.precompute_maps --option KEY=VALUE``."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to compute map {name!r}: implement "
                                  "map_computer(name, options), or write the cache yourself with "
                                  "visualpath.data.MapCache.save")

    def target_side(self, layout: Layout) -> int:
        """Values per token side of the target map (the patch size for per-pixel targets).

        With it a ``(B, N, P)`` target unpatchifies to a map of
        ``P / (tube * side^2)`` channels, e.g. for figures.
        """
        return layout.patch

    def target_channels(self, layout: Layout, values: int) -> int:
        """Channels of the target map whose tokens hold ``values`` values each
        (``values / (tube * target_side^2)``: 3 for pixels, 1 for a contour map).

        Raises:
            ValueError: ``values`` does not divide into such maps.
        """
        side = self.target_side(layout)
        per_channel = layout.tube * side * side
        if values % per_channel:
            raise ValueError(f"area {self.name!r}: {values} target values per token do not form a map of "
                             f"{layout.tube} x {side} x {side} pixels; its target_side(layout) gives the side of a "
                             "token in the target map")
        return values // per_channel


@attrs.frozen(kw_only=True)
class Stage(Area):
    """An encoder stage with no readout (e.g. the blocks after the last target)."""

    name: str = attrs.field(default="stage", validator=area_name)
    weight: float = attrs.field(default=0.0)

    def __attrs_post_init__(self) -> None:
        if self.weight != 0:
            raise ValueError(f"Stage has no target, so its weight must be 0, got {self.weight}")

    def target_dim(self, layout: Layout) -> int:
        return 0

    def target(self, inp: TargetInput) -> Tensor:
        raise TypeError(f"Stage {self.name!r} has no target")


class Decoder(nn.Module):
    """VideoMAE-style decoder: visible tokens + mask tokens -> blocks -> head on masked.

    Args:
        in_width: encoder width ``D`` of the tokens it reads.
        spec: decoder shape.
        out_dim: target values ``P`` per token.
        pos_embed: ``"grid"`` or ``"flat"`` sin-cos table, as the stream uses.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(
        self, in_width: int, spec: DecoderSpec, out_dim: int, pos_embed: str, norm_eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.pos_embed = pos_embed
        self.norm_in = nn.LayerNorm(in_width, eps=norm_eps)
        self.embed = nn.Linear(in_width, spec.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(
            Block(spec.width, spec.heads, spec.mlp_ratio, norm_eps=norm_eps) for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(spec.width, eps=norm_eps)
        self.head = nn.Linear(spec.width, out_dim)
        self.fusion = spec.fusion
        self.n_sources = len(spec.reads)
        # cross-layer inputs (DecoderSpec.reads), each mapped into the decoder width
        self.sources = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(in_width, eps=norm_eps), nn.Linear(in_width, spec.width))
            for _ in (spec.reads if spec.fusion == "learned" else ())
        )

    def positions(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        return cached_position_table(self.pos_embed, grid, self.embed.out_features, like.device)

    def forward(self, x: Tensor, keep: Tensor, masked: Tensor, grid: tuple[int, ...],
                sources: Sequence[Tensor] = ()) -> Tensor:
        """Predict masked tokens.

        Args:
            x: ``(B, N_visible, D)`` encoder tokens after this area's stage.
            keep: ``(B, N_visible)`` indices of those tokens in the full grid.
            masked: ``(B, N_masked)`` indices of the tokens to predict.
            grid: token grid, for the position table.
            sources: the outputs of the stages ``DecoderSpec.reads`` names, in its order,
                each ``(B, N_visible, D)`` at the same tokens as ``x``.

        Returns:
            ``(B, N_masked, P)`` predictions, in the order of ``masked``.
        """
        if len(sources) != self.n_sources:
            raise ValueError(f"this decoder reads {self.n_sources} other stages, got {len(sources)}")
        pos = self.positions(grid, x)  # (N, W)
        if self.fusion == "mean" and sources:
            x = torch.stack([x, *sources]).mean(0)
        x = self.embed(self.norm_in(x)) + pos[keep]
        for source, h in zip(self.sources, sources):
            x = x + source(h)
        queries = self.mask_token.to(x.dtype) + pos[masked]  # (B, N_masked, W)
        x = torch.cat([x, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -masked.shape[1]:]))

