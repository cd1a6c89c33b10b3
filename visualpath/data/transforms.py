"""Spatial transforms applied jointly to a clip and its side maps (V2's contours, any other).

A clip is ``(T, C, H, W)`` uint8 and each of its side maps ``(T, H, W)``: bool or uint8
with nonzero = set for a binary map (a contour), uint8 values for any other. A transform
takes the maps as one tensor (the contour), a ``{name: map}`` dict, or None, and returns
them the same way. Every random choice is made once per clip, so all frames and maps share
the same crop and flip and stay pixel-aligned. Binary maps are resized so that thin lines
survive downscaling (area average, then anything nonzero is set); uint8 maps bilinearly.

- :class:`TrainTransform` -- VideoMAE's multi-scale crop (scales 1, .875, .75, .66, 13 fixed
  offsets) or a random resized crop, horizontal flip, and optionally timm's RandAugment with
  the same operations on every frame.
- :func:`resize_short` and :func:`crop` -- the evaluation path (resize, then centre or three
  crops from :func:`visualpath.data.sampling.three_crop_boxes`).

Random erasing, the last finetuning augmentation, runs on the device in the finetuning step
on normalised pixels (timm's ``RandomErasing`` over a batch), one region per clip.
"""

from __future__ import annotations

import random
from typing import Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TrainTransform", "resize_short", "crop", "resize_contour", "resize_map", "multiscale_box", "MULTISCALE"]

MULTISCALE = (1.0, 0.875, 0.75, 0.66)


def _tv():
    """torchvision's functional transforms, imported on first use: ``import torchvision`` loads
    ``torch._dynamo``, more than a second of the start of every command that never resizes a
    clip. The data loader imports it before its workers start (:mod:`visualpath.loader`)."""
    from torchvision.transforms.v2 import functional

    return functional


def resize_contour(contour: Tensor, size: tuple[int, int]) -> Tensor:
    """``(T, H, W)`` contour -> ``(T, *size)``, keeping thin lines when shrinking."""
    x = (contour > 0).float()[:, None]
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, size) if x.shape[-2:] != size else x
    else:
        x = F.interpolate(x, size=size, mode="nearest")
    return (x[:, 0] > 0).to(torch.uint8) * 255


def resize_map(m: Tensor, size: tuple[int, int]) -> Tensor:
    """``(T, H, W)`` side map -> ``(T, *size)``: a bool map stays bool (thin lines kept), a
    uint8 map resizes bilinearly. (A lone uint8 map passed to :func:`resize` is the V2
    contour, binary.)"""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if m.dtype == torch.bool:
        return resize_contour(m, size) > 0
    return _tv().resize(m[:, None], list(size), antialias=True)[:, 0]


def _each(maps, fn):
    """Apply ``fn`` to one map, to every map of a dict, or pass None through."""
    if maps is None:
        return None
    if isinstance(maps, dict):
        return {k: fn(v) for k, v in maps.items()}
    return fn(maps)


def crop(clip: Tensor, maps, box: tuple[int, int, int, int]):
    """Crop ``(top, left, h, w)`` from ``(T, C, H, W)`` frames and their ``(T, H, W)`` maps."""
    top, left, h, w = box
    out = clip[..., top:top + h, left:left + w]
    return out, _each(maps, lambda m: m[..., top:top + h, left:left + w])


def resize(clip: Tensor, maps, size: tuple[int, int]):
    """Resize frames (bilinear, antialiased) and maps to ``size = (h, w)``; a single uint8
    map (the contour) is binary."""
    if tuple(clip.shape[-2:]) != tuple(size):
        clip = _tv().resize(clip, list(size), antialias=True)
    if isinstance(maps, Tensor) and maps.dtype == torch.uint8:
        return clip, resize_contour(maps, size) if tuple(maps.shape[-2:]) != tuple(size) else maps
    return clip, _each(maps, lambda m: resize_map(m, size))


def resize_short(clip: Tensor, maps, size: int):
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""
    H, W = clip.shape[-2:]
    scale = size / min(H, W)
    return resize(clip, maps, (max(size, round(H * scale)), max(size, round(W * scale))))


def multiscale_box(height: int, width: int, size: int, rng: np.random.Generator,
                   scales=MULTISCALE, max_distort: int = 1) -> tuple[int, int, int, int]:
    """VideoMAE's ``GroupMultiScaleCrop`` box (with ``more_fix_crop``): ``(top, left, h, w)``.

    Crop sides are ``min(H, W) * scale`` (snapped to ``size`` within 3 px), height and width
    scales at most ``max_distort`` steps apart, placed at one of 13 fixed offsets.
    """
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [size if abs(s - size) < 3 else s for s in sides]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    h, w = pairs[rng.integers(len(pairs))]
    ws, hs = (width - w) // 4, (height - h) // 4
    offsets = [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws),
               (2 * hs, 0), (2 * hs, 4 * ws), (4 * hs, 2 * ws), (0, 2 * ws),
               (hs, ws), (hs, 3 * ws), (3 * hs, ws), (3 * hs, 3 * ws)]
    top, left = offsets[rng.integers(len(offsets))]
    return int(top), int(left), int(h), int(w)


def resized_crop_box(height: int, width: int, rng: np.random.Generator, area=(0.08, 1.0),
                     ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """Inception-style random resized crop box (torchvision's rule, drawn from ``rng``)."""
    total = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target = total * rng.uniform(*area)
        aspect = float(np.exp(rng.uniform(*log_ratio)))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # fall back to a centre crop of the closest allowed aspect ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _same_randaugment(clip: Tensor, policy: str, rng: np.random.Generator) -> Tensor:
    """timm's RandAugment with identical random draws for every frame of the clip."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    augment = rand_augment_transform(policy, {"translate_const": int(min(clip.shape[-2:]) * 0.45)})
    saved_py, saved_np = random.getstate(), np.random.get_state()
    seed = int(rng.integers(2**31))
    frames = []
    try:
        for frame in clip.permute(0, 2, 3, 1).numpy():  # (H, W, C)
            random.seed(seed)
            np.random.seed(seed)
            frames.append(np.asarray(augment(Image.fromarray(frame))))
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _crop_kind(instance, attribute, value) -> None:
    if value not in ("multiscale", "resized"):
        raise ValueError(f"TrainTransform.crop must be 'multiscale' or 'resized', got {value!r}")


@attrs.frozen(kw_only=True)
class TrainTransform:
    """Training-time spatial augmentation of a clip and its contour.

    Attributes:
        size: output side in pixels.
        crop: ``"multiscale"`` (VideoMAE pretraining) or ``"resized"`` (finetuning).
        scales: multi-scale crop scales.
        area: random-resized-crop area range.
        flip: random horizontal flip (off for SSv2, whose labels name directions).
        randaugment: timm RandAugment policy string (VideoMAE finetuning uses
            ``"rand-m7-n4-mstd0.5-inc1"``), or None.
    """

    size: int = 224
    crop: Literal["multiscale", "resized"] = attrs.field(default="multiscale", validator=_crop_kind)
    scales: tuple[float, ...] = MULTISCALE
    area: tuple[float, float] = (0.08, 1.0)
    flip: bool = True
    randaugment: str | None = None

    def __call__(self, clip: Tensor, maps, rng: np.random.Generator):
        """``(T, C, H, W)`` uint8 clip and its ``(T, H, W)`` map(s) -> transformed, same layout.

        ``maps`` is the contour map, a ``{name: map}`` dict, or None. RandAugment changes
        the pixels only: its geometric operations would need the maps too, so it runs
        after the maps are final and only in finetuning, which reads none."""
        H, W = clip.shape[-2:]
        if self.crop == "multiscale":
            box = multiscale_box(H, W, self.size, rng, self.scales)
        else:
            box = resized_crop_box(H, W, rng, self.area)
        clip, maps = resize(*crop(clip, maps, box), (self.size, self.size))
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
            maps = _each(maps, lambda m: m.flip(-1))
        if self.randaugment:
            clip = _same_randaugment(clip, self.randaugment, rng)
        return clip, maps
