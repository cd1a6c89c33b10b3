"""BIMM on Kinetics-400 (appendix A.2; Table 8 K400 column, Table 9 K400 column).

    python -m recipes.bimm_k400                             # demo scale, built-in set
    python -m recipes.bimm_k400 data.root=/data/k400 data.image_root=/data/imagenet
    python -m recipes.bimm_k400 --variant paper-large data.root=/data/k400 data.image_root=/data/imagenet

``--variant paper-large`` is the ViT-L column: a 24-block ViT-L (decoders at blocks 4, 8 and 24;
decision D13), finetuned 50 epochs with drop path 0.2 (``model.size=large`` alone changes the
encoder only). The ventral stream is pretrained on ImageNet-1K (800 epochs, Table 8 IN-1K
column) from ``data.image_root`` (``data.image_root=frames`` trains it on frames of K400
instead, Table 7a's video-set init); joint pretraining runs 800 epochs
without flips at base lr 1.5e-4, batch 16; finetuning 75 epochs (ViT-B; 50 for ViT-L) with
drop path 0.1 (0.2 for ViT-L) and layer decay 0.75; testing 5 clips x 3 crops. Clips are
16 frames at stride 4 (VideoMAE's K400 sampling; the paper gives no other).
``data.root`` holds ``annotations/{train,validate}.csv`` and ``train/``, ``val/``.
"""

from __future__ import annotations

import sys

import attrs

from recipes.cli import entry
from recipes.config import Config, DataConfig, FinetuneConfig, PretrainConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)
from visualpath.engine import OptimSpec

NAME = "bimm_k400"


def config(size: str = "base") -> Config:
    """The paper's K400 settings for ViT-B (``size="large"``: the ViT-L column entries)."""
    large = size == "large"
    base = Config()
    return attrs.evolve(
        base, name=NAME, run_dir=f"runs/{NAME}",
        model=attrs.evolve(base.model, size=size),
        data=DataConfig(format="kinetics", frames=16, stride=4),
        joint=PretrainConfig(optim=OptimSpec(epochs=800, batch_size=16, base_lr=1.5e-4, warmup_epochs=40),
                             flip=False),
        finetune=FinetuneConfig(
            optim=OptimSpec(epochs=50 if large else 75, batch_size=16, base_lr=1e-3, warmup_epochs=5,
                            betas=(0.9, 0.999), layer_decay=0.75),
            drop_path=0.2 if large else 0.1, flip=True, repeated=2),
    )


VARIANTS = variants(config(), NAME, **{"paper-large": config("large")})

main = entry(NAME, __doc__, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
