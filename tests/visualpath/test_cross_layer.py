"""Cross-layer connections: a decoder that reads several stages (DecoderSpec.reads)."""

import attrs
import pytest
import torch

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from visualpath import DecoderSpec, Pathway, RandomMask, Stream, TubeMask
from visualpath.graph import pathway_from_dict
from visualpath.overrides import apply_overrides
from visualpath.spec import SpecError
from visualpath.vit import vit_tiny


def _graph(reads=("V1",), fusion="learned"):
    dec = DecoderSpec(width=32, depth=1, heads=2)
    v1, v2 = V1Gabor(blocks=1, decoder=dec, wavelengths=(4.0,)), V2Contour(blocks=1, decoder=dec)
    mt = MTMotion(blocks=2, decoder=attrs.evolve(dec, reads=reads, fusion=fusion))
    ventral = Stream("ventral", "image", [v1, v2, V4Color(blocks=2, decoder=dec)], mask=RandomMask(0.75))
    dorsal = Stream("dorsal", "video", [v1, v2, mt], mask=TubeMask(0.75))
    return Pathway(encoder=vit_tiny(width=32, heads=2, depth=4), streams=[ventral, dorsal], share=["V1", "V2"])


def _batch():
    torch.manual_seed(0)
    return {"video": torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)}


@pytest.mark.parametrize("fusion", ["learned", "mean"])
def test_gradients_reach_every_source_stage(fusion):
    """MT's loss alone moves the V1 stage it reads directly, beside V2 and its own stage."""
    model = _graph(reads=("V1",), fusion=fusion).build()
    out = model(_batch(), generator=torch.Generator().manual_seed(0))
    out.streams["dorsal"].losses["MT"].backward()
    for area in ("V1", "V2", "MT"):
        grads = [p.grad for p in model.stage("dorsal", area).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), area
    decoder = model.streams["dorsal"].decoders["MT"]
    assert len(decoder.sources) == (1 if fusion == "learned" else 0)
    if fusion == "learned":
        assert all(p.grad.abs().sum() > 0 for p in decoder.sources.parameters())


def test_the_connection_changes_what_the_decoder_sees():
    """Same weights and masks: the MT prediction depends on V1's output only through the
    connection; zeroing the learned source map gives the plain decoder's prediction."""
    torch.manual_seed(1)
    plain = _graph(reads=()).build()
    wired = _graph(reads=("V1",)).build()
    missing = wired.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("streams.dorsal.decoders.MT.sources.") for k in missing.missing_keys)
    assert not missing.unexpected_keys
    mt = lambda m: m(_batch(), generator=torch.Generator().manual_seed(3)).streams["dorsal"].predictions["MT"]
    assert not torch.allclose(mt(plain), mt(wired))
    for p in wired.streams["dorsal"].decoders["MT"].sources.parameters():
        p.data.zero_()
    torch.testing.assert_close(mt(plain), mt(wired))


def test_sharing_is_still_real():
    model = _graph().build()
    assert model.stage("dorsal", "V1") is model.stage("ventral", "V1")
    assert model.stage("dorsal", "V2") is model.stage("ventral", "V2")
    shapes = model(_batch()).streams["dorsal"].predictions["MT"].shape
    assert shapes[-1] == 2 * 16 * 16 * 3


def test_declared_in_the_graph_and_checked():
    graph = _graph(reads=("V1", "V2"), fusion="mean")
    again = pathway_from_dict(graph.to_dict())
    assert again.stream("dorsal").area("MT").decoder.reads == ("V1", "V2")
    assert again.stream("dorsal").area("MT").decoder.fusion == "mean"
    edited = apply_overrides(_graph(reads=()), ["dorsal.MT.decoder.reads=V1", "dorsal.MT.decoder.fusion=learned"])
    assert edited.stream("dorsal").area("MT").decoder.reads == ("V1",)
    with pytest.raises(ValueError, match="MT's decoder reads 'V4', which is not an area before MT"):
        _graph(reads=("V4",))
    with pytest.raises(SpecError, match="fusion must be 'learned' or 'mean'"):
        apply_overrides(graph, ["dorsal.MT.decoder.fusion=max"])
    with pytest.raises(ValueError, match="distinct area names"):
        DecoderSpec(reads=("V1", "V1"))
