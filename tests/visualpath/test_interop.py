"""VideoMAE weights in and out, checked against Hugging Face's own randomly initialised model."""

import pytest
import torch

from visualpath import vit_tiny
from visualpath.classifier import Encoder
from visualpath.interop import encoder_to_videomae, load_encoder
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
    report = load_encoder(ours, hf.state_dict())
    assert report.fresh == [] and report.ignored == []
    assert _features_equal(hf, ours) <= 1e-5


def test_our_encoder_exports_to_hugging_face_and_back():
    hf_source, ours = _hf(1), _ours()
    load_encoder(ours, hf_source.state_dict())
    target = _hf(2)
    target.load_state_dict(encoder_to_videomae(ours), strict=True)
    assert _features_equal(target, ours) <= 1e-5


def test_official_videomae_pretraining_keys_load_with_nothing_silently_dropped():
    hf, ours = _hf(3), _ours()
    load_encoder(ours, hf.state_dict())
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
    report = load_encoder(fresh, {"model": official})
    assert report.fresh == []
    assert report.ignored == ["decoder.blocks.0.norm1.weight", "encoder_to_decoder.weight", "mask_token"]
    assert _features_equal(hf, fresh) <= 1e-5


def test_a_shape_mismatch_names_the_key_and_both_shapes():
    hf = _hf()
    state = hf.state_dict()
    state["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(128, 64)
    with pytest.raises(ValueError, match=r"blocks.0.mlp.fc1.weight: the checkpoint holds shape \(128, 64\), "
                                         r"the encoder expects \(256, 64\)"):
        load_encoder(_ours(), state)


def test_a_videomae_checkpoint_initialises_the_dorsal_stream_of_a_pathway(tmp_path):
    from safetensors.torch import save_file

    from tests.conftest import tiny_pathway
    from visualpath.interop import load_checkpoint

    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    cfg = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                         num_hidden_layers=4, num_attention_heads=2, intermediate_size=256, use_mean_pooling=True,
                         layer_norm_eps=1e-6)
    hf = VideoMAEModel(cfg).eval()
    torch.save({"model": hf.state_dict()}, tmp_path / "videomae.pth")
    save_file(hf.state_dict(), str(tmp_path / "videomae.safetensors"))
    for name in ("videomae.pth", "videomae.safetensors"):
        model = tiny_pathway(width=64, heads=2).build()
        report = load_checkpoint(model, tmp_path / name, stream="dorsal")
        assert report.fresh == [] and len(report.loaded) == 2 + 4 * 12
        encoder = Encoder.from_pathway(model, "dorsal").eval()
        assert _features_equal(hf, encoder) <= 1e-5
        # V1 and V2 are shared: the ventral stream now runs the same first two blocks
        assert model.blocks("ventral")[0] is model.blocks("dorsal")[0]


def test_files_that_are_not_checkpoints_get_a_clear_error(tmp_path):
    from visualpath.interop import read_state_dict

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint that loads with weights_only=True"):
        read_state_dict(tmp_path / "notes.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="weights_only=True") as err:
        read_state_dict(tmp_path / "module.pth")
    message = str(err.value)
    assert "\n" not in message and len(message) > 300  # torch's whole explanation, on one line
    assert "module.pth" in message and "weights_only" in message.split(":", 2)[-1]
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors checkpoint"):
        read_state_dict(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
