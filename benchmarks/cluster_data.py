"""What a Kinetics-size run asks of the data path, measured on this machine (decision R11).

    python -m benchmarks.cluster_data                      # 240,000 files listed; 8 videos decoded
    python -m benchmarks.cluster_data --files 24000 --videos 4 --items 16

Two measurements, each against a peer in the same process:

1. **Start-up listing.** A Kinetics-400 tree (400 class folders, ``--files`` empty ``.mp4``
   files named as the ActivityNet downloader names them) and its CSV are generated in a
   temporary folder; :func:`~visualpath.data.formats.read_kinetics_csv` (the CSV read and one
   ``stat`` per row) is timed against walking the tree (``os.walk``, what finding the files
   without a CSV costs).
   Under torchrun only rank 0 lists a real dataset and sends the list to the others
   (``recipes.stages.video_records``), so this is a job's cost, not a process's.
2. **Decoding.** ``--videos`` clips like Kinetics' (short side 320, 10 s at 25 fps, H.264) are
   encoded, then a :class:`~visualpath.data.datasets.VideoDataset` with the paper's sampling
   (16 frames, stride 4) and VideoMAE's multi-scale crop to 224 is read item by item in this
   process, as one data-loading worker does: clips per second per worker. The peer is the
   same decode without the crop and resize. A GPU step that consumes ``C`` clips per second
   needs ``ceil(C / (clips per second per worker))`` workers per GPU; ``C`` at ViT-B is not
   measurable here (no GPU).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["make_tree", "time_listing", "make_videos", "time_decoding", "main"]

CLASSES = 400


def make_tree(root: Path, files: int) -> Path:
    """``root/train/<class>/<id>_<start>_<end>.mp4`` (empty) and ``root/train.csv``."""
    per_class = max(1, files // CLASSES)
    rows = []
    for c in range(CLASSES):
        label = f"class_{c:03d}"
        folder = root / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            stem = f"yt{c:03d}{i:07d}_{i % 300:06d}_{i % 300 + 10:06d}"
            (folder / f"{stem}.mp4").touch()
            rows.append((label, f"yt{c:03d}{i:07d}", i % 300, i % 300 + 10, "train"))
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows)
    return root


def _walk(root: Path) -> int:
    """The peer: every file of the tree found by walking it (what a layout without a CSV costs)."""
    return sum(len(files) for _, _, files in os.walk(root))


def time_listing(root: Path) -> dict:
    from visualpath.data.formats import read_kinetics_csv

    os.listdir(root / "train")  # both start warm
    start = time.perf_counter()
    records, classes = read_kinetics_csv(root / "train", root / "train.csv")
    ours = time.perf_counter() - start
    start = time.perf_counter()
    found = _walk(root / "train")
    peer = time.perf_counter() - start
    assert found == len(records) and all(r.path.is_file() for r in records[:10])
    return {"files": len(records), "classes": len(classes), "listing_s": ours, "walk_s": peer}


def make_videos(root: Path, count: int, seconds: float = 10.0, fps: int = 25) -> list[Path]:
    """Kinetics-like clips: 426x320 (short side 320), ``seconds`` at ``fps``, H.264, moving noise."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (320 + 64, 426 + 64, 3), dtype=np.uint8)
    for v in range(count):
        path = root / f"clip{v:03d}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 426, 320, "yuv420p"
            for t in range(int(seconds * fps)):
                dy, dx = (t + v) % 64, (2 * t) % 64
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[dy:dy + 320, dx:dx + 426]),
                                                   format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths.append(path)
    return paths


def time_decoding(paths: list[Path], items: int) -> dict:
    from visualpath.data.datasets import VideoDataset
    from visualpath.data.formats import VideoRecord
    from visualpath.data.transforms import TrainTransform

    records = [VideoRecord(p, 0) for p in paths]
    results = {}
    for name, transform in (("crop_224", TrainTransform(size=224, crop="multiscale")), ("decode_only", None)):
        data = VideoDataset(records, ["x"], frames=16, stride=4, transform=transform, seed=0)
        data[0]  # open the codec once
        start = time.perf_counter()
        for i in range(items):
            item = data[i % len(data)]
        seconds = time.perf_counter() - start
        results[name] = {"clips_per_s": items / seconds, "shape": list(item["video"].shape)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_data", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=240_000)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--items", type=int, default=32, help="clips read in the decoding measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_tree(Path(tmp) / "k400", args.files)
        made = time.perf_counter() - start
        listing = time_listing(Path(tmp) / "k400")
        videos = make_videos(Path(tmp) / "videos", args.videos)
        decoding = time_decoding(videos, args.items)
    print(f"machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}")
    print(f"listing {listing['files']:,} files in {listing['classes']} class folders (tree made in {made:.0f} s): "
          f"{listing['listing_s']:.2f} s read from the CSV and checked file by file; walking the tree takes "
          f"{listing['walk_s']:.2f} s (ratio {listing['listing_s'] / listing['walk_s']:.1f}x)")
    crop, raw = decoding["crop_224"], decoding["decode_only"]
    print(f"decoding 16x4 clips of 10 s 426x320 H.264 videos, one process (= one worker): "
          f"{crop['clips_per_s']:.2f} clips/s with the 224 multi-scale crop {tuple(crop['shape'])}, "
          f"{raw['clips_per_s']:.2f} clips/s decode only {tuple(raw['shape'])} "
          f"(crop and resize cost {100 * (1 - crop['clips_per_s'] / raw['clips_per_s']):.0f}%)")
    per_worker = crop["clips_per_s"]
    for gpu in (50, 100, 200):
        print(f"  a GPU step consuming {gpu} clips/s needs {math.ceil(gpu / per_worker)} such workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
