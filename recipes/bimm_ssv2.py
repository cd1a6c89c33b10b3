"""BIMM on Something-Something v2 (appendix A.2; Table 8 SSv2 column, Table 9 SSv2 column).

    python -m recipes.bimm_ssv2                            # demo scale, built-in set
    python -m recipes.bimm_ssv2 data.root=/data/ssv2 data.image_root=/data/imagenet

Joint pretraining: 800 epochs, base lr 1.5e-4, batch 16, random flip (Table 8). Clips are
16 frames at stride 2 in pretraining (VideoMAE's SSv2 setting; the paper gives no other).
Finetuning: TSN-style uniform sampling of 16 segments, 40 epochs (ViT-B; 30 for ViT-L), no
flip (SSv2's labels name directions), drop path 0.1 (0.2 for ViT-L), layer decay 0.75;
testing 2 clips x 3 crops. ``data.root`` holds ``labels/`` and ``20bn-something-something-v2/``.
"""

from __future__ import annotations

import sys

import attrs

from recipes.cli import entry
from recipes.config import Config, DataConfig, FinetuneConfig, PretrainConfig, TestConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)
from visualpath.engine import OptimSpec

NAME = "bimm_ssv2"


def config(size: str = "base") -> Config:
    """The paper's SSv2 settings for ViT-B (``size="large"``: the ViT-L column entries)."""
    large = size == "large"
    base = Config()
    return attrs.evolve(
        base, name=NAME, run_dir=f"runs/{NAME}",
        model=attrs.evolve(base.model, size=size),
        data=DataConfig(format="ssv2", frames=16, stride=2),
        joint=PretrainConfig(optim=OptimSpec(epochs=800, batch_size=16, base_lr=1.5e-4, warmup_epochs=40),
                             flip=True),
        finetune=FinetuneConfig(
            optim=OptimSpec(epochs=30 if large else 40, batch_size=16, base_lr=5e-4, warmup_epochs=5,
                            betas=(0.9, 0.999), layer_decay=0.75),
            sampling="segments", drop_path=0.2 if large else 0.1, flip=False, repeated=2),
        test=TestConfig(clips=2, crops=3),
    )


VARIANTS = variants(config(), NAME, **{"paper-large": config("large")})

main = entry(NAME, __doc__, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
