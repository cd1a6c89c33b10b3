"""BIMM-V: the ventral stream alone on ImageNet-1K, then image finetuning (Table 5).

    python -m recipes.bimm_imagenet                               # demo scale, built-in shapes
    python -m recipes.bimm_imagenet data.image_root=/data/imagenet

Ventral pretraining: 800 epochs, base lr 2e-4, batch 128, 40 warm-up epochs, no flip
(Table 8 IN-1K column). Finetuning the ventral encoder: 100 epochs, base lr 2e-3, batch 128,
20 warm-up epochs, drop path 0.1, layer decay 0.65, mixup 0.8, cutmix 1.0, label smoothing
0.1, no flip and no repeated augmentation (Table 9 IN-1K column); RandAugment
``rand-m9-mstd0.5-inc1`` and random erasing 0.25 follow MAE, which the paper says its
ImageNet settings follow. Top-1 on ``val/`` with one centre crop (short side resized to 224).
``data.image_root`` holds ``train/<class>/`` and ``val/<class>/``.
"""

from __future__ import annotations

import sys

import attrs

from areas.bimm import ModelConfig
from recipes.cli import entry
from recipes.config import Config, FinetuneConfig, TestConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)
from visualpath.engine import OptimSpec

NAME = "bimm_imagenet"


def config() -> Config:
    """The paper's BIMM-V settings."""
    base = Config()
    return attrs.evolve(
        base, name=NAME, run_dir=f"runs/{NAME}", stages=("ventral", "finetune", "test"),
        model=attrs.evolve(ModelConfig(), streams=("ventral",)),
        data=attrs.evolve(base.data, image_root=None),
        finetune=FinetuneConfig(
            optim=OptimSpec(epochs=100, batch_size=128, base_lr=2e-3, warmup_epochs=20, betas=(0.9, 0.999),
                            layer_decay=0.65),
            stream="ventral", drop_path=0.1, flip=False, repeated=1, randaugment="rand-m9-mstd0.5-inc1"),
        test=TestConfig(clips=1, crops=1, batch_size=64),
    )


VARIANTS = variants(config(), NAME)


main = entry(NAME, __doc__, VARIANTS, data_keys=("data.image_root",))  # real images: the paper's settings


if __name__ == "__main__":
    sys.exit(main())
