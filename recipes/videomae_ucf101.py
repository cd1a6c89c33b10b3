"""The VideoMAE baseline on UCF101: one RGB target at the last block, no ventral stream.

    python -m recipes.videomae_ucf101                       # demo scale, built-in set
    python -m recipes.videomae_ucf101 data.root=/data/ucf

The dorsal stream alone, tube masking 0.9, normalised-pixel target (V4's) read from block 12
by VideoMAE's 4-block decoder. To compare with BIMM as Table 7b does, every other setting is
BIMM's UCF101 recipe (Table 8 UCF column, Table 9 UCF column, 5 clips x 3 crops).
"""

from __future__ import annotations

import sys

import attrs

from areas.bimm import ModelConfig
from recipes.cli import entry
from recipes.config import Config, DataConfig, variants
from recipes.pipeline import run  # noqa: F401 (recipes.NAME.run(cfg) runs a config in Python)

NAME = "videomae_ucf101"

BASELINE = dict(streams=("dorsal",), targets="RGB")


def config() -> Config:
    """BIMM's UCF101 settings with VideoMAE's pathway."""
    return attrs.evolve(Config(), name=NAME, run_dir=f"runs/{NAME}", stages=("joint", "finetune", "test"),
                        model=attrs.evolve(ModelConfig(), **BASELINE), data=DataConfig(format="ucf101"))


VARIANTS = variants(config(), NAME)

main = entry(NAME, __doc__, VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
