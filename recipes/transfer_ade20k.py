"""ADE20K semantic segmentation from a pretrained run's ventral encoder (BIMM Table 6).

Table 6 uses the ventral ViT after BIMM's joint pretraining, so ``pretrained=`` names a run
that went through the joint stage (e.g. ``runs/bimm_k400``), not a BIMM-V run.

    python -m recipes.transfer_ade20k pretrained=runs/bimm_k400 data_root=/data/ade20k

UperNet over ViTDet's simple feature pyramid of the ventral ViT (appendix A.1: "160K
iterations using AdamW optimizer with the peak learning rate of 4e-4, weight decay of 0.05
and batch size of 16 ... warms up over 1500 iterations and then decays with linear strategy
... input resolution of 512x512"). Position embeddings: the pathway's are fixed sin-cos
tables, computed for the 32x32 grid of a 512 crop rather than interpolated. Layer-wise decay
0.65 and drop path 0.1 follow MAE's ADE20K recipe, which the paper says it follows.
Evaluation is single-scale on whole images (short side 512), mIoU over the 150 classes.

Variants: ``paper`` (the default when ``data_root`` is given), ``demo`` (a generated set in
ADE20K's layout, the demo run's encoder if ``runs/bimm_ucf101_demo`` exists), ``tiny``
(tests).
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from rich.console import Console
from torch.utils.data import DataLoader

from recipes.config import tiny_model
from recipes.transfer import (DEMO_MODEL, TransferConfig, check_pretrained, demo_pretrained, generated_root, normalize,
                              pretrained_encoder, train_and_evaluate, transfer_main)
from visualpath.engine import OptimSpec
from visualpath.transfer.backbones import SimpleFeaturePyramid
from visualpath.transfer.data import IGNORE, ADE20K, ade20k_root, write_ade20k_like
from visualpath.transfer.heads import Segmenter
from visualpath.transfer.metrics import confusion_matrix, mean_iou

__all__ = ["Config", "VARIANTS", "config", "run", "main"]


@attrs.frozen(kw_only=True)
class Config(TransferConfig):
    """:class:`TransferConfig` (``pretrained``: its ventral encoder; ``data_root``: the ADE20K
    release, ``ADEChallengeData2016``) and the segmentation settings.

    Attributes:
        name: the run's title in its results
        run_dir: where config, metrics, checkpoints and results go
        generated_size: the generated set's image side
        num_classes: segmentation classes (ADE20K: 150)
        crop: training and test crop side in pixels, a multiple of 16
        pyramid_channels: channels of the feature pyramid built from the ViT
        head_channels: channels of the UperNet head
        drop_path: stochastic depth of the backbone's last block
    """

    name: str = "transfer_ade20k"
    run_dir: str = "runs/transfer_ade20k"
    generated_size: int = 96
    num_classes: int = 150
    crop: int = 512
    pyramid_channels: int = 256
    head_channels: int = 512
    drop_path: float = 0.1
    optim: OptimSpec = OptimSpec(epochs=1, batch_size=16, base_lr=4e-4 * 256 / 16, weight_decay=0.05,
                                 betas=(0.9, 0.999), min_lr=0.0, layer_decay=0.65, schedule="linear",
                                 warmup_steps=1500, total_steps=160_000)


def config() -> Config:
    """The paper's ADE20K settings (appendix A.1)."""
    return Config()


DEMO = attrs.evolve(
    Config(), run_dir="runs/transfer_ade20k_demo", log_every=10,
    pretrained=demo_pretrained(),
    model=DEMO_MODEL,
    num_classes=4, crop=64, pyramid_channels=64, head_channels=64, drop_path=0.0, workers=2,
    optim=OptimSpec(epochs=1, batch_size=8, base_lr=1e-3 * 256 / 8, weight_decay=0.05, betas=(0.9, 0.999),
                    min_lr=0.0, layer_decay=1.0, schedule="linear", warmup_steps=20, total_steps=300),
)
VARIANTS = {
    "demo": DEMO,
    "paper": config(),
    "tiny": attrs.evolve(DEMO, run_dir="runs/transfer_ade20k_tiny", pretrained=None, log_every=1,
                         model=tiny_model(DEMO.model), generated_size=64,
                         crop=48, pyramid_channels=16, head_channels=16, workers=0,
                         optim=attrs.evolve(DEMO.optim, batch_size=4, warmup_steps=2, total_steps=30)),
}


def check(cfg: Config) -> None:
    """Reject what cannot run, before compute."""
    if cfg.data_root is not None:
        ade20k_root(cfg.data_root)
    check_pretrained(cfg.pretrained, "ventral")
    if cfg.crop % 16:
        raise ValueError(f"crop must be a multiple of 16, got {cfg.crop}")


def build_model(cfg: Config, console: Console) -> Segmenter:
    """Segmenter around the pretrained run's ventral encoder (or a fresh one)."""
    encoder = pretrained_encoder(cfg.pretrained, cfg.model, "ventral", cfg.drop_path, "ade20k", console,
                                 "pyramid and UperNet head")
    return Segmenter(SimpleFeaturePyramid(encoder, cfg.pyramid_channels), cfg.num_classes, cfg.head_channels)


def _root(cfg: Config) -> Path:
    if cfg.data_root is not None:
        return ade20k_root(cfg.data_root)
    folder = generated_root(f"ade20k_like-{cfg.num_classes}c-{cfg.generated_size}px",
                            "ADEChallengeData2016/annotations/validation",
                            lambda path: write_ade20k_like(path, classes=cfg.num_classes, size=cfg.generated_size))
    return ade20k_root(folder)


def step_fn(model, batch):
    logits = model(normalize(batch["image"]))
    return F.cross_entropy(logits.float(), batch["label"], ignore_index=IGNORE), {}


@torch.no_grad()
def evaluate(model, dataset: ADE20K, num_classes: int, device) -> dict:
    """Single-scale mIoU over a split: logits at the annotation's size, one summed confusion
    matrix."""
    model.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for item in DataLoader(dataset, batch_size=1):
        logits = model(normalize(item["image"].to(device)))
        label = item["label"][0]  # evaluation items keep the annotation at its own size
        logits = F.interpolate(logits.float(), size=label.shape, mode="bilinear", align_corners=False)
        total += confusion_matrix(logits.argmax(1)[0].cpu(), label, num_classes)
    acc = float(total.diagonal().sum() / total.sum().clamp_min(1))
    return {"miou": mean_iou(None, None, num_classes, confusion=total), "pixel_acc": acc, "images": len(dataset)}


def run(cfg: Config) -> dict:
    check(cfg)

    def prepare(console: Console):
        root = _root(cfg)
        train = ADE20K(root, "training", crop=cfg.crop, train=True, seed=cfg.seed)
        console.print(f"[bold]ade20k[/]: {len(train)} training images from {root}")
        return build_model(cfg, console), train, ADE20K(root, "validation", crop=cfg.crop, train=False)

    return train_and_evaluate(
        cfg, "ade20k", prepare, step_fn,
        lambda model, val, device: evaluate(model, val, cfg.num_classes, device),
        lambda r: f"mIoU {100 * r['miou']:.1f}%, pixel accuracy {100 * r['pixel_acc']:.1f}% on {r['images']} "
                  "validation images")


def main(argv: list[str] | None = None) -> int:
    return transfer_main("recipes.transfer_ade20k", __doc__, VARIANTS, check, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
