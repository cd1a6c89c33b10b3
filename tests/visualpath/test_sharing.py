"""Declared sharing: one set of weights for shared stages, independence for the rest."""

import pytest
import torch

from tests.conftest import random_batch, tiny_pathway

STAGES = {"ventral": ["V1", "V2", "V4"], "dorsal": ["V1", "V2", "MT"]}


def _params(stage):
    return list(stage.parameters())


@pytest.mark.parametrize(
    "share, shared_pairs",
    [
        ("none", []),
        ("partial", [("V1", "V1"), ("V2", "V2")]),
        (["V1", "V2"], [("V1", "V1"), ("V2", "V2")]),
        (["V1"], [("V1", "V1")]),
        ("all", [("V1", "V1"), ("V2", "V2"), ("V4", "MT")]),
        (["V1", "V2", ("V4", "MT")], [("V1", "V1"), ("V2", "V2"), ("V4", "MT")]),
    ],
)
def test_parameter_identity_and_independence(share, shared_pairs):
    model = tiny_pathway(share=share).build()
    for v_area, d_area in zip(STAGES["ventral"], STAGES["dorsal"]):
        v, d = _params(model.stage("ventral", v_area)), _params(model.stage("dorsal", d_area))
        if (v_area, d_area) in shared_pairs:
            assert all(p is q for p, q in zip(v, d))
        else:
            ids = {id(p) for p in v}
            assert not any(id(q) in ids for q in d)
    # embeddings and decoders are never shared
    assert model.streams["ventral"].embed.proj.weight is not model.streams["dorsal"].embed.proj.weight
    v_dec = {id(p) for p in model.streams["ventral"].decoders.parameters()}
    assert not any(id(p) in v_dec for p in model.streams["dorsal"].decoders.parameters())


@pytest.mark.parametrize("share, n_stage_blocks", [("none", 8), ("partial", 6), ("all", 4)])
def test_shared_stages_appear_once_in_the_state_dict(share, n_stage_blocks):
    model = tiny_pathway(share=share).build()
    state = model.state_dict()
    blocks = {k.rsplit(".attn.qkv.weight")[0] for k in state if k.endswith("attn.qkv.weight") and ".stages." in k}
    assert len(blocks) == n_stage_blocks
    # every parameter tensor is stored exactly once
    assert len({v.data_ptr() for v in state.values()}) == len(state)
    assert len(state) == len(list(model.parameters()))  # no buffers: the pixel statistics are constants


def test_shared_weights_stay_shared_through_training_and_reload(tmp_path):
    model = tiny_pathway(share="partial").build()
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    model(random_batch()).loss.backward()
    optim.step()
    assert model.stage("ventral", "V1")[0].attn.qkv.weight is model.stage("dorsal", "V1")[0].attn.qkv.weight
    torch.save(model.state_dict(), tmp_path / "w.pt")
    fresh = tiny_pathway(share="partial").build()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(fresh.stage("dorsal", "V1")[0].attn.qkv.weight, model.stage("ventral", "V1")[0].attn.qkv.weight)


@pytest.mark.parametrize("stream", ["ventral", "dorsal"])
@pytest.mark.parametrize("area_index", [0, 1, 2])
@pytest.mark.parametrize("share", ["none", "partial"])
def test_gradients_reach_only_the_stages_read_and_the_own_decoder(stream, area_index, share):
    torch.manual_seed(0)
    model = tiny_pathway(share=share).build()
    area = STAGES[stream][area_index]
    out = model(random_batch())
    out.streams[stream].losses[area].backward()

    expected = set()
    for name in STAGES[stream][: area_index + 1]:
        expected |= {id(p) for p in model.stage(stream, name).parameters()}
    expected |= {id(p) for p in model.streams[stream].decoders[area].parameters()}
    expected |= {id(p) for p in model.streams[stream].embed.parameters()}
    for name, p in model.named_parameters():
        reached = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert reached == (id(p) in expected), name
