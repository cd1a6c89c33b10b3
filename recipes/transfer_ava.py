"""AVA v2.2 action detection from a pretrained run's dorsal encoder (BIMM Table 3).

    python -m recipes.transfer_ava pretrained=runs/bimm_k400 data_root=/data/ava

The dorsal ViT's key-frame token map, RoIAlign over each person box, a linear classifier for
the 60 evaluation classes with a sigmoid (multi-label) loss. Appendix A.2: ground-truth
person boxes for training, detected boxes with confidence above 0.8 for testing, one clip
of 16 frames at stride 4 centred on the key frame; frames resized to a short side of 256
keeping their aspect ratio (AVA's 450x360 -> 320x256), a random 224x224 crop and a random
flip in training, the whole 320x256 frame in testing. Table 9, AVA column: AdamW, base lr
2.5e-4, weight decay 0.05, betas (0.9, 0.999), batch 16, cosine decay, 5 warm-up epochs, 30
epochs, drop path 0.2, layer-wise decay 0.75, label smoothing 0.1 (for the per-class sigmoid
targets: ``y (1 - 0.1) + 0.1 / 2``). Table 9 also lists mixup 0.8 and cutmix 1.0; they are
not applied (decision D19): an RoI's labels belong to the person in its box, and a mixed clip
puts another clip's people inside every box with no label of theirs. Frame-level mAP at
IoU 0.5, Pascal VOC style, as the official evaluation computes it.

Variants: ``paper`` (the default when ``data_root`` is given), ``demo`` (a generated set in
AVA's formats), ``tiny`` (tests).
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
from visualpath.transfer.ava import AVA, write_ava_like
from visualpath.transfer.backbones import ClipBackbone, RoIActionHead
from visualpath.transfer.metrics import frame_map

__all__ = ["Config", "VARIANTS", "config", "run", "main", "build_model", "step_fn_for"]


@attrs.frozen(kw_only=True)
class Config(TransferConfig):
    """:class:`TransferConfig` (``pretrained``: its dorsal encoder; ``data_root``: AVA v2.2 with
    ``annotations/``, ``frame_lists/``, ``frames/``) and the action-detection settings.

    Attributes:
        name: the run's title in its results
        run_dir: where config, metrics, checkpoints and results go
        frames: frames per clip around the keyframe
        stride: frames between sampled frames
        size: the training crop
        short_side: frames resized to this short side, aspect ratio kept (450x360 -> 320x256)
        smoothing: label smoothing of the sigmoid targets (Table 9)
        threshold: detector confidence of the test boxes
        drop_path: stochastic depth of the backbone's last block
    """

    name: str = "transfer_ava"
    run_dir: str = "runs/transfer_ava"
    frames: int = 16
    stride: int = 4
    size: int = 224
    short_side: int = 256
    smoothing: float = 0.1
    threshold: float = 0.8
    drop_path: float = 0.2
    optim: OptimSpec = OptimSpec(epochs=30, batch_size=16, base_lr=2.5e-4, weight_decay=0.05, betas=(0.9, 0.999),
                                 warmup_epochs=5, layer_decay=0.75)


def config() -> Config:
    """The paper's AVA settings (appendix A.2, Table 9)."""
    return Config()


DEMO = attrs.evolve(
    Config(), run_dir="runs/transfer_ava_demo", log_every=5,
    pretrained=demo_pretrained(),
    model=DEMO_MODEL,
    frames=8, stride=4, size=64, short_side=80, drop_path=0.0, workers=2,
    optim=OptimSpec(epochs=30, batch_size=4, base_lr=1e-3 * 256 / 4, weight_decay=0.05, betas=(0.9, 0.999),
                    warmup_epochs=3, layer_decay=1.0),
)
VARIANTS = {
    "demo": DEMO,
    "paper": config(),
    "tiny": attrs.evolve(DEMO, run_dir="runs/transfer_ava_tiny", pretrained=None, log_every=1,
                         model=tiny_model(DEMO.model), frames=4, size=48, short_side=64,
                         workers=0, optim=attrs.evolve(DEMO.optim, epochs=12, batch_size=2, warmup_epochs=1)),
}


def check(cfg: Config) -> None:
    """Reject what cannot run, before compute (annotation files are read here)."""
    if cfg.data_root is not None:
        _datasets(cfg, Path(cfg.data_root))
    check_pretrained(cfg.pretrained, "dorsal")
    if not 0 <= cfg.threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {cfg.threshold}")
    if not 0 <= cfg.smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {cfg.smoothing}")
    if cfg.short_side < cfg.size:
        raise ValueError(f"short_side ({cfg.short_side}) must be at least size ({cfg.size}), the training crop")


def _datasets(cfg: Config, root: Path) -> tuple[AVA, AVA]:
    train = AVA(root, "train", cfg.frames, cfg.stride, cfg.size, seed=cfg.seed, short_side=cfg.short_side)
    val = AVA(root, "val", cfg.frames, cfg.stride, cfg.size, cfg.threshold, short_side=cfg.short_side)
    return train, val


def build_model(cfg: Config, num_classes: int, console: Console) -> RoIActionHead:
    """The RoI action head around the pretrained run's dorsal encoder (or a fresh one)."""
    encoder = pretrained_encoder(cfg.pretrained, cfg.model, "dorsal", cfg.drop_path, "ava", console,
                                 "RoI classifier")
    return RoIActionHead(ClipBackbone(encoder), num_classes)


def _root(cfg: Config) -> Path:
    if cfg.data_root is not None:
        return Path(cfg.data_root)
    return generated_root(f"ava_like-{cfg.size}px", "annotations/ava_val_predicted_boxes.csv",
                          lambda path: write_ava_like(path, size=max(cfg.size, 64)))


def collate(items):
    return {"video": torch.stack([i["video"] for i in items]), "boxes": [i["boxes"] for i in items],
            "labels": torch.cat([i["labels"] for i in items]), "key": [i["key"] for i in items],
            "scores": [i["scores"] for i in items]}


def step_fn_for(smoothing: float):
    """The training step: sigmoid cross-entropy against targets smoothed to
    ``y (1 - smoothing) + smoothing / 2`` per class."""
    def step(model, batch):
        device = batch["video"].device
        logits = model(normalize(batch["video"]), [b.to(device) for b in batch["boxes"]])
        target = batch["labels"] * (1 - smoothing) + smoothing / 2
        return F.binary_cross_entropy_with_logits(logits.float(), target), {}
    return step



@torch.no_grad()
def evaluate(model, dataset: AVA, device) -> dict:
    """Frame-level mAP at IoU 0.5 over the evaluation classes with ground truth."""
    model.eval()
    detections = []
    for batch in DataLoader(dataset, batch_size=1, collate_fn=collate):
        boxes = batch["boxes"][0]
        scores = torch.sigmoid(model(normalize(batch["video"].to(device)), [boxes.to(device)])).cpu()
        key = batch["key"][0]
        H, W = batch["video"].shape[-2:]
        for box, row in zip((boxes / torch.tensor([W, H, W, H])).tolist(), scores):
            detections += [(key, box, cls, float(s)) for cls, s in zip(dataset.class_ids, row)]
    gt = [(key, box, action) for key, rows in dataset.ground_truth.items() for box, action, _ in rows
          if action in dataset.index_of]
    result = frame_map(detections, gt, classes=dataset.class_ids)
    return {"map": result["map"], "per_class": {dataset.actions[c]: ap for c, ap in result["per_class"].items()},
            "key_frames": len(dataset)}


def run(cfg: Config) -> dict:
    check(cfg)

    def prepare(console: Console):
        root = _root(cfg)
        train, val = _datasets(cfg, root)
        console.print(f"[bold]ava[/]: {len(train)} training key frames, {len(train.class_ids)} classes, from {root}")
        return build_model(cfg, len(train.class_ids), console), train, val

    return train_and_evaluate(
        cfg, "ava", prepare, step_fn_for(cfg.smoothing), evaluate,
        lambda r: f"frame mAP@0.5 {100 * r['map']:.1f} on {r['key_frames']} validation key frames", collate=collate)


def main(argv: list[str] | None = None) -> int:
    return transfer_main("recipes.transfer_ava", __doc__, VARIANTS, check, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
