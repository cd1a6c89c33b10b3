"""COCO instance annotations in their official layout, and a small generated set like them.

``root/``::

    annotations/instances_train2017.json   train2017/*.jpg
    annotations/instances_val2017.json     val2017/*.jpg

Items are ``(image, target)`` as torchvision's detection models take them: ``image``
``(3, H, W)`` float in [0, 1]; ``target`` with ``boxes`` ``(n, 4)`` x1y1x2y2 pixels,
``labels`` ``(n,)`` contiguous class indices 1..K (0 is the background), ``masks``
``(n, H, W)`` uint8 and ``image_id``. Crowd regions are left out, as in torchvision's
reference scripts; training skips images without any instance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from visualpath.data.formats import DatasetFormatError

__all__ = ["COCODetection", "coco_files", "write_coco_like"]

SPLITS = ("train2017", "val2017")


def coco_files(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(annotation file, image folder)`` of a split, checked.

    Raises:
        DatasetFormatError: naming the missing file and the expected layout.
    """
    root = Path(root)
    ann, images = root / "annotations" / f"instances_{split}.json", root / split
    for path in (ann, images):
        if not path.exists():
            raise DatasetFormatError(f"{path} is missing: expected COCO's layout, annotations/instances_{split}.json "
                                     f"(COCO instance annotations) and {split}/ with the images")
    return ann, images


class COCODetection(Dataset):
    """COCO images with boxes, labels and masks (see the module docstring).

    Args:
        root: the folder holding ``annotations/`` and the split folders.
        split: ``"train2017"`` or ``"val2017"`` (any ``instances_<split>.json`` works).
        train: skip images without instances and flip at random.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train2017", train: bool = True, seed: int = 0) -> None:
        from pycocotools.coco import COCO

        self.ann_file, self.images = coco_files(root, split)
        try:
            data = json.loads(self.ann_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetFormatError(f"{self.ann_file} is not JSON ({err}); expected COCO instance "
                                     "annotations") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise DatasetFormatError(f"{self.ann_file} lacks {', '.join(missing)}: not a COCO instance annotation file")
        self.coco = COCO()
        self.coco.dataset = data
        self.coco.createIndex()
        self.category_ids = sorted(self.coco.getCatIds())
        self.label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[i])]
        self.ids, self.train, self.seed, self.epoch = ids, train, seed, 0

    @property
    def num_classes(self) -> int:
        return len(self.category_ids) + 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.images / info["file_name"]
        try:
            image = np.array(Image.open(path).convert("RGB"))
        except OSError as err:
            raise DatasetFormatError(f"{path} is not a readable image ({err})") from None
        H, W = image.shape[:2]
        boxes, labels, masks = [], [], []
        for ann in self.coco.imgToAnns[image_id]:
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            if w <= 1 or h <= 1:
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.label_of[ann["category_id"]])
            masks.append(self.coco.annToMask(ann) if "segmentation" in ann else np.zeros((H, W), np.uint8))
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(labels, dtype=torch.int64),
                  "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W, dtype=torch.uint8),
                  "image_id": torch.tensor(image_id)}
        pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        if self.train and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            pixels, target["masks"] = pixels.flip(-1), target["masks"].flip(-1)
            b = target["boxes"].clone()
            target["boxes"][:, 0], target["boxes"][:, 2] = W - b[:, 2], W - b[:, 0]
        return pixels, target

    def category_of(self, label: int) -> int:
        """COCO category id of a contiguous label."""
        return self.category_ids[label - 1]


def write_coco_like(root: str | os.PathLike, train: int = 16, val: int = 6, size: int = 96, classes: int = 3,
                    seed: int = 0) -> Path:
    """A small set in COCO's layout: rectangles and discs of ``classes`` categories on noisy
    backgrounds, with polygon (rectangles) and RLE (discs) masks."""
    from pycocotools import mask as mask_utils

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for split, count in (("train2017", train), ("val2017", val)):
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = i + 1 + (0 if split == "train2017" else 10_000)
            image = rng.normal(128, 30, size=(size, size, 3))
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(classes))
                cy, cx = rng.integers(size // 5, size - size // 5, size=2)
                r = int(rng.integers(size // 10, size // 5))
                if k % 2:
                    region = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode("ascii")
                    segmentation = rle
                else:
                    region = (abs(yy - cy) < r) & (abs(xx - cx) < r)
                    x0, y0, x1, y1 = cx - r + 1, cy - r + 1, cx + r, cy + r  # pixel edges of the region
                    segmentation = [[float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]]
                ys, xs = np.nonzero(region)
                image[region] = colours[k] + rng.normal(0, 10, size=(len(ys), 3))
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": 10 + k, "iscrowd": 0,
                                    "area": float(region.sum()), "segmentation": segmentation,
                                    "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                             float(ys.max() - ys.min() + 1)]})
                ann_id += 1
            name = f"{image_id:012d}.jpg"
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / split / name, quality=95)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        payload = {"images": images, "annotations": annotations,
                   "categories": [{"id": 10 + k, "name": f"shape{k}"} for k in range(classes)]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(payload))
    return root
