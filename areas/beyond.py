"""Beyond the paper: the graphs its limitation section leaves open, as builders.

"Applying other neuroscience knowledge, involving the function of V3 area, bidirectional
links and cross-layer connections in visual pathway, to self-supervised learning methods
still deserves further exploration." Each builder below is the paper's graph
(:func:`areas.bimm.paper_pathway`) with one of them added, at the scale of the
``ModelConfig`` it is given, so any recipe trains it (``pathway=areas.beyond:with_v3``) and
``python -m recipes.ablations --table x1`` measures each beside the paper's graph:

- :func:`with_v3`: a V3 area (:class:`areas.V3DynamicForm`, dynamic form) between V2 and MT
  in the dorsal stream, taking the first of MT's blocks;
- :func:`with_cross_layer`: MT's decoder also reads V1's stage output
  (``DecoderSpec.reads``, decision X2);
- :func:`with_feedback`: a top-down link from MT back to V1 in the dorsal stream
  (:class:`visualpath.Feedback`, decision X3);
- :func:`with_signed_mt`: MT predicts the signed frame difference (decision D6b).
"""

from __future__ import annotations

import attrs

from areas.bimm import DECODER_DEPTHS, ModelConfig, paper_pathway
from areas.v3_dynamic_form import V3DynamicForm
from visualpath import Feedback, Pathway

__all__ = ["with_v3", "with_cross_layer", "with_feedback", "with_signed_mt"]


def _edit_dorsal(pathway: Pathway, **changes) -> Pathway:
    streams = [attrs.evolve(s, **changes) if s.name == "dorsal" else s for s in pathway.streams]
    return attrs.evolve(pathway, streams=streams)


def with_v3(m: ModelConfig = ModelConfig()) -> Pathway:
    """The paper's graph with V3 (dynamic form) between V2 and MT in the dorsal stream.

    V3 takes as many blocks as V2 has, from the front of MT's stage (ViT-B: V1 1-2, V2 3-4,
    V3 5-6, MT 7-12; the demo's 4 blocks: one each), and a decoder as deep as V2's. The
    ventral stream and the sharing of V1 and V2 are the paper's.
    """
    base = paper_pathway(m)
    dorsal = base.stream("dorsal")
    mt = dorsal.area("MT")
    v3_blocks = min(m.blocks[1], mt.blocks - 1)
    if v3_blocks < 1:
        raise ValueError(f"with_v3 needs MT's stage to have two or more blocks, it has {mt.blocks}")
    v3 = V3DynamicForm(blocks=v3_blocks, decoder=m.decoder(DECODER_DEPTHS[1]))
    areas = [a for a in dorsal.areas if a.name != "MT"] + [v3, attrs.evolve(mt, blocks=mt.blocks - v3_blocks)]
    return _edit_dorsal(base, areas=tuple(areas))


def with_cross_layer(m: ModelConfig = ModelConfig(), reads: tuple[str, ...] = ("V1",),
                     fusion: str = "learned") -> Pathway:
    """The paper's graph, MT's decoder also reading ``reads`` (V1: local texture beside the
    last block's motion), fused by ``fusion``."""
    base = paper_pathway(m)
    mt = base.stream("dorsal").area("MT")
    mt = attrs.evolve(mt, decoder=attrs.evolve(mt.decoder, reads=reads, fusion=fusion))
    return _edit_dorsal(base, areas=tuple(mt if a.name == "MT" else a for a in base.stream("dorsal").areas))


def with_feedback(m: ModelConfig = ModelConfig(), source: str = "MT", target: str = "V1") -> Pathway:
    """The paper's graph with a top-down link in the dorsal stream, ``source`` back to ``target``."""
    return _edit_dorsal(paper_pathway(m), feedback=(Feedback(source, target),))


def with_signed_mt(m: ModelConfig = ModelConfig()) -> Pathway:
    """The paper's graph, MT predicting ``f(t+1) - f(t)`` rather than its magnitude."""
    base = paper_pathway(m)
    areas = tuple(attrs.evolve(a, signed=True) if a.name == "MT" else a for a in base.stream("dorsal").areas)
    return _edit_dorsal(base, areas=areas)
