"""``python -m analysis extract`` and ``python -m analysis predict``: a run on any video files.

    python -m analysis extract RUN_DIR VIDEOS --out FEATURES[.npz] [--stream dorsal|all] [--level block] [--tokens]
    python -m analysis extract RUN_DIR --list videos.txt --out FEATURES.npz
    python -m analysis extract videomae_k400.pth VIDEOS --out FEATURES [--frames 16 --size 224]
    python -m analysis predict RUN_DIR VIDEOS [--top 5]

``VIDEOS`` is a folder (searched recursively; a folder of class folders labels each video by
its folder) or video files; ``--list`` reads a ``"path label"`` list instead. Each video gives one centre
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
from visualpath.errors import exit_if_disk_full, one_line, shown
from visualpath.rundir import run_config
from visualpath.trust import TRUST_HELP
from visualpath.atomic import atomic, atomic_write

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


def labelled_videos(paths: list[str], list_file: str | None = None) -> tuple[list[Path], list[int] | None, list[str]]:
    """The videos to read, with their labels where the input gives them: a ``"path label"``
    list (``--list``; names from a ``classes.txt`` beside it, else ``"0"``, ``"1"``...), or one
    folder of class folders (``DIR/<class>/<video>``: the folders' names, sorted). Anything
    else has no labels (None)."""
    from visualpath.data.formats import read_path_label_list

    if list_file is not None:
        names = Path(list_file).parent / "classes.txt"
        classes = [c.strip() for c in names.read_text().splitlines() if c.strip()] if names.is_file() else None
        records, classes = read_path_label_list(list_file, classes=classes)
        missing = [r.path for r in records if not Path(r.path).is_file()]
        if missing:
            raise ValueError(f"{list_file}: {len(missing)} listed videos do not exist, e.g. {missing[0]}")
        return [Path(r.path) for r in records], [r.label for r in records], list(classes)
    files = video_files(paths)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        root = Path(paths[0])
        parents = {f.parent for f in files}
        if all(p.parent == root for p in parents) and len(parents) > 1:  # class folders
            classes = sorted(p.name for p in parents)
            return files, [classes.index(f.parent.name) for f in files], classes
    return files, None, []


def _sampling(run_dir: Path | None) -> dict:
    """The run's data settings (``config.json``'s ``"data"``: frames, stride, size), or {}."""
    return run_config(run_dir).get("data", {}) if run_dir else {}


def _dataset(run_dir: Path | None, files: list[Path], frames: int | None = None, size: int | None = None,
             labels: list[int] | None = None, classes: list[str] | None = None):
    from visualpath.data import VideoDataset
    from visualpath.data.formats import VideoRecord

    data = _sampling(run_dir)
    labels = labels if labels is not None else [0] * len(files)
    return VideoDataset([VideoRecord(f, y) for f, y in zip(files, labels)], classes or ["?"],
                        frames=frames or data.get("frames", 16), stride=data.get("stride", 4), mode="test",
                        size=size or data.get("size", 224), clips=1, crops=1, name="your videos")


def extract_command(run_dir: str, videos: list[str], out: str, stream: str | None = None, level: str = "area",
                    device: str = "cpu", frames: int | None = None, size: int | None = None,
                    trust_code: bool = False, tokens: bool = False, list_file: str | None = None) -> Path:
    """Features of ``videos`` (or of the videos ``list_file`` lists) for ``stream`` (a name,
    ``"all"`` for every stream: areas named ``STREAM.AREA``; default the first video stream),
    pooled over tokens or per token (``tokens``), with labels where the input gives them
    (:func:`labelled_videos`). ``out`` ending in ``.npz`` writes a NumPy archive (one array per
    area, ``labels``, ``files``, ``classes``), else safetensors with a JSON beside it."""
    from analysis.features import Features, extract, load_run

    base = None if Path(run_dir).is_file() else Path(run_dir)
    found, found_labels, classes = labelled_videos(videos, list_file)
    label_of = dict(zip(found, found_labels)) if found_labels is not None else None
    files, unreadable = _readable(found, base, frames, size)
    if not files:
        raise ValueError(f"none of the videos could be read ({unreadable[0][1]})")
    labels = [label_of[f] for f in files] if label_of is not None else None
    meta = dict(files=[str(f) for f in files], run=str(run_dir), skipped=len(unreadable),
                unreadable=dict((str(f), why) for f, why in unreadable), classes=classes,
                labels_from="list" if list_file else ("class folders" if labels is not None else "none"))
    if Path(run_dir).is_file():  # another library's checkpoint: its encoder's output
        from visualpath.interop import encoder_from_checkpoint

        encoder, report = encoder_from_checkpoint(run_dir)
        encoder.eval().to(device)
        dataset = _dataset(None, files, frames, size, labels, classes)
        outputs = []
        with torch.no_grad():
            for i in range(len(dataset)):
                x = dataset[i]["video"].to(device)  # (1, C, T, H, W)
                y = encoder(x if encoder.layout.is_video else x[:, :, x.shape[2] // 2])
                outputs.append((y if tokens else y.mean(1)).cpu())
        result = Features({"encoder": torch.cat(outputs)}, _labels(labels),
                          {**meta, "load": str(report), "pooled": not tokens})
        return _save(result, out)
    model = load_run(run_dir, device=device, trust_code=trust_code)
    names = [s.name for s in model.pathway.streams]
    if stream == "all":
        chosen = names
    else:
        stream = stream or next((s.name for s in model.pathway.streams if s.modality == "video"), names[0])
        if stream not in names:
            raise ValueError(f"--stream {stream!r} is not a stream of the run; its streams: {names} (or all)")
        chosen = [stream]
    dataset = _dataset(Path(run_dir), files, frames, size, labels, classes)
    areas, per_stream = {}, {}
    for name in chosen:
        features = extract(model, dataset, name, level=level, device=device, pooled=not tokens)
        prefix = f"{name}." if len(chosen) > 1 else ""
        areas.update({prefix + k: v for k, v in features.areas.items()})
        per_stream[name] = {k: v for k, v in features.meta.items() if k not in ("classes",)}
    first = per_stream[chosen[0]]
    result = Features(areas, _labels(labels),
                      {**(first if len(chosen) == 1 else {"streams": per_stream}), **meta,
                       "stream": chosen[0] if len(chosen) == 1 else "all"})
    return _save(result, out)


def _labels(labels: list[int] | None):
    return torch.tensor(labels, dtype=torch.long) if labels is not None else None


def _save(features, out: str) -> Path:
    """``.npz``: one array per area, ``labels``, ``files``, ``classes`` (numpy, scikit-learn and
    rsatoolbox read it as it is), with the metadata as JSON beside it; else safetensors."""
    import numpy as np

    path = Path(out)
    if path.suffix != ".npz":
        return features.save(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.numpy() for name, t in features.areas.items()}
    clash = {"labels", "files", "classes"} & set(arrays)
    if clash:
        raise ValueError(f"an area is named {sorted(clash)[0]!r}, a reserved name in .npz output: use .safetensors")
    if features.labels is not None:
        arrays["labels"] = features.labels.numpy()
    arrays["files"] = np.array(features.meta.get("files", []), dtype=str)
    arrays["classes"] = np.array(features.meta.get("classes", []), dtype=str)
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez would add .npz to a temporary name
            np.savez(f, **arrays)

    atomic(path, write)
    atomic_write(path.with_suffix(".json"), json.dumps({"order": features.names, **features.meta}, indent=1))
    return path


def _readable(files: list[Path], run_dir: Path | None = None, frames: int | None = None,
              size: int | None = None, what: str = "file") -> tuple[list[Path], list[tuple[Path, str]]]:
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
            print(f"skipping unreadable {what} {err}", file=sys.stderr)
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
    e.add_argument("videos", nargs="*", help="video files, or folders (a folder of class folders gives labels)")
    e.add_argument("--list", default=None, dest="list_file",
                   help="a 'path label' list of the videos (VideoMAE's format; classes.txt beside it names them)")
    e.add_argument("--out", required=True,
                   help="features file: FILE.npz (numpy/scikit-learn/rsatoolbox), else FILE.safetensors; "
                        "a .json beside it")
    e.add_argument("--stream", default=None, help="the stream to read, or all (default: the first video stream)")
    e.add_argument("--tokens", action="store_true",
                   help="per-token features (videos x tokens x width) instead of their mean")
    e.add_argument("--level", choices=("area", "block"), default="area",
                   help="one feature per area (default) or per encoder block")
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    e.add_argument("--frames", type=int, default=None, help="frames per clip (default: the run's, or 16)")
    e.add_argument("--size", type=int, default=None, help="clip side in pixels (default: the run's, or 224)")
    e.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    p = sub.add_parser("predict", help="top-k classes of a finetuned run for video files")
    p.add_argument("run_dir")
    p.add_argument("videos", nargs="+")
    p.add_argument("--top", type=int, default=5, help="classes per video")
    p.add_argument("--out", default=None, help="also write the predictions as JSON")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        if args.command == "extract":
            if not args.videos and args.list_file is None:
                raise ValueError("name the videos (files or folders) or --list FILE")
            path = extract_command(args.run_dir, args.videos, args.out, args.stream, args.level, args.device,
                                   args.frames, args.size, trust_code=args.trust_code, tokens=args.tokens,
                                   list_file=args.list_file)
            print(f"wrote {path} and {path.with_suffix('.json')}")
        else:
            rows = predict_command(args.run_dir, args.videos, args.top, args.device, trust_code=args.trust_code)
            for row in rows:
                said = row.get("error") or ", ".join(f"{c} {p:.3f}" for c, p in row["top"])
                print(shown(f"{row['file']}: {said}"))  # class and file names are data: escapes shown, not sent
            if args.out:
                atomic_write(Path(args.out), json.dumps(rows, indent=2))
    except (ValueError, StopIteration) as err:
        print(f"error: {one_line(err) if str(err) else 'the run has no video stream'}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk (R13): what was being written is left whole or not at all
        return exit_if_disk_full(err)
    except KeyboardInterrupt:
        print("interrupted: nothing was written; the same command starts again", file=sys.stderr)
        return 130
    return 0
