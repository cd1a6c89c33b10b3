"""The paper's pathway graph (BIMM section 3.1, Figure 2): one builder among others.

:class:`ModelConfig` is the model's scale (size, width, depth, decoders) and which of the
paper's graphs to build (targets and streams, Tables 7b and 7c); :func:`paper_pathway` turns it
into a :class:`~visualpath.Pathway` of this package's areas, and :func:`read_at_last_block`
builds Table 7d's "12" row. Every other property of a graph is set by the graph's own keys
(``pathway.V1.blocks=4``, ``pathway.share=none``; decision H5). A recipe trains the paper's
graph unless it is given another (``pathway=my_graph.py:build``); a builder of one's own with a
``model`` parameter receives the recipe's ``ModelConfig`` and can size itself with
:meth:`ModelConfig.encoder` and :meth:`ModelConfig.decoder`, so one graph file runs at tiny,
demo and paper scale.

Run directories store the graph they trained (``pathway.json``); :func:`run_pathway` reads it.
"""

from __future__ import annotations

import attrs

from areas.mt_motion import MTMotion
from areas.v1_gabor import V1Gabor
from areas.v2_contour import V2Contour
from areas.v4_color import V4Color
from visualpath import DecoderSpec, Pathway, RandomMask, Stage, Stream, TubeMask, ViTSpec
from visualpath import vit_base, vit_large, vit_small, vit_tiny

__all__ = ["ModelConfig", "paper_pathway", "read_at_last_block", "DECODER_DEPTHS", "run_pathway", "SIZES",
           "STREAMS", "TARGETS"]

SIZES = {"tiny": vit_tiny, "small": vit_small, "base": vit_base, "large": vit_large}
TARGETS = ("V1", "V1-V2", "V1-V2-V4&MT", "RGB")
STREAMS = ("ventral", "dorsal")


def _one_of(options):
    def check(instance, attribute, value):
        if value not in options:
            raise ValueError(f"{attribute.name} must be one of {list(options)}, got {value!r}")
    check.options = tuple(options)  # shown by --help
    return check


def _streams(instance, attribute, value):
    if not value or any(s not in STREAMS for s in value) or len(set(value)) != len(value):
        raise ValueError(f"streams must be 'ventral', 'dorsal' or both, got {list(value)}")


def _optional_count(least: int):
    def check(instance, attribute, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{attribute.name} must be a block count >= {least} or None, got {value!r}")
    return check


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The scale of the pathway (section 3.1), and which of the paper's graphs (Tables 7b, 7c).

    This config holds the scale, which any graph builder can use (:meth:`encoder`,
    :meth:`decoder`): the size, its width, heads, patch and depth, and the decoders' width,
    heads and most blocks. ``targets`` and ``streams`` choose among the paper's graphs:
    ``targets="RGB"`` is the VideoMAE baseline (one pixel target, V4's normalised RGB, read
    from the last block by a 4-block decoder), ``"V1"`` and ``"V1-V2"`` are Table 7c's joint
    stages (the other targets' loss weights 0), and ``streams`` keeps the ventral stream, the
    dorsal one or both (Table 7b). ``dorsal_init`` and ``dorsal_contrast`` say how the joint
    stage starts the video stream from the ventral one (decision D21).

    Everything else about the graph is set by the graph's own keys (decisions H4, H5): where
    the decoders read (``pathway.V1.blocks``, ...; the paper's 1/6, 1/6 and 2/3 of the depth,
    decision D13), their depths (``pathway.V2.decoder.depth``), sharing (``pathway.share``),
    the mask ratios (``pathway.dorsal.mask.ratio``), the dorsal loss weight
    (``pathway.dorsal.weight``) and decoder masking (``pathway.V1.decoder.keep``).

    Attributes:
        size: the ViT size: tiny, small, base (the paper's) or large
        width: override the size's width (demo models)
        heads: override the size's attention heads (demo models)
        patch: override the size's patch side in pixels (demo models)
        depth: override the size's encoder blocks (demo models)
        decoder_width: every decoder's token width
        decoder_heads: every decoder's attention heads
        decoder_depth: at most this many blocks in any decoder (demo models); None: as the graph says
        streams: ventral, dorsal or both (Table 7b)
        targets: the paper's targets, fewer of them (Table 7c) or VideoMAE's pixels (RGB)
        dorsal_init: the joint stage starts the dorsal stream from the ventral one, or from scratch (Table 7a)
        dorsal_contrast: gain (>= 0) of the temporal differences kept when the dorsal patch embedding is inflated
            from the ventral one (decision D21)
    """

    size: str = attrs.field(default="base", validator=_one_of(SIZES))
    width: int | None = None
    heads: int | None = None
    patch: int | None = None
    depth: int | None = attrs.field(default=None, validator=_optional_count(1))
    decoder_width: int = 384
    decoder_heads: int = 6
    decoder_depth: int | None = attrs.field(default=None, validator=_optional_count(1))
    streams: tuple[str, ...] = attrs.field(default=STREAMS, validator=_streams)
    targets: str = attrs.field(default="V1-V2-V4&MT", validator=_one_of(TARGETS))
    dorsal_init: str = attrs.field(default="ventral", validator=_one_of(("ventral", "none")))
    dorsal_contrast: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))

    def encoder(self, depth: int | None = None) -> ViTSpec:
        """The ViT at this config's scale (size, width, heads, patch) with ``depth`` blocks
        (default: ``self.depth``, else the size's)."""
        overrides = {k: v for k, v in (("width", self.width), ("heads", self.heads), ("patch", self.patch))
                     if v is not None}
        return SIZES[self.size](depth=depth or self.encoder_depth, **overrides)

    @property
    def encoder_depth(self) -> int:
        """The encoder's blocks: ``depth``, else the size's."""
        return self.depth or SIZES[self.size]().depth

    @property
    def blocks(self) -> tuple[int, int, int]:
        """Where the paper's graph reads (decision D13): blocks of V1, V2 and V4/MT, 1/6, 1/6 and
        the rest of the depth (2, 2, 8 of ViT-B; at least one block each for V1 and V2)."""
        depth = self.encoder_depth
        first = max(1, depth // 6)
        if depth < 2 * first:
            raise ValueError(f"the paper's graph reads at three depths and needs an encoder of at least 2 blocks, "
                             f"got depth {depth}")
        return (first, first, depth - 2 * first)

    def decoder(self, depth: int, keep: float = 1.0) -> DecoderSpec:
        """A decoder of ``depth`` blocks (at most ``decoder_depth``) at this config's decoder
        width and heads."""
        if self.decoder_depth is not None:
            depth = min(depth, self.decoder_depth)
        return DecoderSpec(width=self.decoder_width, depth=depth, heads=self.decoder_heads, keep=keep)


DECODER_DEPTHS = (1, 2, 4)  # decoder blocks of V1, V2 and V4/MT (section 3.1); pathway.V2.decoder.depth changes one
IMAGE_MASK = 0.75  # the ventral stream's random mask ratio (MAE); pathway.ventral.mask.ratio changes it
VIDEO_MASK = 0.9  # the dorsal stream's tube mask ratio (VideoMAE; Table 7f); pathway.dorsal.mask.ratio


def paper_pathway(m: ModelConfig = ModelConfig()) -> Pathway:
    """The paper's graph at the scale of ``m`` (Table 7b/7c's graphs by ``m.targets`` and
    ``m.streams``): V1, V2 and V4 (ventral) or MT (dorsal) reading blocks 2, 4 and 12 of
    ViT-B, V1 and V2 shared between the streams."""
    encoder = m.encoder()
    split = m.blocks
    if m.targets == "RGB":  # VideoMAE / MAE: one pixel target at the last block
        dec = m.decoder(DECODER_DEPTHS[-1])
        areas = {"ventral": [V4Color(blocks=sum(split), decoder=dec)],
                 "dorsal": [V4Color(blocks=sum(split), decoder=dec)]}
    else:
        n_targets = TARGETS.index(m.targets) + 1  # "V1" -> 1, "V1-V2" -> 2, all -> 3
        make = {"ventral": (V1Gabor, V2Contour, V4Color), "dorsal": (V1Gabor, V2Contour, MTMotion)}
        areas = {name: [cls(blocks=b, decoder=m.decoder(d), weight=1.0 if i < n_targets else 0.0)
                        for i, (cls, b, d) in enumerate(zip(classes, split, DECODER_DEPTHS))]
                 for name, classes in make.items()}
    all_streams = {
        "ventral": Stream("ventral", "image", areas["ventral"], mask=RandomMask(IMAGE_MASK)),
        "dorsal": Stream("dorsal", "video", areas["dorsal"], mask=TubeMask(VIDEO_MASK)),
    }
    chosen = [all_streams[s] for s in STREAMS if s in m.streams]
    # "the first two intermediate blocks": V1 and V2, the area names both streams have (pathway.share=partial)
    share = "partial" if len(chosen) > 1 and m.targets != "RGB" else "none"
    return Pathway(encoder=encoder, streams=chosen, share=share)


def read_at_last_block(model: ModelConfig = ModelConfig()) -> Pathway:
    """Table 7d's "12" row: every decoder reads the encoder's last block, and the blocks the
    paper's graph shares (V1's and V2's, 1-4 of ViT-B) stay one shared stage, so the row
    differs from the default only in where the decoders read (decision D14)."""
    base = paper_pathway(model)
    shared = sum(model.blocks[:2])
    depth = base.encoder.depth
    streams = []
    for s in base.streams:
        first = Stage(name=f"blocks1-{shared}", blocks=shared)
        areas = [attrs.evolve(a, blocks=depth - shared if i == 0 else 0) for i, a in enumerate(s.areas)]
        streams.append(attrs.evolve(s, areas=[first, *areas]))
    share = [f"blocks1-{shared}"] if base.share != "none" else "none"
    return Pathway(encoder=base.encoder, streams=streams, share=share)


def run_pathway(run_dir, stage: str | None = None, trust_code: bool = False) -> Pathway:
    """The graph a run directory trained (:func:`visualpath.rundir.read_pathway`);
    ``stage="ventral"`` gives its image streams only."""
    from visualpath.rundir import read_pathway

    return read_pathway(run_dir, stage=stage, trust_code=trust_code)
