"""VideoMAE weights in and out, checked against Hugging Face's own randomly initialised model."""

import pytest
import torch

from visualpath import vit_tiny
from visualpath.classifier import Encoder
from visualpath.interop import encoder_to_videomae, load_videomae
from visualpath.tokens import Layout

transformers = pytest.importorskip("transformers")


def _hf(seed=0):
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    cfg = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                         num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, qkv_bias=True,
                         use_mean_pooling=True, layer_norm_eps=1e-6)
    model = VideoMAEModel(cfg).eval()
    with torch.no_grad():  # random, non-zero biases so the mapping of every bias is tested
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def _ours():
    spec = vit_tiny(width=64, depth=2, heads=2)
    return Encoder(spec, Layout("video", patch=16, tube=2), "flat").eval()


def _features_equal(hf, ours):
    x = torch.randn(2, 3, 4, 32, 32)  # already normalised pixels (B, C, T, H, W)
    with torch.no_grad():
        theirs = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state
        mine = ours(x, normalized=True)
    return (theirs - mine).abs().max().item()


def test_hugging_face_videomae_loads_into_our_encoder_with_equal_features():
    hf, ours = _hf(), _ours()
    report = load_videomae(ours, hf.state_dict())
    assert report.fresh == [] and report.ignored == []
    assert _features_equal(hf, ours) <= 1e-5


def test_our_encoder_exports_to_hugging_face_and_back():
    hf_source, ours = _hf(1), _ours()
    load_videomae(ours, hf_source.state_dict())
    target = _hf(2)
    target.load_state_dict(encoder_to_videomae(ours), strict=True)
    assert _features_equal(target, ours) <= 1e-5


def test_official_videomae_pretraining_keys_load_with_nothing_silently_dropped():
    hf, ours = _hf(3), _ours()
    load_videomae(ours, hf.state_dict())
    official = {}
    for key, value in ours.state_dict().items():
        key = key.replace("embed.proj", "patch_embed.proj")
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            official["encoder." + key.replace("qkv.bias", "q_bias")] = q
            official["encoder." + key.replace("qkv.bias", "v_bias")] = v
        else:
            official["encoder." + key] = value
    official.update({"decoder.blocks.0.norm1.weight": torch.ones(64), "mask_token": torch.zeros(1, 1, 64),
                     "encoder_to_decoder.weight": torch.zeros(64, 64)})
    fresh = _ours()
    report = load_videomae(fresh, {"model": official})
    assert report.fresh == []
    assert report.ignored == ["decoder.blocks.0.norm1.weight", "encoder_to_decoder.weight", "mask_token"]
    assert _features_equal(hf, fresh) <= 1e-5


def test_a_shape_mismatch_names_the_key_and_both_shapes():
    hf = _hf()
    state = hf.state_dict()
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(128, 64)
    with pytest.raises(ValueError, match=r"blocks.0.mlp.fc1.weight: the checkpoint holds shape \(128, 64\), "
                                         r"the encoder expects \(256, 64\)"):
        load_videomae(_ours(), state)
