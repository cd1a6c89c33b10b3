"""What the transfer recipes (COCO, ADE20K, AVA) share: the pretrained encoder they adapt,
pixel normalisation and the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from rich.console import Console

from areas.bimm import ModelConfig, build_pathway
from recipes.pipeline import paper_if_data
from visualpath.classifier import Encoder
from visualpath.config import parse_cli
from visualpath.pathway import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["pretrained_encoder", "normalize", "check_pretrained", "transfer_main", "DEMO_RUN"]

DEMO_RUN = "runs/bimm_ucf101_demo"  # the transfer demos adapt this run's encoders when it exists


def demo_pretrained() -> str | None:
    return DEMO_RUN if Path(DEMO_RUN, "config.json").is_file() else None


def check_pretrained(pretrained: str | None) -> None:
    if pretrained is not None and not Path(pretrained, "config.json").is_file():
        raise ValueError(f"pretrained={pretrained!r} is not a run directory of a recipe (no config.json)")


def pretrained_encoder(pretrained: str | None, model: ModelConfig, stream: str, drop_path: float, task: str,
                       console: Console, fresh: str) -> Encoder:
    """``stream``'s encoder from the run ``pretrained`` (or of ``model``, randomly
    initialised), saying what was loaded and what starts ``fresh``."""
    if pretrained is not None:
        from analysis.features import load_run

        encoder = Encoder.from_pathway(load_run(pretrained), stream, drop_path=drop_path)
        console.print(f"[bold]{task}[/]: {stream} encoder from {pretrained}: loaded {len(encoder.state_dict())} "
                      f"tensors (embedding and {len(encoder.blocks)} blocks); {fresh} initialised fresh")
        return encoder
    console.print(f"[bold]{task}[/]: no pretrained run given, the {stream} encoder starts from random weights")
    return Encoder.from_pathway(build_pathway(model).build(), stream, drop_path=drop_path)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(B, 3, H, W)`` or clips ``(B, 3, T, H, W)`` -> ImageNet-normalised floats."""
    shape = (1, 3) + (1,) * (x.ndim - 2)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(shape)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(shape)
    return (x.float() / 255 - mean) / std


def transfer_main(module: str, doc: str, variants: dict, check, run, argv: list[str] | None = None) -> int:
    """``python -m recipes.transfer_*``: ``data_root`` given and no ``--variant`` selects the
    paper's settings; a bad configuration is one error line and exit status 2."""
    argv = paper_if_data(list(sys.argv[1:] if argv is None else argv), variants, ("data_root",))
    _, cfg = parse_cli(argv, variants, module, doc)
    try:
        check(cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    run(cfg)
    return 0
