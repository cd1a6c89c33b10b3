"""ADE20K in its official layout, and a small generated set in the same layout.

``ADEChallengeData2016/`` (the release's folder, or a folder holding it)::

    images/training/ADE_train_00000001.jpg      annotations/training/ADE_train_00000001.png
    images/validation/ADE_val_00000001.jpg      annotations/validation/ADE_val_00000001.png

Annotations are 8-bit PNGs: 0 is "other" (not scored), 1-150 the classes, read as 0-149
with 0 mapped to the ignore index 255 (the usual ``reduce_zero_label``).

Training views follow the common ADE20K pipeline: the image rescaled by a random factor in
[0.5, 2.0] of the crop size on its short side, a random ``crop x crop`` window (padded with
the ignore index where the image is smaller), a random horizontal flip. Evaluation takes
the whole image with its short side at the crop size (sides rounded to multiples of 16), and
the logits are resized back to the annotation's size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from visualpath.data.formats import DatasetFormatError

__all__ = ["ADE20K", "ade20k_root", "write_ade20k_like", "IGNORE"]

IGNORE = 255
SPLITS = ("training", "validation")


def ade20k_root(root: str | os.PathLike) -> Path:
    """The folder holding ``images/`` and ``annotations/`` (``root`` or its
    ``ADEChallengeData2016``), checked.

    Raises:
        DatasetFormatError: naming what is missing and the expected layout.
    """
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    missing = [f"{kind}/{split}" for kind in ("images", "annotations") for split in SPLITS
               if not (root / kind / split).is_dir()]
    if missing:
        raise DatasetFormatError(
            f"{root} is not an ADE20K release: missing {', '.join(missing)} (expected "
            "ADEChallengeData2016/images/{training,validation}/*.jpg and "
            "annotations/{training,validation}/*.png)")
    return root


class ADE20K(Dataset):
    """Images ``(3, H, W)`` uint8 and labels ``(H, W)`` int64 (0-149, 255 ignored).

    Args:
        root: the release folder (see :func:`ade20k_root`).
        split: ``"training"`` or ``"validation"``.
        crop: training crop side, and evaluation short side.
        train: random training views, else whole images.
        seed: base seed of the per-item random draws.
    """

    def __init__(self, root: str | os.PathLike, split: str = "training", crop: int = 512, train: bool = True,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = ade20k_root(root)
        self.crop, self.train, self.seed, self.epoch = crop, train, seed, 0
        images = sorted((self.root / "images" / split).glob("*.jpg"))
        if not images:
            raise DatasetFormatError(f"{self.root / 'images' / split} holds no .jpg images")
        self.items = []
        for image in images:
            label = self.root / "annotations" / split / (image.stem + ".png")
            if not label.is_file():
                raise DatasetFormatError(f"{image} has no annotation {label} (an 8-bit PNG of class indices)")
            self.items.append((image, label))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, label_path = self.items[index]
        try:
            image = np.array(Image.open(image_path).convert("RGB"))
        except OSError as err:
            raise DatasetFormatError(f"{image_path} is not a readable image ({err})") from None
        try:
            label_img = Image.open(label_path)
        except OSError as err:
            raise DatasetFormatError(f"{label_path} is not a readable PNG annotation ({err})") from None
        if label_img.mode not in ("L", "P"):
            raise DatasetFormatError(f"{label_path} is a {label_img.mode} image; ADE20K annotations are 8-bit "
                                     "single-channel PNGs of class indices (0 = other, 1-150)")
        label = np.asarray(label_img).astype(np.int64)
        if label.shape != image.shape[:2]:
            raise DatasetFormatError(f"{label_path} is {label.shape[1]}x{label.shape[0]} but its image "
                                     f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        label = np.where(label == 0, IGNORE, label - 1)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(label)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, label = self._read(index)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = self._augment(image, label, rng)
        else:
            image = _resize(image, _eval_size(image.shape[-2:], self.crop), "bilinear")
        return {"image": image, "label": label, "index": torch.tensor(index)}

    def _augment(self, image: Tensor, label: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        H, W = image.shape[-2:]
        scale = self.crop * rng.uniform(0.5, 2.0) / min(H, W)
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        image, label = _resize(image, size, "bilinear"), _resize(label, size, "nearest")
        c = self.crop
        pad_h, pad_w = max(0, c - size[0]), max(0, c - size[1])
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0)
            label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE)
        top = int(rng.integers(0, image.shape[-2] - c + 1))
        left = int(rng.integers(0, image.shape[-1] - c + 1))
        image, label = image[:, top:top + c, left:left + c], label[top:top + c, left:left + c]
        if rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return image.contiguous(), label.contiguous()


def _eval_size(hw, short: int) -> tuple[int, int]:
    H, W = int(hw[0]), int(hw[1])
    scale = short / min(H, W)
    return max(16, round(H * scale / 16) * 16), max(16, round(W * scale / 16) * 16)


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0].long()
    out = F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def write_ade20k_like(root: str | os.PathLike, train: int = 24, val: int = 8, size: int = 96, classes: int = 4,
                      seed: int = 0) -> Path:
    """A small set in ADE20K's layout: textured backgrounds ("other", label 0) with filled
    rectangles and discs of ``classes`` kinds, each kind its own colour family."""
    root = Path(root) / "ADEChallengeData2016"
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for split, count, prefix in (("training", train, "ADE_train"), ("validation", val, "ADE_val")):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = rng.normal(128, 30, size=(size, size, 3))
            label = np.zeros((size, size), dtype=np.uint8)
            for _ in range(int(rng.integers(2, 5))):
                k = int(rng.integers(classes))
                cy, cx = rng.integers(size // 8, size - size // 8, size=2)
                r = int(rng.integers(size // 10, size // 4))
                region = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if k % 2 else \
                    ((abs(yy - cy) < r) & (abs(xx - cx) < r))
                image[region] = colours[k] + rng.normal(0, 12, size=(int(region.sum()), 3))
                label[region] = k + 1
            name = f"{prefix}_{i + 1:08d}"
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / split / f"{name}.jpg",
                                                                      quality=95)
            Image.fromarray(label, mode="L").save(root / "annotations" / split / f"{name}.png")
    return root
