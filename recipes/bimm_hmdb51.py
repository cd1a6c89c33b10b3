"""HMDB51 finetuning of a pretrained BIMM run (appendix A.2, Table 9 HMDB51 column).

    python -m recipes.bimm_hmdb51 pretrained=runs/bimm_k400 data.root=/data/hmdb51
    python -m recipes.bimm_hmdb51 pretrained=runs/bimm_ucf101_demo    # demo scale, built-in set

The paper does not pretrain on HMDB51: ``pretrained`` names the run directory of another
recipe (its joint checkpoint and model config are used). Finetuning: 16 frames at stride 2,
50 epochs, base lr 1e-3, batch 32, drop path 0.2, layer decay 0.7, repeated augmentation 2,
the UCF101 augmentation; testing 10 clips x 3 crops. ``data.root`` holds ``hmdb51_org/`` and
``testTrainMulti_7030_splits/``.
"""

from __future__ import annotations

import sys

import attrs

from recipes.cli import entry
from recipes.config import Config, DataConfig, FinetuneConfig, TestConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)
from visualpath.engine import OptimSpec

NAME = "bimm_hmdb51"


def config() -> Config:
    """The paper's HMDB51 finetuning settings."""
    return attrs.evolve(
        Config(), name=NAME, run_dir=f"runs/{NAME}", stages=("finetune", "test"),
        data=DataConfig(format="hmdb51", frames=16, stride=2),
        finetune=FinetuneConfig(
            optim=OptimSpec(epochs=50, batch_size=32, base_lr=1e-3, warmup_epochs=5, betas=(0.9, 0.999),
                            layer_decay=0.7),
            drop_path=0.2, flip=True, repeated=2),
        test=TestConfig(clips=10, crops=3),
    )


VARIANTS = variants(config(), NAME)

main = entry(NAME, __doc__, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
