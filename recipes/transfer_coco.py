"""COCO detection and instance segmentation from a pretrained run's ventral encoder (Table 6).

    python -m recipes.transfer_coco pretrained=runs/bimm_imagenet data_root=/data/coco

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

import json
from pathlib import Path

import attrs
import torch
from rich.console import Console
from torch.utils.data import DataLoader

from areas.bimm import ModelConfig
from recipes.transfer import check_pretrained, demo_pretrained, pretrained_encoder, transfer_main
from visualpath.config import to_dict
from visualpath.engine import OptimSpec, RunLog, build_optimizer, fit, make_loader, setup, teardown
from visualpath.pathway import IMAGENET_MEAN, IMAGENET_STD
from visualpath.transfer.backbones import SimpleFeaturePyramid
from visualpath.transfer.coco import COCODetection, coco_files, write_coco_like
from visualpath.transfer.metrics import coco_ap

__all__ = ["Config", "VARIANTS", "config", "run", "main", "build_model"]


@attrs.frozen(kw_only=True)
class Config:
    name: str = "transfer_coco"
    run_dir: str = "runs/transfer_coco"
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    log_every: int = 50
    pretrained: str | None = None  # a recipe's run directory: its ventral encoder is the backbone
    model: ModelConfig = ModelConfig()  # the encoder's shape when no pretrained run is given
    data_root: str | None = None  # COCO (annotations/, train2017/, val2017/); None: a generated set
    generated_size: int = 96
    min_size: int = 800
    max_size: int = 1333
    pyramid_channels: int = 256
    drop_path: float = 0.1
    optim: OptimSpec = OptimSpec(epochs=36, batch_size=16, base_lr=1e-4 * 256 / 16, weight_decay=0.05,
                                 betas=(0.9, 0.999), schedule="step", milestones=(27, 33), warmup_steps=250)
    workers: int = 8


def config() -> Config:
    """The paper's COCO settings (appendix A.1)."""
    return Config()


DEMO = attrs.evolve(
    Config(), run_dir="runs/transfer_coco_demo", log_every=10,
    pretrained=demo_pretrained(),
    model=ModelConfig(size="tiny", width=128, heads=4, split=(1, 1, 2), decoder_width=64, decoder_heads=2,
                      decoder_depths=(1, 1, 1)),
    min_size=96, max_size=96, pyramid_channels=64, drop_path=0.0, workers=2,
    optim=OptimSpec(epochs=60, batch_size=4, base_lr=2e-4 * 256 / 4, weight_decay=0.05, betas=(0.9, 0.999),
                    schedule="step", milestones=(45, 55), warmup_steps=20),  # 240 steps, ~10 min on 2 cores
)
VARIANTS = {
    "demo": DEMO,
    "paper": config(),
    "tiny": attrs.evolve(DEMO, run_dir="runs/transfer_coco_tiny", pretrained=None, log_every=1,
                         model=attrs.evolve(DEMO.model, width=32, heads=2, decoder_width=32), generated_size=64,
                         min_size=64, max_size=64, pyramid_channels=16, workers=0,
                         optim=attrs.evolve(DEMO.optim, epochs=2, batch_size=2, milestones=(), warmup_steps=2)),
}


def check(cfg: Config) -> None:
    """Reject what cannot run, before compute."""
    if cfg.data_root is not None:
        for split in ("train2017", "val2017"):
            coco_files(cfg.data_root, split)
    check_pretrained(cfg.pretrained)
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
    from visualpath.data.synthetic import _cache_dir

    folder = _cache_dir() / f"coco_like-{cfg.generated_size}px"
    if not (folder / "annotations" / "instances_val2017.json").is_file():
        write_coco_like(folder, size=cfg.generated_size)
    return folder


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
    runtime = setup(cfg.device, cfg.seed)
    console = Console(stderr=True)
    log = RunLog(cfg.run_dir, runtime)
    log.write_config(to_dict(cfg))
    model = None
    try:
        root = _root(cfg)
        train = COCODetection(root, "train2017", train=True, seed=cfg.seed)
        model = build_model(cfg, train.num_classes, console).to(runtime.device)
        console.print(f"[bold]coco[/]: {len(train)} training images, {train.num_classes - 1} categories, from {root}")
        optimizer = build_optimizer(model, cfg.optim, runtime, num_layers=len(model.backbone.encoder.blocks))
        loader = make_loader(train, cfg.optim.batch_size, runtime, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                             collate_fn=collate)
        net = model
        if runtime.distributed:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[runtime.device.index]
                                                            if runtime.device.type == "cuda" else None)
        fit("coco", net, step_fn, loader, optimizer, cfg.optim, runtime, log, resume=cfg.resume,
            log_every=cfg.log_every, console=console)
        results = {"run_dir": cfg.run_dir, **evaluate(model, COCODetection(root, "val2017", train=False),
                                                      runtime.device)}
    finally:
        log.close()
        teardown(runtime, model)
    if runtime.main:
        Path(cfg.run_dir, "results.json").write_text(json.dumps(results, indent=2))
        console.print(f"[bold]coco[/]: box AP {100 * results['bbox_ap']:.1f}, mask AP {100 * results['segm_ap']:.1f} "
                      f"on {results['images']} validation images")
    return results


def main(argv: list[str] | None = None) -> int:
    return transfer_main("recipes.transfer_coco", __doc__, VARIANTS, check, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
