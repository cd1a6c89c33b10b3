import pytest
import torch
from einops import rearrange

from areas import V4Color
from visualpath import TargetInput
from visualpath.tokens import Layout


def _target(area, pixels, modality):
    layout = Layout(modality, tube=2 if modality == "video" else 1)
    return area.target(TargetInput(pixels=pixels, layout=layout, batch={}))


def test_image_target_is_mae_norm_pix(photos):
    target = _target(V4Color(), photos, "image")
    # MAE's patchify + norm_pix_loss, written out
    x = photos.reshape(3, 3, 4, 16, 4, 16)
    x = torch.einsum("nchpwq->nhwpqc", x).reshape(3, 16, 768)
    ref = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6) ** 0.5
    torch.testing.assert_close(target, ref)


def test_video_target_is_videomae_per_channel_norm(photos):
    clip = torch.stack([photos[0], photos[1], photos[2], photos[0]], dim=1)[None]  # (1, 3, 4, 64, 64)
    target = _target(V4Color(), clip, "video")
    # VideoMAE's pretraining target, written out
    x = rearrange(clip, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c", p0=2, p1=16, p2=16)
    x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    ref = rearrange(x, "b n p c -> b n (p c)")
    assert target.shape == (1, 32, 1536)
    torch.testing.assert_close(target, ref)


def test_video_target_of_whole_tubes_keeps_colour(photos):
    """per_channel=False standardises each 2x16x16x3 tube as one vector (MAE's rule, on tubes):
    a flat coloured tube keeps its colour, which per-channel standardisation turns to noise."""
    clip = torch.stack([photos[0], photos[1], photos[2], photos[0]], dim=1)[None]
    target = _target(V4Color(per_channel=False), clip, "video")
    x = rearrange(clip, "b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2 c)", p0=2, p1=16, p2=16)
    ref = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6) ** 0.5
    torch.testing.assert_close(target, ref)

    flat = torch.tensor([0.8, 0.3, 0.2])[None, :, None, None, None].expand(1, 3, 2, 16, 16).clone()
    flat = flat + 1e-3 * torch.randn(flat.shape, generator=torch.Generator().manual_seed(0))
    whole = _target(V4Color(per_channel=False), flat, "video")[0, 0].view(-1, 3)
    per = _target(V4Color(), flat, "video")[0, 0].view(-1, 3)
    assert whole[:, 0].mean() > 1 > 0 > whole[:, 2].mean()  # red high, blue low, in every pixel
    assert (whole.std(0) < 0.01).all()
    assert per.mean(0).abs().max() < 1e-4 and (per.std(0) > 0.9).all()  # each channel its own noise


def test_raw_pixels_without_normalisation(photos):
    target = _target(V4Color(normalize=False), photos, "image")
    assert target.min() >= 0 and target.max() <= 1
    assert target[0, 0, :3].tolist() == photos[0, :, 0, 0].tolist()


@pytest.mark.parametrize("modality, shape", [("image", (2, 3, 32, 32)), ("video", (2, 3, 4, 32, 32))])
def test_constant_input_gives_finite_targets(modality, shape):
    assert torch.isfinite(_target(V4Color(), torch.full(shape, 0.5), modality)).all()
