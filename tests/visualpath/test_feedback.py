"""Feedback links: a second pass of earlier stages conditioned on a later stage's output."""

import pytest
import torch

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from visualpath import DecoderSpec, Feedback, Pathway, RandomMask, Stream, TubeMask
from visualpath.graph import pathway_from_dict
from visualpath.overrides import apply_overrides
from visualpath.spec import SpecError
from visualpath.vit import vit_tiny


def _graph(feedback=(Feedback("MT", "V1"),)):
    dec = DecoderSpec(width=32, depth=1, heads=2)
    v1, v2 = V1Gabor(blocks=1, decoder=dec, wavelengths=(4.0,)), V2Contour(blocks=1, decoder=dec)
    ventral = Stream("ventral", "image", [v1, v2, V4Color(blocks=2, decoder=dec)], mask=RandomMask(0.75))
    dorsal = Stream("dorsal", "video", [v1, v2, MTMotion(blocks=2, decoder=dec)], mask=TubeMask(0.75),
                    feedback=feedback)
    return Pathway(encoder=vit_tiny(width=32, heads=2, depth=4), streams=[ventral, dorsal], share=["V1", "V2"])


def _clips():
    torch.manual_seed(0)
    return torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)


def test_a_closed_gate_is_the_feedforward_graph():
    """The gate starts at 0: same weights, same features and losses as without the link."""
    torch.manual_seed(0)
    plain = _graph(feedback=()).build().eval()
    looped = _graph().build().eval()
    missing = looped.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing.missing_keys) == sorted(f"streams.dorsal.feedback.MT_to_V1.{k}"
                                                  for k in ("gate", "norm.weight", "norm.bias", "proj.weight", "proj.bias"))
    x = _clips()
    for a, b in zip(plain.features(x, "dorsal").values(), looped.features(x, "dorsal").values()):
        torch.testing.assert_close(a, b)
    gen = lambda: torch.Generator().manual_seed(1)
    torch.testing.assert_close(plain({"video": x}, generator=gen()).loss, looped({"video": x}, generator=gen()).loss)


def test_an_open_gate_is_a_second_pass_by_hand():
    """With the gate open, MT's features equal the blocks run by hand: pass 1 to MT, then
    V1 again on its input plus the top-down map of MT, then V2 and MT again."""
    torch.manual_seed(0)
    model = _graph().build().eval()
    link = model.streams["dorsal"].feedback["MT_to_V1"]
    link.gate.data.fill_(0.7)
    x = _clips()
    h0 = model.embed(x, "dorsal")
    h = h0
    for area in ("V1", "V2", "MT"):
        for block in model.stage("dorsal", area):
            h = block(h)
    h = h0 + torch.tanh(torch.tensor(0.7)) * link.proj(link.norm(h))
    by_hand = {}
    for area in ("V1", "V2", "MT"):
        for block in model.stage("dorsal", area):
            h = block(h)
        by_hand[area] = h
    feats = model.features(x, "dorsal")
    for area in ("V1", "V2", "MT"):
        torch.testing.assert_close(feats[area], by_hand[area])
    blocks = dict(model.forward_encoder("dorsal", h0, by="block"))
    assert list(blocks) == ["block1", "block2", "block3", "block4"]
    torch.testing.assert_close(blocks["block4"], by_hand["MT"])
    # the ventral stream has no link: unchanged, though it shares V1 and V2
    assert model.stage("ventral", "V1") is model.stage("dorsal", "V1")


def test_gradients_reach_the_link_and_every_stage():
    model = _graph().build()
    out = model({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    link = model.streams["dorsal"].feedback["MT_to_V1"]
    assert link.gate.grad is not None and link.gate.grad.abs() > 0  # the closed gate learns to open
    model.zero_grad()
    link.gate.data.fill_(0.5)
    out = model({"video": _clips()}, generator=torch.Generator().manual_seed(0))
    out.streams["dorsal"].losses["V1"].backward()  # V1's loss reaches MT's stage through the link
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stage("dorsal", "MT").parameters())
    assert all(p.grad.abs().sum() > 0 for p in link.parameters())


def test_declared_in_the_graph_and_checked():
    again = pathway_from_dict(_graph().to_dict())
    assert again.stream("dorsal").feedback == (Feedback("MT", "V1"),)
    edited = apply_overrides(_graph(feedback=()), ["dorsal.feedback=MT>V2"])
    assert edited.stream("dorsal").feedback == (Feedback("MT", "V2"),)
    assert apply_overrides(_graph(), ["dorsal.feedback=none"]).stream("dorsal").feedback == ()
    with pytest.raises(ValueError, match="must run from a later area to an earlier one"):
        _graph(feedback=(Feedback("V1", "MT"),))
    with pytest.raises(ValueError, match="names 'V4', which is not an area of this stream"):
        _graph(feedback=(Feedback("V4", "V1"),))
    with pytest.raises(SpecError, match="SOURCE>TARGET"):
        apply_overrides(_graph(), ["dorsal.feedback=MT-V1"])
