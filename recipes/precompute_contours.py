"""Precompute V2's contour cache with Segment Anything (BIMM section 3.2).

    python -m recipes.precompute_contours --data-root D --sam-checkpoint CKPT \\
        [--model-type vit_h|vit_l|vit_b] [--every K] [--shard I/N] [--cache DIR]

The SAM spelling of ``python -m recipes.precompute_maps --map contour --option
sam_checkpoint=CKPT``: runs segment-anything's automatic mask generator on every K-th frame of
every video under ``D`` and writes one contour file per video into ``DIR`` (default
``D/contours``). Finished videos are skipped, so an interrupted job resumes where it stopped;
``--shard I/N`` processes every N-th video starting at I.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console

from areas.v2_contour import build_sam
from recipes import precompute_maps
from recipes.precompute_maps import parse_shard
from visualpath.data.contours import masks_to_contour

__all__ = ["run", "main", "build_sam"]


def run(data_root: str | Path, sam, *, every: int = 1, shard: tuple[int, int] = (0, 1),
        cache: str | Path | None = None, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95, console: Console | None = None,
        estimate_after: int = 3) -> dict[str, int]:
    """Cache contours of ``sam``'s masks for this shard's videos; returns counts (done,
    cached_before, failed)."""
    from segment_anything import SamAutomaticMaskGenerator

    generate = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                         stability_score_thresh=stability_score_thresh).generate

    def contour(frame):
        return masks_to_contour((m["segmentation"] for m in generate(frame)), frame.shape[:2])

    return precompute_maps.run(data_root, contour, name="contour", every=every, shard=shard, cache=cache,
                               console=console, estimate_after=estimate_after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.precompute_contours", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, type=Path, help="folder holding the videos")
    parser.add_argument("--sam-checkpoint", required=True, type=Path, help="segment-anything checkpoint (.pth)")
    parser.add_argument("--model-type", default="vit_h", choices=["vit_h", "vit_l", "vit_b"])
    parser.add_argument("--every", type=int, default=1, help="cache every K-th frame (loaders use the nearest)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="I/N: this process's share of the videos")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default DATA_ROOT/contours)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    return precompute_maps.command(lambda: run(args.data_root, build_sam(args.model_type, args.sam_checkpoint,
                                                                         args.device),
                                               every=args.every, shard=args.shard, cache=args.cache,
                                               points_per_side=args.points_per_side))


if __name__ == "__main__":
    sys.exit(main())
