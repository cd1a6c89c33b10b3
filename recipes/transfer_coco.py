"""COCO detection and instance segmentation from a pretrained run's ventral encoder (Table 6).

Table 6 uses the ventral ViT after BIMM's joint pretraining, so ``pretrained=`` names a run
that went through the joint stage (e.g. ``runs/bimm_k400``), not a BIMM-V run.

    python -m recipes.transfer_coco pretrained=runs/bimm_k400 data_root=/data/coco

torchvision's Mask R-CNN around ViTDet's simple feature pyramid of the ventral ViT
(appendix A.1: "finetuned on COCO train split and evaluated on validation split ... a total
of 36 epochs and decays the learning rate by a factor of 10 at the 27th and 33rd epochs ...
AdamW optimizer with the learning rate of 1e-4 and weight decay of 0.05"). The paper gives
no batch size or input size: we take a total batch of 16 and torchvision's resizing (short
side 800, long side at most 1333, padded to multiples of 32), with a 250-step warm-up.
Box and mask AP on val2017 come from pycocotools' evaluation (``pip install -e
'.[transfer]'``).

Variants: ``paper`` (the default when ``data_root`` is given), ``demo`` (a generated set in
COCO's layout), ``tiny`` (tests).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from recipes.config import tiny_model
from recipes.transfer import (DEMO_MODEL, TransferConfig, check_pretrained, demo_pretrained, generated_root,
                              pretrained_encoder, train_and_evaluate, transfer_main)
from visualpath.engine import OptimSpec
from visualpath.tokens import IMAGENET_MEAN, IMAGENET_STD
from visualpath.transfer.backbones import SimpleFeaturePyramid
from visualpath.transfer.coco import COCODetection, coco_files, write_coco_like
from visualpath.transfer.metrics import coco_ap

__all__ = ["Config", "VARIANTS", "config", "run", "main", "build_model"]


@attrs.frozen(kw_only=True)
class Config(TransferConfig):
    """:class:`TransferConfig` (``pretrained``: its ventral encoder; ``data_root``: COCO with
    ``annotations/``, ``train2017/``, ``val2017/``) and the detection settings.

    Attributes:
        name: the run's title in its results
        run_dir: where config, metrics, checkpoints and results go
        generated_size: the generated set's image side
        min_size: images resized so their short side is this (Mask R-CNN)
        max_size: ... and their long side at most this
        pyramid_channels: channels of the feature pyramid built from the ViT
        drop_path: stochastic depth of the backbone's last block
    """

    name: str = "transfer_coco"
    run_dir: str = "runs/transfer_coco"
    generated_size: int = 96
    min_size: int = 800
    max_size: int = 1333
    pyramid_channels: int = 256
    drop_path: float = 0.1
    optim: OptimSpec = OptimSpec(epochs=36, batch_size=16, base_lr=1e-4 * 256 / 16, weight_decay=0.05,
                                 betas=(0.9, 0.999), schedule="step", milestones=(27, 33), warmup_steps=250)


def config() -> Config:
    """The paper's COCO settings (appendix A.1)."""
    return Config()


DEMO = attrs.evolve(
    Config(), run_dir="runs/transfer_coco_demo", log_every=10,
    pretrained=demo_pretrained(),
    model=DEMO_MODEL,
    min_size=96, max_size=96, pyramid_channels=64, drop_path=0.0, workers=2,
    optim=OptimSpec(epochs=60, batch_size=4, base_lr=2e-4 * 256 / 4, weight_decay=0.05, betas=(0.9, 0.999),
                    schedule="step", milestones=(45, 55), warmup_steps=20),  # 240 steps, ~10 min on 2 cores
)
VARIANTS = {
    "demo": DEMO,
    "paper": config(),
    "tiny": attrs.evolve(DEMO, run_dir="runs/transfer_coco_tiny", pretrained=None, log_every=1,
                         model=tiny_model(DEMO.model), generated_size=64,
                         min_size=64, max_size=64, pyramid_channels=16, workers=0,
                         optim=attrs.evolve(DEMO.optim, epochs=2, batch_size=2, milestones=(), warmup_steps=2)),
}


def check(cfg: Config) -> None:
    """Reject what cannot run, before compute."""
    if cfg.data_root is not None:
        for split in ("train2017", "val2017"):
            coco_files(cfg.data_root, split)
    check_pretrained(cfg.pretrained, "ventral")
    import importlib.util

    if importlib.util.find_spec("pycocotools") is None:
        raise ValueError("COCO needs pycocotools: pip install -e '.[transfer]'") from None


def build_model(cfg: Config, num_classes: int, console: Console):
    """torchvision Mask R-CNN around the pretrained run's ventral encoder (or a fresh one)."""
    from torchvision.models.detection import MaskRCNN

    encoder = pretrained_encoder(cfg.pretrained, cfg.model, "ventral", cfg.drop_path, "coco", console,
                                 "pyramid, RPN and heads")
    backbone = SimpleFeaturePyramid(encoder, cfg.pyramid_channels)
    return MaskRCNN(backbone, num_classes=num_classes, min_size=cfg.min_size, max_size=cfg.max_size,
                    image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def _root(cfg: Config) -> Path:
    if cfg.data_root is not None:
        return Path(cfg.data_root)
    return generated_root(f"coco_like-{cfg.generated_size}px", "annotations/instances_val2017.json",
                          lambda path: write_coco_like(path, size=cfg.generated_size))


def collate(items):
    return {"image": [image for image, _ in items], "target": [target for _, target in items]}


def step_fn(model, batch):
    device = next(model.parameters()).device
    images = [im.to(device, non_blocking=True) for im in batch["image"]]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["target"]]
    losses = model(images, targets)
    return sum(losses.values()), {k.replace("loss_", ""): v.detach() for k, v in losses.items()}


@torch.no_grad()
def evaluate(model, dataset: COCODetection, device) -> dict:
    """Box and mask AP of ``dataset`` (its own annotations) with pycocotools."""
    model.eval()
    detections = []
    for batch in DataLoader(dataset, batch_size=1, collate_fn=collate):
        out = model([batch["image"][0].to(device)])[0]
        labels = [dataset.category_of(int(lbl)) for lbl in out["labels"].cpu()]
        detections.append({"image_id": int(batch["target"][0]["image_id"]), "boxes": out["boxes"].cpu(),
                           "scores": out["scores"].cpu(), "labels": labels, "masks": out["masks"][:, 0].cpu()})
    return {**coco_ap(dataset.coco.dataset, detections), "images": len(dataset)}


def run(cfg: Config) -> dict:
    check(cfg)

    def prepare(console: Console):
        root = _root(cfg)
        train = COCODetection(root, "train2017", train=True, seed=cfg.seed)
        console.print(f"[bold]coco[/]: {len(train)} training images, {train.num_classes - 1} categories, from {root}")
        return build_model(cfg, train.num_classes, console), train, COCODetection(root, "val2017", train=False)

    return train_and_evaluate(
        cfg, "coco", prepare, step_fn, evaluate,
        lambda r: f"box AP {100 * r['bbox_ap']:.1f}, mask AP {100 * r['segm_ap']:.1f} on {r['images']} validation "
                  "images", collate=collate)


def main(argv: list[str] | None = None) -> int:
    return transfer_main("recipes.transfer_coco", __doc__, VARIANTS, check, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
