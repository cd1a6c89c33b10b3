"""Precompute a side map that an area declares, once, offline (V2's SAM contours and any other).

    python -m recipes.precompute_maps --data-root D [--map NAME] [--pathway SPEC] \\
        [--every K] [--shard I/N] [--cache DIR] [--option KEY=VALUE ...]

    # V2's contours with Segment Anything (BIMM section 3.2):
    python -m recipes.precompute_maps --data-root /data/ucf --map contour \\
        --option sam_checkpoint=sam_vit_h_4b8939.pth --option model_type=vit_h

An area that reads a precomputed per-pixel map declares it (``Area.maps``) and says how to
compute it from one frame (``Area.map_computer(name, options)``). This command finds the area
of the graph (``--pathway``, default the paper's) that declares ``--map``, computes the map of
every K-th frame of every video under ``D`` and writes one file per video into ``DIR``
(default ``D/<map>s``, e.g. ``D/contours``), the format
:class:`visualpath.data.contours.MapCache` reads; training then takes
``data.maps=NAME=DIR``. Given an image folder (an ImageNet layout), it caches one map per
image, which the ventral stage reads with ``data.image_maps=NAME=DIR``. Finished videos are
skipped, so an interrupted job resumes where it
stopped; ``--shard I/N`` processes every N-th video starting at I, so N processes (one per
GPU, or machines) split a dataset. After its first videos the job prints a measured estimate
of the whole run's cost.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from visualpath.data.contours import MapCache, find_images, find_videos, map_image, map_video
from visualpath.errors import exit_if_disk_full, one_line
from visualpath.trust import TRUST_HELP, graph_code, trusting
from visualpath.data.decode import VideoError
from visualpath import terminal

__all__ = ["run", "main", "parse_shard", "map_area", "default_cache"]

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def default_cache(data_root: str | Path, name: str) -> Path:
    """Where a map's cache goes by default: ``<data root>/<name>s`` (``contours`` for V2)."""
    return Path(data_root) / f"{name}s"


def map_area(pathway, name: str | None):
    """``(map name, area)``: the area of ``pathway`` that declares map ``name`` (or the only
    map any area declares, when ``name`` is None).

    Raises:
        ValueError: no area declares it, or the graph declares several maps and none was named.
    """
    declared = {}
    for s in pathway.streams:
        for a in s.areas:
            for m in a.maps:
                declared.setdefault(m, a)
    if name is None:
        if len(declared) != 1:
            raise ValueError(f"the graph declares the maps {sorted(declared) or 'none'}: name one with --map")
        name = next(iter(declared))
    if name not in declared:
        raise ValueError(f"no area of the graph declares the map {name!r}; declared: {sorted(declared) or 'none'}")
    return name, declared[name]


def run(data_root: str | Path, compute: Callable[[np.ndarray], np.ndarray], *, name: str = "contour",
        every: int = 1, shard: tuple[int, int] = (0, 1), cache: str | Path | None = None,
        console: Console | None = None, estimate_after: int = 3) -> dict[str, int]:
    """Cache map ``name`` for this shard's videos; returns counts (done, cached_before, failed).

    Args:
        compute: one ``(H, W, 3)`` uint8 frame -> its ``(H, W)`` map (bool or uint8).
    """
    console = console or terminal.console(stderr=True)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"--data-root {data_root} is not a folder")
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    cache_root = Path(cache) if cache else default_cache(data_root, name)
    store = MapCache(cache_root, data_root, name=name)
    videos = find_videos(data_root, exclude=cache_root)
    kind = "videos"
    if not videos:  # an image folder (ImageNet layout): one cached frame per image
        videos, kind = find_images(data_root, exclude=cache_root), "images"
    if not videos:
        raise FileNotFoundError(f"no video or image files under {data_root}")
    index, count = shard
    mine = videos[index::count]
    todo = [v for v in mine if not store.has(v)]
    console.print(f"{name} maps: {len(videos)} {kind} under {data_root}; shard {index}/{count}: {len(mine)}, "
                  f"{len(mine) - len(todo)} already cached, {len(todo)} to do -> {cache_root}")
    counts = {"done": 0, "cached_before": len(mine) - len(todo), "failed": 0}
    frames_done, seconds = 0, 0.0
    columns = (TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(name, total=len(todo), rate="")
        for i, video in enumerate(todo):
            start = time.perf_counter()
            try:
                indices, maps = map_video(video, compute, every) if kind == "videos" else map_image(video, compute)
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
                    f"item -> {remaining / 3600:.2f} h left for this shard, {whole / 3600:.2f} h for all "
                    f"{len(videos)} {kind} on one such device"
                )
    console.print(f"cached {name} maps of {counts['done']} {kind}, {counts['failed']} unreadable skipped")
    return counts


def _option(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option looks like KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.precompute_maps", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, type=Path, help="folder holding the videos")
    parser.add_argument("--map", default=None, help="the map to compute (default: the only one the graph declares)")
    parser.add_argument("--pathway", default=None,
                        help="the graph whose area computes it: FILE.py:FN, module:FN, graph.json or a run "
                             "directory (default: the paper's)")
    parser.add_argument("--every", type=int, default=1, help="cache every K-th frame (loaders use the nearest)")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="I/N: this process's share of the videos")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default DATA_ROOT/<map>s)")
    parser.add_argument("--option", type=_option, action="append", default=[],
                        help="KEY=VALUE for the area's map computer (V2: sam_checkpoint, model_type, "
                             "points_per_side, device)")
    parser.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)

    def job():
        from areas.bimm import paper_pathway
        from recipes.config import Config
        from recipes.graph import build_graph

        with trusting(args.trust_code, named=graph_code(args.pathway), command=True):  # named on this command line
            pathway = build_graph(Config(pathway=args.pathway)) if args.pathway else paper_pathway()
        name, area = map_area(pathway, args.map)
        compute = area.map_computer(name, dict(args.option))
        run(args.data_root, compute, name=name, every=args.every, shard=args.shard, cache=args.cache)

    return command(job)


def command(job: Callable[[], object]) -> int:
    """Run a precompute job as a command: a bad argument is one error line and exit 2, an
    interrupt says how to resume (exit 130)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        job()
    except (FileNotFoundError, ValueError, NotImplementedError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished videos are cached; run the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # a full disk (R13): finished videos stay cached
        return exit_if_disk_full(err, "run the same command to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
