import pytest
import torch
from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding

from visualpath.tokens import Layout, PatchEmbed, normalize_pixels, sincos_flat, sincos_grid


def test_video_patchify_matches_hand_indexing():
    layout = Layout("video", patch=4, tube=2)
    x = torch.randn(2, 3, 4, 8, 12)
    tokens = layout.patchify(x)
    assert tokens.shape == (2, 2 * 2 * 3, 2 * 4 * 4 * 3)
    # token (t=1, h=0, w=2) -> index 1*6 + 0*3 + 2 = 8; value (pt=1, ph=3, pw=0, c=2)
    value = tokens[1, 8].view(2, 4, 4, 3)[1, 3, 0, 2]
    assert value == x[1, 2, 2 * 1 + 1, 0 * 4 + 3, 2 * 4 + 0]


def test_image_patchify_matches_mae_order():
    layout = Layout("image", patch=4)
    x = torch.randn(1, 3, 8, 8)
    # MAE: x.reshape(N, C, h, p, w, q) -> einsum('nchpwq->nhwpqc')
    ref = torch.einsum("nchpwq->nhwpqc", x.reshape(1, 3, 2, 4, 2, 4)).reshape(1, 4, 48)
    torch.testing.assert_close(layout.patchify(x), ref)


@pytest.mark.parametrize("modality, shape", [("image", (2, 3, 32, 48)), ("video", (2, 3, 4, 32, 16))])
def test_unpatchify_inverts_patchify(modality, shape):
    layout = Layout(modality, patch=16, tube=2 if modality == "video" else 1)
    x = torch.randn(shape)
    grid = layout.grid(x.shape)
    torch.testing.assert_close(layout.unpatchify(layout.patchify(x), grid), x)


def test_patch_embedding_any_size_divisible_by_the_patch():
    embed = PatchEmbed(Layout("video", tube=2), 32)
    assert embed(torch.randn(1, 3, 6, 48, 80)).shape == (1, 3 * 3 * 5, 32)
    embed = PatchEmbed(Layout("image"), 32)
    assert embed(torch.randn(1, 3, 64, 32)).shape == (1, 4 * 2, 32)


def test_flat_table_equals_videomae():
    ref = get_sinusoid_encoding_table(1568, 384)[0]
    torch.testing.assert_close(sincos_flat(1568, 384), ref, atol=1e-6, rtol=0)


def test_grid_table_equals_mae():
    ref = build_2d_sinusoidal_position_embedding(14, 14, 768)
    half = ref.shape[-1] // 2
    mae_order = torch.cat([ref[:, half:], ref[:, :half]], dim=1)  # MAE's [w | h] layout
    torch.testing.assert_close(sincos_grid((14, 14), 768), mae_order, atol=1e-6, rtol=0)


def test_space_time_grid_table_shares_the_spatial_code_across_frames():
    table = sincos_grid((3, 4, 5), 64).view(3, 20, 64)
    spatial = sincos_grid((4, 5), 64)
    # frame differences are a function of time only
    torch.testing.assert_close(table[1] - table[0] - (table[1, :1] - table[0, :1]), torch.zeros(20, 64), atol=1e-6, rtol=0)
    assert not torch.allclose(table[0], spatial)  # time 0 still carries its temporal code


@pytest.mark.parametrize(
    "layout, shape, message",
    [
        (Layout("image"), (2, 3, 4, 32, 32), "image batch"),
        (Layout("video", tube=2), (2, 3, 32, 32), "video batch"),
        (Layout("video", tube=2), (2, 3, 3, 32, 32), "T divisible by 2"),
        (Layout("image"), (2, 3, 30, 32), "divisible by 16"),
        (Layout("image"), (2, 1, 32, 32), "(B, 3, H, W)"),
    ],
)
def test_bad_shapes_name_the_expected_form(layout, shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layout.grid(shape)


@pytest.mark.parametrize("layout, shape", [(Layout("video", patch=8, tube=2), (2, 3, 4, 16, 24)),
                                           (Layout("image", patch=8), (3, 3, 16, 24))])
def test_embedding_the_visible_tokens_equals_gathering_the_full_embedding(layout, shape):
    torch.manual_seed(0)
    embed = PatchEmbed(layout, 32)
    pixels = torch.rand(shape)
    full = embed(normalize_pixels(pixels))  # (B, N, D) by the convolution
    keep = torch.stack([torch.randperm(full.shape[1])[:3] for _ in range(shape[0])])
    visible = embed.visible(pixels, keep)
    torch.testing.assert_close(visible, torch.gather(full, 1, keep[..., None].expand(-1, -1, 32)), atol=1e-5, rtol=1e-5)
    visible.sum().backward()  # the convolution's weights learn from the visible tokens
    assert embed.proj.weight.grad.abs().sum() > 0


def test_a_training_step_embeds_only_the_visible_tokens():
    from visualpath.model import _gather
    from areas import V4Color
    from visualpath import Pathway, Stream, TubeMask, vit_tiny

    pathway = Pathway(encoder=vit_tiny(depth=1, width=32, heads=2, patch=8),
                      streams=[Stream("dorsal", "video", [V4Color(blocks=1)], mask=TubeMask(0.75))])
    model = pathway.build()
    clip = torch.randint(0, 256, (2, 3, 4, 16, 16), dtype=torch.uint8)
    calls = []
    model.streams["dorsal"].embed.proj.register_forward_hook(lambda *a: calls.append(a))
    out = model({"video": clip}, generator=torch.Generator().manual_seed(0))
    assert calls == []  # the convolution over every token never ran
    stream = pathway.streams[0]
    pixels = clip.float() / 255
    grid = (2, 2, 2)
    keep = out.streams["dorsal"].mask.keep
    torch.testing.assert_close(model._visible_tokens(stream, pixels, grid, keep),
                               _gather(model._tokens(stream, pixels, grid), keep), atol=1e-5, rtol=1e-5)
