"""``python -m analysis extract`` and ``python -m analysis predict``: a run on any video files.

    python -m analysis extract RUN_DIR VIDEOS --out FEATURES [--stream dorsal] [--level block]
    python -m analysis extract videomae_k400.pth VIDEOS --out FEATURES [--frames 16 --size 224]
    python -m analysis predict RUN_DIR VIDEOS [--top 5]

``VIDEOS`` is a folder (searched recursively) or video files. Each video gives one centre
clip at the run's frame count, stride and size (``config.json``); an unreadable file is
skipped, counted and named. ``extract`` writes per-area features (``FEATURES.safetensors``
and ``FEATURES.json`` with the file list, see :class:`analysis.features.Features`);
a checkpoint file of another library (VideoMAE, Hugging Face, MAE, timm;
:func:`visualpath.interop.encoder_from_checkpoint`) gives its encoder's output as the one
area ``encoder``; ``predict`` prints the top-k classes of a finetuned run for each file (and writes them as
JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from visualpath import terminal
from visualpath.errors import one_line
from visualpath.trust import TRUST_HELP

__all__ = ["main", "video_files", "extract_command", "predict_command"]


def video_files(paths: list[str]) -> list[Path]:
    """The video files named, or found under the folders named (sorted)."""
    from visualpath.data.contours import find_videos

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += find_videos(p)
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not out:
        raise ValueError(f"no video files in {', '.join(paths)}")
    return out


def _dataset(run_dir: Path | None, files: list[Path], frames: int | None = None, size: int | None = None):
    from visualpath.data import VideoDataset
    from visualpath.data.formats import VideoRecord

    saved = json.loads((run_dir / "config.json").read_text()) if run_dir and (run_dir / "config.json").is_file() \
        else {}
    data = saved.get("config", {}).get("data", {})
    return VideoDataset([VideoRecord(f, 0) for f in files], ["?"], frames=frames or data.get("frames", 16),
                        stride=data.get("stride", 4), mode="test", size=size or data.get("size", 224), clips=1,
                        crops=1, name="your videos")


def extract_command(run_dir: str, videos: list[str], out: str, stream: str | None = None, level: str = "area",
                    device: str = "cpu", frames: int | None = None, size: int | None = None,
                    trust_code: bool = False) -> Path:
    from analysis.features import Features, extract, load_run

    base = None if Path(run_dir).is_file() else Path(run_dir)
    files, unreadable = _readable(video_files(videos), base, frames, size)
    if not files:
        raise ValueError(f"none of the videos could be read ({unreadable[0][1]})")
    meta = dict(files=[str(f) for f in files], run=str(run_dir), skipped=len(unreadable),
                unreadable=dict((str(f), why) for f, why in unreadable))
    if Path(run_dir).is_file():  # another library's checkpoint: its encoder's output
        from visualpath.interop import encoder_from_checkpoint

        encoder, report = encoder_from_checkpoint(run_dir)
        encoder.eval().to(device)
        dataset = _dataset(None, files, frames, size)
        pooled = []
        with torch.no_grad():
            for i in range(len(dataset)):
                x = dataset[i]["video"].to(device)  # (1, C, T, H, W)
                pooled.append(encoder(x if encoder.layout.is_video else x[:, :, x.shape[2] // 2]).mean(1).cpu())
        return Features({"encoder": torch.cat(pooled)}, None, {**meta, "load": str(report)}).save(out)
    model = load_run(run_dir, device=device, trust_code=trust_code)
    stream = stream or next(s.name for s in model.spec.streams if s.modality == "video")
    features = extract(model, _dataset(Path(run_dir), files, frames, size), stream, level=level, device=device)
    features.meta.update(meta)
    return features.save(out)


def _readable(files: list[Path], run_dir: Path | None = None, frames: int | None = None,
              size: int | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files whose clip (as the dataset samples it) decodes; the others with why. A dataset
    would stand another file in for an unreadable one, so they are taken out first."""
    from visualpath.data.decode import VideoError

    good, bad = [], []
    for f in files:
        dataset = _dataset(run_dir, [f], frames, size)
        try:
            dataset._load(0, None)
            good.append(f)
        except VideoError as err:
            bad.append((f, str(err)))
            print(f"skipping unreadable file {err}", file=sys.stderr)
    return good, bad


def predict_command(run_dir: str, videos: list[str], top: int = 5, device: str = "cpu",
                    trust_code: bool = False) -> list[dict]:
    from rich.progress import track

    from analysis.features import load_classifier

    run = Path(run_dir)
    model, classes = load_classifier(run, device, trust_code=trust_code)
    files, unreadable = _readable(video_files(videos), run)
    out = [{"file": str(f), "error": "unreadable", "reason": why} for f, why in unreadable]
    dataset = _dataset(run, files) if files else []
    with torch.no_grad():
        for i in track(range(len(dataset)), description="predict", transient=True, disable=not sys.stderr.isatty(),
                       console=terminal.console(stderr=True)):
            item = dataset[i]
            probs = torch.softmax(model(item["video"].to(device)), dim=-1).mean(0)
            k = min(top, len(classes))
            values, indices = probs.topk(k)
            out.append({"file": str(files[i]), "top": [[classes[j], round(float(v), 4)]
                                                       for v, j in zip(values, indices.tolist())]})
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("extract", help="per-area features of video files")
    e.add_argument("run_dir")
    e.add_argument("videos", nargs="+")
    e.add_argument("--out", required=True, help="features file (.safetensors, with a .json beside it)")
    e.add_argument("--stream", default=None)
    e.add_argument("--level", choices=("area", "block"), default="area")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.add_argument("--frames", type=int, default=None, help="frames per clip (default: the run's, or 16)")
    e.add_argument("--size", type=int, default=None, help="clip side in pixels (default: the run's, or 224)")
    e.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    p = sub.add_parser("predict", help="top-k classes of a finetuned run for video files")
    p.add_argument("run_dir")
    p.add_argument("videos", nargs="+")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--out", default=None, help="also write the predictions as JSON")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        if args.command == "extract":
            path = extract_command(args.run_dir, args.videos, args.out, args.stream, args.level, args.device,
                                   args.frames, args.size, trust_code=args.trust_code)
            print(f"wrote {path} and {path.with_suffix('.json')}")
        else:
            rows = predict_command(args.run_dir, args.videos, args.top, args.device, trust_code=args.trust_code)
            for row in rows:
                shown = row.get("error") or ", ".join(f"{c} {p:.3f}" for c, p in row["top"])
                print(f"{row['file']}: {shown}")
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=2))
    except (ValueError, StopIteration) as err:
        print(f"error: {one_line(err) if str(err) else 'the run has no video stream'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written; the same command starts again", file=sys.stderr)
        return 130
    return 0
