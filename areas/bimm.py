"""The paper's pathway graph (BIMM section 3.1, Figure 2): one builder among others.

:class:`ModelConfig` names what Tables 7b-f vary (targets, block split, sharing, streams,
decoder depths) and the model's scale; :func:`paper_pathway` turns it into a
:class:`~visualpath.Pathway` of this package's areas. A recipe trains that graph unless it is
given another (``pathway=my_graph.py:build``); a builder of one's own that takes an argument
receives the recipe's ``ModelConfig`` and can size itself with :meth:`ModelConfig.encoder`
and :meth:`ModelConfig.decoder`, so one graph file runs at tiny, demo and paper scale.

Run directories store the graph they trained (``pathway.json``);
:func:`run_pathway` reads it, and rebuilds the paper's graph for runs written before graphs
were stored (their ``config.json`` holds only the ``model`` section).
"""

from __future__ import annotations

import attrs

from areas.mt_motion import MTMotion
from areas.v1_gabor import V1Gabor
from areas.v2_contour import V2Contour
from areas.v4_color import V4Color
from visualpath import DecoderSpec, Pathway, RandomMask, Stage, Stream, TubeMask, ViTSpec
from visualpath import vit_base, vit_large, vit_small, vit_tiny

__all__ = ["ModelConfig", "paper_pathway", "model_config_from_dict", "run_pathway", "SIZES",
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


def _split(instance, attribute, value):
    if value is not None and (len(value) != 3 or value[0] < 1 or min(value) < 0):
        raise ValueError(f"split must be three block counts (V1 >= 1, the others >= 0), got {list(value)}")


def _shared_blocks(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"shared_blocks must be a block count >= 1 or None, got {value!r}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The pathway (section 3.1; ablations in Table 7b-f).

    ``split`` gives the blocks of V1, V2 and V4/MT, so the decoders read blocks 2, 4 and 12
    of ViT-B; None (the default) takes the paper's fractions of the size's depth, 1/6, 1/6
    and 2/3 (ViT-L: 4, 8 and 24; decision D13). A 0 places an area's readout at the same block
    as the one before it (Table 7d's "12" is ``(12, 0, 0)``: every target read from the last
    block). ``share="partial"`` shares the V1 and V2 stages (the paper's "first two
    intermediate blocks"); ``shared_blocks=k`` shares the first ``k`` encoder blocks wherever
    the decoders read (Table 7d's "12" row keeps the default's 4; decision D14).
    ``targets="RGB"`` is the VideoMAE baseline: one pixel target (V4's normalised RGB) read
    from the last block by a 4-block decoder. ``dorsal_contrast`` is the gain of the video
    stream's own temporal-difference filters kept when its patch embedding is inflated from
    the ventral one (0, the default: repeat over the tube and divide; decision D21).

    The graph's own properties are set one way, by its keys (decision H4): the mask ratios
    (``pathway.ventral.mask.ratio``, 0.75; ``pathway.dorsal.mask.ratio``, 0.9, Table 7f), the
    dorsal stream's loss weight (``pathway.dorsal.weight``, lambda of Eq. 4, 1) and decoder
    masking (``pathway.V1.decoder.keep``, 1). This config holds the scale and the choices that
    make the graph: size, split, decoders' width, heads and depths, streams, targets, sharing.
    """

    size: str = attrs.field(default="base", validator=_one_of(SIZES))
    width: int | None = None  # override the size's width (demo models)
    heads: int | None = None  # override the size's attention heads (demo models)
    patch: int | None = None  # override the size's patch side in pixels (demo models)
    split: tuple[int, int, int] | None = attrs.field(default=None, validator=_split)  # blocks of V1, V2, V4/MT
    decoder_width: int = 384  # every decoder's token width
    decoder_heads: int = 6  # every decoder's attention heads
    decoder_depths: tuple[int, int, int] = (1, 2, 4)  # decoder blocks of V1, V2, V4/MT
    streams: tuple[str, ...] = attrs.field(default=STREAMS, validator=_streams)  # ventral, dorsal or both
    share: str = attrs.field(default="partial", validator=_one_of(("none", "partial", "all")))
    shared_blocks: int | None = attrs.field(default=None, validator=_shared_blocks)  # share the first N blocks
    targets: str = attrs.field(default="V1-V2-V4&MT", validator=_one_of(TARGETS))
    dorsal_init: str = attrs.field(default="ventral", validator=_one_of(("ventral", "none")))
    dorsal_contrast: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))  # >= 0; D21

    def encoder(self, depth: int | None = None) -> ViTSpec:
        """The ViT at this config's scale (size, width, heads) with ``depth`` blocks
        (default: the split's sum)."""
        overrides = {k: v for k, v in (("width", self.width), ("heads", self.heads), ("patch", self.patch))
                     if v is not None}
        return SIZES[self.size](depth=depth or sum(self.blocks), **overrides)

    @property
    def blocks(self) -> tuple[int, int, int]:
        """The split in use: ``split``, or the paper's 1/6, 1/6, 2/3 of the size's depth."""
        if self.split is not None:
            return tuple(self.split)
        depth = SIZES[self.size]().depth
        return (depth // 6, depth // 6, depth - 2 * (depth // 6))

    def decoder(self, depth: int, keep: float = 1.0) -> DecoderSpec:
        """A decoder of ``depth`` blocks at this config's decoder width and heads."""
        return DecoderSpec(width=self.decoder_width, depth=depth, heads=self.decoder_heads, keep=keep)


IMAGE_MASK = 0.75  # the ventral stream's random mask ratio (MAE); pathway.ventral.mask.ratio changes it
VIDEO_MASK = 0.9  # the dorsal stream's tube mask ratio (VideoMAE; Table 7f); pathway.dorsal.mask.ratio


def paper_pathway(m: ModelConfig = ModelConfig()) -> Pathway:
    """The paper's graph from a model config (Table 7c target sets via loss weights)."""
    encoder = m.encoder()
    split = m.blocks
    if m.targets == "RGB":  # VideoMAE / MAE: one pixel target at the last block
        dec = m.decoder(m.decoder_depths[-1])
        areas = {"ventral": [V4Color(blocks=sum(split), decoder=dec)],
                 "dorsal": [V4Color(blocks=sum(split), decoder=dec)]}
    else:
        dec = [m.decoder(d) for d in m.decoder_depths]
        n_targets = TARGETS.index(m.targets) + 1  # "V1" -> 1, "V1-V2" -> 2, all -> 3
        w = [1.0 if i < n_targets else 0.0 for i in range(3)]
        make = {"ventral": (V1Gabor, V2Contour, V4Color), "dorsal": (V1Gabor, V2Contour, MTMotion)}
        areas = {name: _segments(classes, split, dec, w, m.shared_blocks if m.share == "partial" else None)
                 for name, classes in make.items()}
    all_streams = {
        "ventral": Stream("ventral", "image", areas["ventral"], mask=RandomMask(IMAGE_MASK)),
        "dorsal": Stream("dorsal", "video", areas["dorsal"], mask=TubeMask(VIDEO_MASK)),
    }
    chosen = [all_streams[s] for s in STREAMS if s in m.streams]
    share = m.share if len(chosen) > 1 else "none"
    if m.targets == "RGB" and share != "none":
        share = ["V4"] if share == "all" else "none"  # one stage per stream: all or nothing
    elif share == "all":
        share = [("V1",), ("V2",), ("V4", "MT")]
    elif share == "partial" and m.shared_blocks is not None:
        first = areas["ventral"]
        share = [a.name for a, end in zip(first, _ends(first)) if end <= m.shared_blocks and a.blocks]
    return Pathway(encoder=encoder, streams=chosen, share=share)


def _ends(areas) -> list[int]:
    out, total = [], 0
    for a in areas:
        total += a.blocks
        out.append(total)
    return out


def _segments(classes, split, dec, w, shared_blocks: int | None) -> list:
    """The three areas with their stages; with ``shared_blocks`` the encoder is also cut at
    that block (a plain stage ``blocks1-k`` ends there), so the first ``k`` blocks can be
    shared whatever blocks the decoders read."""
    taps = [split[0], split[0] + split[1], sum(split)]
    if shared_blocks is None or shared_blocks in taps:
        return [cls(blocks=b, decoder=d, weight=wt) for cls, b, d, wt in zip(classes, split, dec, w)]
    if shared_blocks > taps[-1]:
        raise ValueError(f"shared_blocks={shared_blocks} exceeds the encoder's {taps[-1]} blocks")
    out, start = [], 0
    for i, (cls, tap) in enumerate(zip(classes, taps)):
        if start < shared_blocks < tap:  # the cut falls inside this area's stage
            out.append(Stage(name=f"blocks1-{shared_blocks}" if start == 0 else f"blocks{start + 1}-{shared_blocks}",
                             blocks=shared_blocks - start))
            start = shared_blocks
        out.append(cls(blocks=tap - start, decoder=dec[i], weight=w[i]))
        start = tap
    return out


def model_config_from_dict(fields: dict) -> ModelConfig:
    """A :class:`ModelConfig` from its JSON form (lists back to tuples)."""
    return ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def run_pathway(run_dir, stage: str | None = None, trust_code: bool = False) -> Pathway:
    """The graph a run directory trained (:func:`visualpath.rundir.read_pathway`);
    ``stage="ventral"`` gives its image streams only."""
    from visualpath.rundir import read_pathway

    return read_pathway(run_dir, stage=stage, trust_code=trust_code)
