"""Spatial transforms applied jointly to a clip and its contour frames.

A clip is ``(T, C, H, W)`` uint8 and its contour frames ``(T, H, W)`` uint8 (nonzero =
contour). Every random choice is made once per clip, so all frames and the contour share
the same crop and flip and stay pixel-aligned. Contours are resized so that thin lines
survive downscaling (area average, then anything nonzero is a contour).

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
from torchvision.transforms.v2 import functional as TF

__all__ = ["TrainTransform", "resize_short", "crop", "resize_contour", "multiscale_box", "MULTISCALE"]

MULTISCALE = (1.0, 0.875, 0.75, 0.66)


def resize_contour(contour: Tensor, size: tuple[int, int]) -> Tensor:
    """``(T, H, W)`` contour -> ``(T, *size)``, keeping thin lines when shrinking."""
    x = (contour > 0).float()[:, None]
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        x = F.adaptive_avg_pool2d(x, size) if x.shape[-2:] != size else x
    else:
        x = F.interpolate(x, size=size, mode="nearest")
    return (x[:, 0] > 0).to(torch.uint8) * 255


def crop(clip: Tensor, contour: Tensor | None, box: tuple[int, int, int, int]):
    """Crop ``(top, left, h, w)`` from ``(T, C, H, W)`` frames and ``(T, H, W)`` contour."""
    top, left, h, w = box
    out = clip[..., top:top + h, left:left + w]
    return out, (contour[..., top:top + h, left:left + w] if contour is not None else None)


def resize(clip: Tensor, contour: Tensor | None, size: tuple[int, int]):
    """Resize frames (bilinear, antialiased) and contour to ``size = (h, w)``."""
    if tuple(clip.shape[-2:]) != tuple(size):
        clip = TF.resize(clip, list(size), antialias=True)
    if contour is not None and tuple(contour.shape[-2:]) != tuple(size):
        contour = resize_contour(contour, size)
    return clip, contour


def resize_short(clip: Tensor, contour: Tensor | None, size: int):
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""
    H, W = clip.shape[-2:]
    scale = size / min(H, W)
    return resize(clip, contour, (max(size, round(H * scale)), max(size, round(W * scale))))


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

    def __call__(self, clip: Tensor, contour: Tensor | None, rng: np.random.Generator):
        """``(T, C, H, W)`` uint8 clip and ``(T, H, W)`` contour -> transformed, same layout."""
        H, W = clip.shape[-2:]
        if self.crop == "multiscale":
            box = multiscale_box(H, W, self.size, rng, self.scales)
        else:
            box = resized_crop_box(H, W, rng, self.area)
        clip, contour = resize(*crop(clip, contour, box), (self.size, self.size))
        if self.flip and rng.random() < 0.5:
            clip = clip.flip(-1)
            contour = contour.flip(-1) if contour is not None else None
        if self.randaugment:
            clip = _same_randaugment(clip, self.randaugment, rng)
        return clip, contour
