"""One loader for every checkpoint format, checked against timm's and Hugging Face's own
randomly initialised models (nothing is downloaded)."""

import numpy as np
import pytest
import torch

from visualpath.classifier import Encoder, resize_positions
from visualpath.interop import (detect_format, encoder_from_checkpoint, encoder_to_timm, encoder_to_videomae,
                                load_checkpoint, timm_kwargs)
from visualpath.tokens import Layout
from visualpath.vit import vit_tiny

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402


def _randomise_biases(model, seed=0):
    """Non-zero biases and norms so that every mapped tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _timm_small(**kwargs):
    torch.manual_seed(0)
    args = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, num_classes=10)
    return _randomise_biases(VisionTransformer(**{**args, **kwargs}))


def _mae_table(h, w, dim):
    """MAE's 2-D sin-cos table written from its published recipe (numpy, float64):
    first half of the channels from the column index, second half from the row index."""
    def one_d(pos, d):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.concatenate([one_d(gw, dim // 2), one_d(gh, dim // 2)], axis=1)


def test_a_timm_vit_patch16_224_gives_the_same_features_in_our_encoder():
    torch.manual_seed(0)
    ref = _randomise_biases(timm.create_model("vit_tiny_patch16_224", pretrained=False))
    encoder, report = encoder_from_checkpoint(ref.state_dict())
    assert report.format == "vit" and report.fresh == []
    assert report.ignored == ["head.bias", "head.weight"]
    assert encoder.spec.width == 192 and encoder.spec.heads == 3 and encoder.grid == (14, 14)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ref.forward_features(x) - encoder.eval()(x, normalized=True)).abs().max() <= 1e-5


def test_our_image_encoders_export_to_timm_with_the_same_outputs():
    ref = _timm_small()
    ours, _ = encoder_from_checkpoint(ref.state_dict(), heads=2)
    fixed = Encoder(vit_tiny(width=64, depth=2, heads=2), Layout("image"), "grid").eval()  # a pathway stream's
    _randomise_biases(fixed, seed=1)
    x = torch.randn(2, 3, 64, 64)
    for encoder in (ours, fixed):
        target = VisionTransformer(**timm_kwargs(encoder, img_size=64)).eval()
        target.load_state_dict(encoder_to_timm(encoder, img_size=64), strict=True)
        with torch.no_grad():
            assert (target.forward_features(x) - encoder(x, normalized=True)).abs().max() <= 1e-5


def test_an_mae_pretraining_checkpoint_loads_with_its_fixed_table_recognised():
    ref = _timm_small()
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("head.")}
    table = torch.from_numpy(_mae_table(4, 4, 64)).float()
    state["pos_embed"] = torch.cat([torch.zeros(1, 64), table])[None]  # MAE: a zero entry for the class token
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 64),
                  "decoder_pos_embed": torch.zeros(1, 17, 32), "decoder_blocks.0.norm1.weight": torch.ones(32),
                  "decoder_norm.weight": torch.ones(32), "decoder_pred.weight": torch.zeros(768, 32)})
    encoder, report = encoder_from_checkpoint({"model": state}, heads=2)
    assert encoder.position_kind == "grid" and encoder.pos_embed is None  # fixed: any input size works
    assert report.notes == ["pos_embed equals the fixed grid sin-cos table"]
    assert set(report.ignored) == {"pos_embed", "mask_token", "decoder_embed.weight", "decoder_pos_embed",
                                   "decoder_blocks.0.norm1.weight", "decoder_norm.weight", "decoder_pred.weight"}
    with torch.no_grad():
        ref.pos_embed.copy_(state["pos_embed"])
        x = torch.randn(1, 3, 64, 64)
        assert (ref.forward_features(x) - encoder.eval()(x, normalized=True)).abs().max() <= 1e-5

    # into a pathway's ventral stream: blocks and embedding load, the rest is reported
    from tests.conftest import tiny_pathway

    model = tiny_pathway(width=64, heads=2).build()
    report = load_checkpoint(model, {"model": state}, stream="ventral")
    assert {"cls_token", "norm.weight", "norm.bias", "pos_embed", "mask_token"} <= set(report.ignored)
    assert len(report.loaded) + len(report.ignored) == len(state)  # nothing dropped silently
    assert torch.equal(model.blocks("ventral")[1].mlp.fc1.weight, state["blocks.1.mlp.fc1.weight"])


@pytest.mark.parametrize("new", [(2, 2), (7, 5)])
def test_a_learned_table_is_resized_as_timm_resizes_it(new):
    ref = _timm_small()
    encoder, report = encoder_from_checkpoint(ref.state_dict(), heads=2, grid=new)
    assert f"resized from grid (4, 4) to {new}" in " ".join(report.notes)
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), list(new), num_prefix_tokens=1, antialias=False)
    assert (encoder.pos_embed.detach() - expected).abs().max() <= 1e-6

    # at run time too: an encoder of grid (4, 4) fed 112-pixel images equals timm at 112
    small, _ = encoder_from_checkpoint(ref.state_dict(), heads=2)
    big = _timm_small(img_size=112)
    big.load_state_dict({**ref.state_dict(), "pos_embed": resample_abs_pos_embed(
        ref.pos_embed.detach(), [7, 7], num_prefix_tokens=1, antialias=False)})
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert (big.eval().forward_features(x) - small.eval()(x, normalized=True)).abs().max() <= 1e-5


def test_a_video_table_is_resized_frame_by_frame():
    table = torch.randn(1, 2 * 4 * 4, 8)
    resized = resize_positions(table, (2, 4, 4), (2, 6, 3))
    for t in range(2):
        frame = resample_abs_pos_embed(table[:, t * 16:(t + 1) * 16], [6, 3], num_prefix_tokens=0, antialias=False)
        assert (resized[:, t * 18:(t + 1) * 18] - frame).abs().max() <= 1e-6
    # another frame count: linear in time between the resized frames
    four = resize_positions(table, (2, 4, 4), (4, 4, 4)).reshape(4, 16, 8)
    first, last = table.reshape(2, 16, 8)
    assert torch.allclose(four[0], first) and torch.allclose(four[3], last)
    assert torch.allclose(four[1], 0.75 * first + 0.25 * last, atol=1e-6)


def _hf_video(cls_name, mean_pooling):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                      decoder_num_hidden_layers=1, decoder_hidden_size=32,
                                      decoder_num_attention_heads=2, decoder_intermediate_size=64,
                                      use_mean_pooling=mean_pooling, layer_norm_eps=1e-6, num_labels=5)
    return _randomise_biases(getattr(transformers, cls_name)(cfg))


@pytest.mark.parametrize("cls_name", ["VideoMAEModel", "VideoMAEForPreTraining", "VideoMAEForVideoClassification"])
def test_every_hugging_face_videomae_model_builds_an_equal_encoder(cls_name):
    pytest.importorskip("transformers")
    hf = _hf_video(cls_name, mean_pooling=cls_name != "VideoMAEForVideoClassification")
    encoder, report = encoder_from_checkpoint(hf.state_dict(), heads=2)
    assert report.format == "huggingface-videomae" and report.fresh == []
    assert all(k.startswith(("decoder.", "encoder_to_decoder", "mask_token", "classifier", "fc_norm"))
               for k in report.ignored)
    base = hf if cls_name == "VideoMAEModel" else hf.videomae
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        theirs = base(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state
        assert (theirs - encoder.eval()(x, normalized=True)).abs().max() <= 1e-5
    if encoder.norm is None:  # exported back, strictly
        hf.base_model.load_state_dict(encoder_to_videomae(encoder), strict=True)


def test_official_videomae_finetuning_keys_with_backbone_prefix_and_module_wrapper():
    pytest.importorskip("transformers")
    hf = _hf_video("VideoMAEModel", mean_pooling=True)
    ours, _ = encoder_from_checkpoint(hf.state_dict(), heads=2)
    official = {}
    for key, value in ours.state_dict().items():
        key = "backbone." + key.replace("embed.proj", "patch_embed.proj")
        if key.endswith("attn.qkv.bias"):
            q, _, v = value.chunk(3)
            official[key.replace("qkv.bias", "q_bias")], official[key.replace("qkv.bias", "v_bias")] = q, v
        else:
            official[key] = value
    official.update({"fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64),
                     "head.weight": torch.zeros(5, 64), "head.bias": torch.zeros(5)})
    assert detect_format({"module": official}) == "videomae"
    encoder, report = encoder_from_checkpoint({"module": official}, heads=2)
    assert report.fresh == [] and report.ignored == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert (encoder.eval()(x, normalized=True) - ours.eval()(x, normalized=True)).abs().max() == 0


def test_detection_names_each_format_and_rejects_the_unknown(tmp_path):
    from safetensors.torch import save_file

    from tests.conftest import tiny_pathway

    model = tiny_pathway(width=64, heads=2).build()
    save_file(model.state_dict(), str(tmp_path / "pathway.safetensors"))
    assert detect_format(_timm_small().state_dict()) == "vit"
    assert detect_format(Encoder(vit_tiny(depth=1), Layout("image"), "grid").state_dict()) == "visualpath"
    other = tiny_pathway(width=64, heads=2).build()
    report = load_checkpoint(other, tmp_path / "pathway.safetensors")
    assert report.format == "visualpath" and report.fresh == [] and report.ignored == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(ValueError, match="unrecognised checkpoint format .*fc.weight"):
        detect_format({"fc.weight": torch.zeros(2, 2)})


def test_image_weights_inflate_into_a_video_stream_but_not_the_reverse():
    from tests.conftest import tiny_pathway

    model = tiny_pathway(width=64, heads=2).build()
    state = _timm_small().state_dict()
    report = load_checkpoint(model, state, stream="dorsal")
    assert "2-D patch embedding inflated over 2 frames (divided by 2)" in report.notes
    w = model.streams["dorsal"].embed.proj.weight
    assert torch.allclose(w.sum(2), state["patch_embed.proj.weight"], atol=1e-6)
    video = _hf_video("VideoMAEModel", mean_pooling=True).state_dict()
    with pytest.raises(ValueError, match="tube embedding .* cannot initialise an image encoder"):
        load_checkpoint(model, video, stream="ventral")


def test_learned_position_tables_keep_their_place_in_layer_decay():
    from visualpath.optim import _layer_id

    assert _layer_id("encoder.pos_embed", 12) == 0 and _layer_id("encoder.cls_token", 12) == 0
    assert _layer_id("encoder.norm.weight", 12) == 13


@pytest.mark.parametrize("cls_name", ["VideoMAEModel", "VideoMAEForPreTraining", "VideoMAEForVideoClassification"])
def test_files_written_by_save_pretrained_load_with_their_query_and_value_biases(cls_name, tmp_path):
    """save_pretrained stores the biases as attention.attention.q_bias / v_bias, not as the
    in-memory query.bias / value.bias: both spellings must reach the encoder."""
    from safetensors import safe_open

    pytest.importorskip("transformers")
    hf = _hf_video(cls_name, mean_pooling=cls_name != "VideoMAEForVideoClassification")
    hf.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        on_disk = list(f.keys())
    assert any(k.endswith("attention.attention.q_bias") for k in on_disk)  # the spelling on disk
    encoder, report = encoder_from_checkpoint(tmp_path / "model.safetensors", heads=2)
    assert report.fresh == [] and not report.warnings, str(report)
    base = hf if cls_name == "VideoMAEModel" else hf.videomae
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        theirs = base(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state
        assert (theirs - encoder.eval()(x, normalized=True)).abs().max() <= 1e-5


def test_a_load_that_drops_encoder_weights_says_so(caplog):
    import logging

    pytest.importorskip("transformers")
    hf = _hf_video("VideoMAEModel", mean_pooling=True)
    state = dict(hf.state_dict())
    state["encoder.layer.0.attention.attention.query.scale"] = torch.ones(64)  # an encoder weight we do not know
    with caplog.at_level(logging.WARNING):
        _, report = encoder_from_checkpoint(state, heads=2)
    assert any("look like encoder weights were not used" in w for w in report.warnings)
    assert "WARNING" in str(report) and "were not used" in caplog.text
