"""``python -m analysis neural RUN --stimuli DIR --responses FILE``: which area predicts which
recorded neurons, and how well against the noise ceiling.

    python -m analysis neural RUN_DIR --stimuli STIMULI/ --responses recording.nc [--areas V1 MT]
        [--readout pooled | grid | V1=grid MT=pooled] [--folds 5] [--rsa-method spearman] [--out DIR]

The stimuli (video files, or images, which every stream sees as a still clip) are read as
the run reads its videos (one centre clip at its frame count, stride and size); the
responses (:mod:`analysis.recordings`: ``.npy``, ``.npz``, HDF5, NetCDF/xarray) name their
stimuli by ``stimulus_id`` (a file's path under ``DIR``, its name or its stem) or, without
names, follow the folder's sorted files. Everything is checked before any model runs.

For every area of every stream of the run's stored graph (named ``STREAM.AREA``), and for
the same graph with random weights, it writes to ``RUN_DIR/analysis/neural/`` (or ``--out``):
``results.json`` (cross-validated ridge encoding per neuroid and per region with noise
ceilings, bootstrap intervals and a stimulus-shuffled control, :mod:`analysis.encoding`;
RSA against the recording's RDMs with rsatoolbox's noise ceiling,
:mod:`analysis.neural_rsa`; the region -> area assignment), ``neural.png`` and rsatoolbox's
HDF5 files of the RDMs and evaluations, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.recordings import Recording, needs, read_recording
from visualpath.errors import exit_if_disk_full, one_line
from visualpath.trust import TRUST_HELP
from visualpath.atomic import atomic, atomic_write

__all__ = ["IMAGE_SUFFIXES", "match_stimuli", "load_stimuli", "area_readouts", "parse_readouts", "neural_report",
           "print_neural_table", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _stimulus_files(folder: Path) -> list[Path]:
    from visualpath.data.contours import find_videos

    if not folder.is_dir():
        raise ValueError(f"--stimuli {folder}: no such folder")
    images = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    files = sorted(set(find_videos(folder)) | set(images))
    if not files:
        raise ValueError(f"--stimuli {folder}: no video or image files in it")
    return files


def match_stimuli(folder: str | Path, recording: Recording) -> list[Path]:
    """The file of each of the recording's stimuli, in its order: its ``stimulus_id`` as a path
    under ``folder``, else a unique file name, else a unique stem; without ids, the folder's
    sorted files, which must be as many as the stimuli."""
    folder = Path(folder)
    files = _stimulus_files(folder)
    S = recording.shape[0]
    if not recording.meta.get("stimulus_ids_given", True):
        if len(files) != S:
            raise ValueError(f"--stimuli {folder} holds {len(files)} video/image files and the responses have {S} "
                             "stimuli with no stimulus_id to match them by; give as many files, or name them")
        return files
    by_path = {f.relative_to(folder).as_posix(): f for f in files}
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
        by_stem.setdefault(f.stem, []).append(f)
    out, missing = [], []
    for sid in recording.stimulus_ids:
        key = sid.replace("\\", "/")
        found = by_path.get(key) or by_path.get(key.lstrip("./"))
        if found is None:
            many = by_name.get(Path(key).name) or by_stem.get(Path(key).stem) or by_stem.get(key) or []
            if len(many) > 1:
                raise ValueError(f"stimulus_id {sid!r} matches {len(many)} files under {folder} "
                                 f"({many[0].relative_to(folder)}, {many[1].relative_to(folder)}); name it by its path")
            found = many[0] if many else None
        if found is None:
            missing.append(sid)
        out.append(found)
    if missing:
        raise ValueError(f"{len(missing)} of {S} stimulus_id values name no file under {folder}, "
                         f"e.g. {missing[0]!r}")
    if len(set(out)) < len(out):
        twice = next(f for f in out if out.count(f) > 1)
        raise ValueError(f"two stimulus_id values name the same file {twice.relative_to(folder)}")
    return out


def _image_clip(path: Path, frames: int, size: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # (3, H, W) uint8
    return pixels[:, None].expand(3, frames, size, size).contiguous()


def load_stimuli(files: list[Path], run_dir: Path | None, frames: int | None = None,
                 size: int | None = None) -> tuple[torch.Tensor, list[int], list[tuple[str, str]]]:
    """``(S', 3, T, H, W)`` uint8 clips of the readable files, their indices in ``files``, and
    the unreadable ones with why (skipped, each named on stderr)."""
    from analysis.cli import _dataset, _readable, _sampling

    data = _sampling(run_dir)
    frames, size = frames or data.get("frames", 16), size or data.get("size", 224)
    videos, unreadable = _readable([f for f in files if f.suffix.lower() not in IMAGE_SUFFIXES], run_dir, frames,
                                   size, what="stimulus")
    dataset = _dataset(run_dir, videos, frames, size) if videos else None
    position = {f: i for i, f in enumerate(videos)}
    bad = [(str(f), one_line(why)) for f, why in unreadable]
    clips, kept = [], []
    for i, f in enumerate(files):
        if f in position:
            clips.append(dataset[position[f]]["video"][0])
        elif f.suffix.lower() in IMAGE_SUFFIXES:
            try:
                clips.append(_image_clip(f, frames, size))
            except OSError as err:
                bad.append((str(f), one_line(err)))
                print(f"skipping unreadable stimulus {f}: {one_line(err)}", file=sys.stderr)
                continue
        else:
            continue
        kept.append(i)
    if not clips:
        raise ValueError(f"none of the {len(files)} stimuli could be read ({bad[0][1]})")
    return torch.stack(clips), kept, bad


@torch.no_grad()
def area_readouts(model, clips: torch.Tensor, readout: str = "pooled", cells: int = 4, areas=None,
                  batch_size: int = 16, device: str = "cpu") -> dict[str, np.ndarray]:
    """``{STREAM.AREA: (S, F)}`` features of ``clips`` for every area of every stream (or the
    ``areas`` named, by ``STREAM.AREA`` or by area name), read out by
    :func:`analysis.encoding.readout`."""
    from analysis.encoding import readout as read
    from analysis.features import area_features, token_grid

    model.eval().to(device)
    names = [f"{s.name}.{a.name}" for s in model.pathway.streams for a in s.areas]
    wanted = names if not areas else [n for n in names if n in areas or n.split(".", 1)[1] in areas]
    if areas:
        unknown = [a for a in areas if a not in names and not any(n.split(".", 1)[1] == a for n in names)]
        if unknown:
            raise ValueError(f"--areas {unknown[0]!r} is not an area of the run; its areas: {', '.join(names)}")
    chunks: dict[str, list[torch.Tensor]] = {}
    for stream in dict.fromkeys(n.split(".", 1)[0] for n in wanted):
        for i in range(0, len(clips), batch_size):
            x = clips[i:i + batch_size].to(device)
            grid = token_grid(model, stream, x)
            for area, tokens in area_features(model, x, stream).items():
                key = f"{stream}.{area}"
                if key in wanted:
                    chunks.setdefault(key, []).append(read(tokens.float(), grid, readout, cells).cpu())
    return {k: torch.cat(chunks[k]).numpy().astype(np.float64) for k in wanted}


def parse_readouts(readout: str | list[str] | dict, regions: list[str] | None) -> dict[str, str]:
    """``{region: "grid" | "pooled"}`` from one readout for every region, or ``REGION=READOUT``
    items (``["V1=grid", "MT=pooled"]``; a bare item is the default for the regions not named)."""
    names = list(dict.fromkeys(regions or ["all"]))
    items = [readout] if isinstance(readout, str) else list(readout) if not isinstance(readout, dict) else \
        [f"{k}={v}" for k, v in readout.items()]
    default, chosen = "pooled", {}
    for item in items:
        region, _, how = item.rpartition("=")
        if how not in ("grid", "pooled"):
            raise ValueError(f"--readout {item!r}: a readout is grid or pooled (or REGION=grid|pooled)")
        if not region:
            default = how
        elif region not in names:
            raise ValueError(f"--readout {item!r}: the recording has no region {region!r}; its regions: "
                             f"{', '.join(names)}")
        else:
            chosen[region] = how
    return {region: chosen.get(region, default) for region in names}


def neural_report(run_dir: str | Path, stimuli: str | Path, responses: str | Path | Recording, *, areas=None,
                  readout: str | list[str] | dict = "pooled", cells: int = 4, folds: int = 5, seed: int = 0,
                  rsa_method: str = "spearman", time_bins=None, baseline: bool = True, out: str | Path | None = None,
                  device: str = "cpu", trust_code: bool = False, min_reliability: float = 0.1,
                  figure: bool = True, random_draws: int = 3) -> dict:
    """Encoding models and RSA of every area of a run (and of its graph with random weights)
    against a recording; writes ``results.json``, ``neural.png`` and rsatoolbox's files to
    ``out`` (default ``RUN_DIR/analysis/neural``) and returns the results. ``readout``: one
    for every region, or per region (:func:`parse_readouts`): a spatial ``grid`` readout for
    small retinotopic receptive fields, ``pooled`` for large ones. ``random_draws``: the
    random-weights baseline is drawn this many times (seeds ``seed``, ``seed + 1``, ...; the
    first also scored by RSA), its encoding medians reported as their mean and spread."""
    from analysis.encoding import encoding_scores
    from analysis.features import load_run, random_weights
    from analysis.neural_rsa import METHODS, compare_areas

    run_dir = Path(run_dir)
    needs("rsatoolbox", "python -m analysis neural (RSA)")
    recording = responses if isinstance(responses, Recording) else read_recording(responses)
    readouts = parse_readouts(readout, recording.regions)
    if rsa_method not in METHODS:
        raise ValueError(f"--rsa-method {rsa_method!r} is not one of {', '.join(METHODS)}")
    if cells < 1:
        raise ValueError(f"--cells must be at least 1, got {cells}")
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise ValueError(f"--random-draws must be an integer >= 1, got {random_draws!r}")
    recording.check_folds(folds)
    if time_bins is not None and recording.responses[..., time_bins].shape[-1] == 0:
        raise ValueError(f"--time-bins {time_bins.start}:{time_bins.stop} selects none of the recording's "
                         f"{recording.shape[3]} time bins")
    files = match_stimuli(stimuli, recording)
    model = load_run(run_dir, device=device, trust_code=trust_code)  # checks the run before any compute
    clips, kept, unreadable = load_stimuli(files, run_dir)
    if len(kept) < len(files):
        recording = Recording(recording.responses[kept], [recording.stimulus_ids[i] for i in kept],
                              recording.neuroid_ids, recording.regions, recording.source, recording.meta)
        recording.check_folds(folds)
    out_dir = Path(out) if out is not None else run_dir / "analysis" / "neural"
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {"trained": model}
    if baseline:
        models["random_init"] = random_weights(model, seed=seed, device=device)
    result = {"run_dir": str(run_dir), "stimuli": str(stimuli), "responses": recording.source,
              "readout": readouts, "cells": cells, "stimulus_count": recording.shape[0],
              "neuroid_count": recording.shape[1], "repetitions": recording.repetitions,
              "skipped": len(unreadable), "unreadable": dict(unreadable), "figures": []}
    regions = np.array(recording.regions or ["all"] * recording.shape[1])
    for label, m in models.items():
        encoding = {"regions": {}, "by_readout": {}}
        rsa = {"method": rsa_method, "rdm_method": "correlation", "regions": {}}
        for how in dict.fromkeys(readouts.values()):
            group = np.isin(regions, [g for g, r in readouts.items() if r == how])
            part = recording if group.all() else recording.select(group)
            feats = area_readouts(m, clips, how, cells, areas, device=device)
            scores = encoding_scores(feats, part, folds=folds, seed=seed, min_reliability=min_reliability,
                                     time_bins=time_bins)
            encoding["by_readout"][how] = scores
            encoding["regions"].update(scores["regions"])
            compared = compare_areas(feats, part, rsa_method, time_bins=time_bins,
                                     out_dir=out_dir / "rsatoolbox" / label / how)
            rsa["regions"].update(compared["regions"])
        order = list(dict.fromkeys(regions.tolist()))
        encoding["regions"] = {g: encoding["regions"][g] for g in order}
        rsa["regions"] = {g: rsa["regions"][g] for g in order}
        result[label] = {"encoding": encoding, "rsa": rsa}
    if baseline:  # more draws of the random weights: one draw moves a score by more than a trained model does
        draws = {region: {area: [row["median_corrected"]] for area, row in enc["areas"].items()}
                 for region, enc in result["random_init"]["encoding"]["regions"].items()}
        for k in range(1, random_draws):
            other = random_weights(model, seed=seed + k, device=device)
            for how in dict.fromkeys(readouts.values()):
                group = np.isin(regions, [g for g, r in readouts.items() if r == how])
                part = recording if group.all() else recording.select(group)
                scores = encoding_scores(area_readouts(other, clips, how, cells, areas, device=device), part,
                                         folds=folds, seed=seed, min_reliability=min_reliability, time_bins=time_bins,
                                         control=False)
                for region, enc in scores["regions"].items():
                    for area, row in enc["areas"].items():
                        draws[region][area].append(row["median_corrected"])
        result["random_init_draws"] = draws
    assignment = {region: r["assigned_area"] for region, r in result["trained"]["encoding"]["regions"].items()}
    result["assignment"] = assignment
    # Brain-Score's form of a layer commitment: region -> the model layer that stands for it
    result["region_layer_map"] = {region: area for region, area in assignment.items() if area is not None}
    if figure:
        from analysis.figures import neural_figure

        fig = neural_figure(result)
        path = out_dir / "neural.png"
        atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
        import matplotlib.pyplot as plt

        plt.close(fig)
        result["figures"] = [str(path)]
    from analysis.report import json_ready

    atomic_write(out_dir / "results.json", json.dumps(json_ready(result), indent=1))
    return result


def _num(value, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _with_band(value, band) -> str:
    if not band or value is None:
        return _num(value)
    return f"{_num(value)} [{_num(band[0])} to {_num(band[1])}]"


def _assignment(region: str, enc: dict) -> str:
    area, runner, p = enc["assigned_area"], enc.get("runner_up"), enc.get("assignment_p")
    if runner is None or p is None or not math.isfinite(p):
        return f"{region} -> {area}"
    verdict = "" if enc.get("clear_assignment") else ": no clear assignment"
    return f"{region} -> {area} (p = {p:.3f} against {runner}{verdict})"


def print_neural_table(result: dict, console=None) -> None:
    """Per region and area: noise-corrected predictivity (median, 95% interval) trained and
    with random weights, raw r, the shuffled control, how many neuroids it predicts best, and
    RSA against the region's RDMs with rsatoolbox's noise ceiling."""
    from rich.table import Table

    from visualpath import terminal

    console = console or terminal.console()
    trained, random_init = result["trained"], result.get("random_init")
    rsa_method = trained["rsa"]["method"]
    for region, enc in trained["encoding"]["regions"].items():
        rsa = trained["rsa"]["regions"][region]
        low, high = rsa["noise_ceiling"]
        table = Table(title=f"{region} ({result['readout'][region]} readout): {enc['neuroids']} neuroids "
                            f"({enc['reliable']} reliable), median ceiling "
                            f"{_num(enc['median_ceiling'])}; RSA ({rsa_method}) ceiling {_num(low)}-{_num(high)}")
        for column in ("area", "corrected", "95% CI", "random (mean ± sd)", "r", "shuffled r [95% null band]",
                       "best for", "RSA", "RSA random"):
            table.add_column(column, justify="left" if column == "area" else "right")
        for area, row in enc["areas"].items():
            rnd = result.get("random_init_draws", {}).get(region, {}).get(area) if random_init else None
            rnd_rsa = random_init["rsa"]["regions"][region]["areas"][area]["mean"] if random_init else None
            table.add_row(area + (" *" if area == enc["assigned_area"] else ""), _num(row["median_corrected"]),
                          f"{_num(row['lo'])}-{_num(row['hi'])}", _mean_sd(rnd) if rnd else "-",
                          _num(row["median_r"]), _with_band(row.get("shuffled_median_r"), row.get("shuffled_band95")),
                          str(enc["best_area_counts"][area]), _num(rsa["areas"][area]["mean"], 3),
                          _num(rnd_rsa, 3))
        console.print(table)
    regions = trained["encoding"]["regions"]
    console.print("assignment (* above; highest median noise-corrected predictivity; p: paired bootstrap over "
                  "neuroids that the runner-up is at least as good): "
                  + ", ".join(_assignment(region, regions[region]) for region in result["assignment"]))
    if result.get("skipped"):
        console.print(f"skipped {result['skipped']} unreadable stimuli (named in results.json)")
    if result["figures"]:
        console.print("figure: " + ", ".join(result["figures"]))


def _mean_sd(values) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "-"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return _num(mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    return f"{_num(mean)} ± {_num(sd)}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis neural",
                                     description="Which area of a run predicts which recorded neurons, and how well "
                                                 "against the noise ceiling: encoding models and RSA per area and "
                                                 "region, beside the same graph with random weights.",
                                     epilog="formats, matching and every figure: docs/neural.md")
    parser.add_argument("run_dir", help="a recipe's run directory (any graph)")
    parser.add_argument("--stimuli", required=True, help="folder of the stimuli (video or image files)")
    parser.add_argument("--responses", required=True,
                        help="the recording: .npy, .npz, .h5/.hdf5 or NetCDF .nc (xarray / Brain-Score assembly)")
    parser.add_argument("--areas", nargs="+", default=None, help="areas to compare (STREAM.AREA or AREA; default all)")
    parser.add_argument("--readout", nargs="+", default=["pooled"], metavar="[REGION=]grid|pooled",
                        help="pooled: the mean over tokens (default); grid: features of each of cells x cells parts "
                             "of the view, for small retinotopic receptive fields; per region, e.g. V1=grid MT=pooled")
    parser.add_argument("--cells", type=int, default=4, help="the grid readout's cells per side (default 4)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds over stimuli (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="folds, split-halves, bootstrap and random weights")
    parser.add_argument("--rsa-method", default="spearman",
                        help="rsatoolbox's RDM comparison: spearman (default), corr, cosine, corr_cov, cosine_cov, "
                             "rho-a, tau-a, kendall")
    parser.add_argument("--time-bins", default=None,
                        help="the time bins to average, START:STOP (default all)")
    parser.add_argument("--min-reliability", type=float, default=0.1,
                        help="neuroids with a lower split-half reliability are left out of corrected medians")
    parser.add_argument("--no-baseline", action="store_true", help="skip the random-weights baseline")
    parser.add_argument("--random-draws", type=int, default=3,
                        help="random-weight draws of the graph for the baseline (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/analysis/neural)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        time_bins = None
        if args.time_bins is not None:
            start, _, stop = args.time_bins.partition(":")
            try:
                time_bins = slice(int(start) if start else None, int(stop) if stop else None)
            except ValueError:
                raise ValueError(f"--time-bins must be START:STOP, got {args.time_bins!r}") from None
        result = neural_report(args.run_dir, args.stimuli, args.responses, areas=args.areas, readout=args.readout,
                               cells=args.cells, folds=args.folds, seed=args.seed, rsa_method=args.rsa_method,
                               time_bins=time_bins, baseline=not args.no_baseline, out=args.out, device=args.device,
                               trust_code=args.trust_code, min_reliability=args.min_reliability,
                               random_draws=args.random_draws)
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk (R13): what was being written is left whole or not at all
        return exit_if_disk_full(err)
    except KeyboardInterrupt:
        print("interrupted: the same command starts again", file=sys.stderr)
        return 130
    print_neural_table(result)
    return 0
