"""Decoded clips per second per worker: our sampled decoding versus decode-everything.

    python -m benchmarks.decode [--videos 120] [--frames 16] [--stride 4] [--views 2] [--repeats 3]

Runs in one process on one thread pool, interleaving the contenders over the same videos of
the built-in synthetic set (generated on first use):

- ``naive``: decode every frame of the file to RGB with PyAV, then index the clip (what a
  decode-everything loader does), once per view;
- ``ours (pyav)``: :class:`visualpath.data.VideoDataset`'s path -- header, seek to the
  keyframe before the clip, convert only the sampled frames; all views from one pass;
- ``ours (torchcodec)``: the same through torchcodec, when it is installed with the system
  FFmpeg libraries.

Prints medians and min-max over repeats and the ratio to ``naive``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visualpath.data import ensure_synthetic, open_video, read_ucf101
from visualpath.data.sampling import strided_clip


def naive(path, frames, stride, views, rng):
    for _ in range(views):
        with open_video(path, "pyav") as video:
            everything = video.read_all()
        everything[strided_clip(len(everything), frames, stride, rng)]


def sampled(backend):
    def decode(path, frames, stride, views, rng):
        with open_video(path, backend) as video:
            n = video.info.num_frames
            picks = [strided_clip(n, frames, stride, rng) for _ in range(views)]
            video.read(np.unique(np.concatenate(picks)))

    return decode


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=120)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one worker's share)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console()
    root = ensure_synthetic()
    records, _ = read_ucf101(root, 1, train=True)
    paths = [r.path for r in records[: args.videos]]
    contenders = {"naive": naive, "ours (pyav)": sampled("pyav")}
    try:
        sampled("torchcodec")(paths[0], args.frames, args.stride, 1, np.random.default_rng(0))
        contenders["ours (torchcodec)"] = sampled("torchcodec")
    except Exception as err:  # not installed, or no system FFmpeg libraries
        console.print(f"torchcodec not measured: {type(err).__name__}: {str(err)[:120]}")
    table = Table(title=f"decoded clips/s, one worker, {len(paths)} videos of the built-in set, "
                        f"{args.frames} frames at stride {args.stride}")
    for col in ("views", "decoder", "median clips/s", "min-max", "x naive"):
        table.add_column(col, justify="right")
    for views in args.views:
        rates = {name: [] for name in contenders}
        for r in range(args.repeats):
            for name, fn in contenders.items():  # interleaved
                rng = np.random.default_rng(r)
                start = time.perf_counter()
                for path in paths:
                    fn(path, args.frames, args.stride, views, rng)
                rates[name].append(len(paths) * views / (time.perf_counter() - start))
        base = statistics.median(rates["naive"])
        for name, values in rates.items():
            med = statistics.median(values)
            table.add_row(str(views), name, f"{med:.1f}", f"{min(values):.1f}-{max(values):.1f}", f"{med / base:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
