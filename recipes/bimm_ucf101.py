"""BIMM on UCF101, the paper's whole pipeline (Algorithm 1, appendix A, Tables 8 and 9).

    python -m recipes.bimm_ucf101                       # demo scale, built-in synthetic set
    python -m recipes.bimm_ucf101 data.root=/data/ucf data.image_root=/data/imagenet   # the paper's settings
    torchrun --nproc_per_node=8 -m recipes.bimm_ucf101 data.root=/data/ucf data.image_root=/data/imagenet

ventral pretraining on ImageNet (``data.image_root``, the paper's default "IN-1K Init"; or
``data.image_root=frames``: frames of UCF101, Table 7a's "UCF101 Init") -> dorsal initialised from ventral -> joint pretraining with partial sharing
(1600 epochs, appendix A.2) -> finetuning -> 5 clips x 3 crops test. Stages, resuming and
the variants are described in :mod:`recipes.pipeline`.
"""

from __future__ import annotations

import sys

import attrs

from recipes.cli import entry
from recipes.config import Config, DataConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)

NAME = "bimm_ucf101"


def config() -> Config:
    """The paper's UCF101 settings (Table 8 UCF and IN-1K columns, Table 9 UCF column)."""
    return attrs.evolve(Config(), name=NAME, run_dir=f"runs/{NAME}", data=DataConfig(format="ucf101"))


VARIANTS = variants(config(), NAME)

main = entry(NAME, __doc__, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
