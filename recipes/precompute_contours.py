"""Precompute the V2 contour cache with Segment Anything (BIMM section 3.2).

    python -m recipes.precompute_contours --data-root D --sam-checkpoint CKPT \\
        [--model-type vit_h|vit_l|vit_b] [--every K] [--shard I/N] [--cache DIR]

Runs segment-anything's automatic mask generator on every K-th frame of every video under
``D`` and writes one contour file per video into ``DIR`` (default ``D/contours``), the
format :class:`visualpath.data.contours.ContourCache` reads. Finished videos are skipped,
so an interrupted job resumes where it stopped; ``--shard I/N`` processes every N-th video
starting at I, so N processes (one per GPU, or machines) split a dataset. After its first
videos the job prints a measured estimate of the whole run's cost.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from visualpath.data.contours import ContourCache, contour_video, find_videos
from visualpath.data.decode import VideoError

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def build_sam(model_type: str, checkpoint: str | Path, device: str | torch.device):
    """A SAM model from segment-anything's registry with weights loaded safely."""
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise ValueError(f"--model-type must be one of {sorted(sam_model_registry)}, got {model_type!r}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {checkpoint} (download sam_{model_type}_*.pth first)")
    sam = sam_model_registry[model_type](checkpoint=None)
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return sam.to(device).eval()


def run(data_root: str | Path, sam, *, every: int = 1, shard: tuple[int, int] = (0, 1),
        cache: str | Path | None = None, points_per_side: int = 32, pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95, console: Console | None = None,
        estimate_after: int = 3) -> dict[str, int]:
    """Cache contours for this shard's videos; returns counts (done, skipped, failed)."""
    from segment_anything import SamAutomaticMaskGenerator

    console = console or Console(stderr=True)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"--data-root {data_root} is not a folder")
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    cache_root = Path(cache) if cache else data_root / "contours"
    store = ContourCache(cache_root, data_root)
    videos = find_videos(data_root, exclude=cache_root)
    if not videos:
        raise FileNotFoundError(f"no video files under {data_root}")
    index, count = shard
    mine = videos[index::count]
    todo = [v for v in mine if not store.has(v)]
    console.print(f"{len(videos)} videos under {data_root}; shard {index}/{count}: {len(mine)}, "
                  f"{len(mine) - len(todo)} already cached, {len(todo)} to do -> {cache_root}")
    generator = SamAutomaticMaskGenerator(
        sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
    )
    counts = {"done": 0, "cached_before": len(mine) - len(todo), "failed": 0}
    frames_done, seconds = 0, 0.0
    columns = (TextColumn("[bold]contours"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("contours", total=len(todo), rate="")
        for i, video in enumerate(todo):
            start = time.perf_counter()
            try:
                indices, maps = contour_video(video, generator.generate, every)
            except VideoError as err:
                log.warning("skipping unreadable video %s", err)
                counts["failed"] += 1
                progress.advance(task)
                continue
            store.save(video, indices, maps)
            seconds += time.perf_counter() - start
            frames_done += len(indices)
            counts["done"] += 1
            progress.update(task, advance=1, rate=f"{seconds / frames_done:.2f} s/frame")
            if counts["done"] == estimate_after and i + 1 < len(todo):
                per_video = frames_done / counts["done"]
                remaining = (len(todo) - i - 1) * per_video * seconds / frames_done
                whole = len(videos) * per_video * seconds / frames_done
                progress.console.print(
                    f"estimate: {seconds / frames_done:.2f} s per frame, ~{per_video:.0f} cached frames per "
                    f"video -> {remaining / 3600:.2f} h left for this shard, {whole / 3600:.2f} h for all "
                    f"{len(videos)} videos on one such device"
                )
    console.print(f"cached {counts['done']} videos, {counts['failed']} unreadable skipped")
    return counts


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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        sam = build_sam(args.model_type, args.sam_checkpoint, args.device)
        run(args.data_root, sam, every=args.every, shard=args.shard, cache=args.cache,
            points_per_side=args.points_per_side)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished videos are cached; run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
