import numpy as np
import pytest
import torch

from visualpath.data import TrainTransform
from visualpath.data.transforms import MULTISCALE, multiscale_box, resize_contour


def _clip_with_mask(T=4, H=96, W=128):
    """A clip with a bright rectangle moving, and the rectangle's region as its contour map."""
    clip = torch.zeros(T, 3, H, W, dtype=torch.uint8)
    mask = torch.zeros(T, H, W, dtype=torch.uint8)
    for t in range(T):
        top, left = 20 + 2 * t, 30 + 3 * t
        clip[t, :, top:top + 40, left:left + 50] = 255
        mask[t, top:top + 40, left:left + 50] = 255
    return clip, mask


@pytest.mark.parametrize("crop", ["multiscale", "resized"])
def test_clip_and_contour_stay_pixel_aligned_through_crop_resize_and_flip(crop):
    clip, mask = _clip_with_mask()
    transform = TrainTransform(size=64, crop=crop)
    flips = set()
    for seed in range(12):
        out, c = transform(clip, mask, np.random.default_rng(seed))
        assert out.shape == (4, 3, 64, 64) and c.shape == (4, 64, 64) and out.dtype == c.dtype == torch.uint8
        bright, marked = out[:, 0] > 127, c > 0
        union = (bright | marked).sum()
        if union:
            assert (bright & marked).sum() / union > 0.8  # same pixels, up to resampling
        flips.add(bool(out[0, 0, :, :32].float().mean() < out[0, 0, :, 32:].float().mean()))
    assert len(flips) == 2  # both orientations occur


def test_multiscale_boxes_follow_videomae():
    rng = np.random.default_rng(0)
    sides = {int(160 * s) for s in MULTISCALE} | {112}
    for _ in range(100):
        top, left, h, w = multiscale_box(160, 200, 112, rng)
        assert h in sides and w in sides and top + h <= 160 and left + w <= 200


def test_contour_survives_downscaling():
    contour = torch.zeros(1, 128, 128, dtype=torch.uint8)
    contour[0, 50, :] = 255  # one-pixel line
    small = resize_contour(contour, (32, 32))
    assert small[0, 12].all() and small.sum() // 255 == 32


def test_randaugment_applies_the_same_operations_to_every_frame():
    rng0 = np.random.default_rng(0)
    frame = torch.from_numpy(rng0.integers(0, 256, (3, 48, 48), dtype=np.uint8))
    clip = frame[None].repeat(5, 1, 1, 1)
    transform = TrainTransform(size=48, crop="resized", randaugment="rand-m9-n4-mstd0.5-inc1")
    changed = 0
    for seed in range(6):
        out, _ = transform(clip, None, np.random.default_rng(seed))
        assert all(torch.equal(out[0], out[t]) for t in range(1, 5))
        changed += not torch.equal(out[0], transform(clip[:1], None, np.random.default_rng(seed + 100))[0][0])
    assert changed


def test_bad_crop_kind():
    with pytest.raises(ValueError, match="'multiscale' or 'resized'"):
        TrainTransform(crop="center")
