"""``analysis neural`` checked on a recording whose answer is known: simulated V1 and MT cells.

    python -m recipes.bimm_ucf101                                              # the demo run (~15 min here)
    python -m benchmarks.neural_validation runs/bimm_ucf101_demo --docs        # ~3 min; docs/neural_validation.md

The cells (:mod:`analysis.simulated_cells`: V1 complex cells as Gabor energy, MT cells as
pattern-motion energy, Poisson counts over repetitions; written without the model) respond
to the run's evaluation videos, the clips the run itself reads. The recording is written as a
Brain-Score-style NetCDF assembly, and ``python -m analysis neural RUN --stimuli DATA
--responses recording.nc --readout R`` is run as a user types it, for each readout. Then,
independently of the command:

- the noise ceiling it estimates against the simulation's true reliability;
- the true rates as a noise-free model: noise-corrected ``r`` should be 1;
- the stimulus-shuffled control of every area: ``r`` should be about 0;
- the command's ridge ``r`` of one area against scikit-learn called directly
  (``cross_val_predict`` with the same folds, SciPy's ``pearsonr`` per fold), and its RSA
  against rsatoolbox's ``compare`` and a hand computation (SciPy ``pdist`` + ``spearmanr``);
- which area each simulated region is assigned, and that area's encoder depth.

Writes ``OUT/neural_validation.json`` (and with ``--docs`` the page and its figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "measure", "render", "findings", "area_depths"]

ROOT = Path(__file__).resolve().parents[1]
READOUTS = {"pooled": ["pooled"], "grid": ["grid"], "per-region": ["V1=grid", "MT=pooled"]}  # --readout's words


def area_depths(spec) -> dict[str, int]:
    """``{STREAM.AREA: the encoder block its features come from (1-based)}``."""
    return {f"{s.name}.{a.name}": s.block_span(a.name).stop for s in spec.streams for a in s.areas}


def _data_root(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def measure(run: Path, out: Path, readouts: list[str], v1: int = 40, mt: int = 40, repetitions: int = 6,
            seed: int = 0, folds: int = 5) -> dict:
    import torch
    from scipy.spatial.distance import pdist
    from scipy.stats import mannwhitneyu, pearsonr, spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from analysis.encoding import ALPHAS, split_half_reliability
    from analysis.features import load_run, run_dataset
    from analysis.neural import area_readouts, load_stimuli
    from analysis.neural_rsa import data_rdms, model_rdms
    from analysis.simulated_cells import simulate_recording

    out.mkdir(parents=True, exist_ok=True)
    files = [Path(r.path) for r in run_dataset(run, train=False).records]
    root = _data_root(files)
    clips, kept, _ = load_stimuli(files, run)
    files = [files[i] for i in kept]
    start = time.perf_counter()
    recording, truth = simulate_recording(clips.numpy(), [f.relative_to(root).as_posix() for f in files], v1=v1,
                                          mt=mt, repetitions=repetitions, seed=seed)
    simulate_s = time.perf_counter() - start
    path = recording.save(out / "recording.nc")
    regions = np.array(recording.regions)
    rho = split_half_reliability(recording.per_repetition(), seed=seed)
    noise_free = np.array([pearsonr(truth.rates[:, n], recording.mean()[:, n])[0] for n in range(len(regions))])
    result = {
        "command": f"python -m benchmarks.neural_validation {run}", "run": str(run),
        "graph": json.loads((run / "config.json").read_text())["config"].get("pathway") or "the paper's graph",
        "stimuli": len(files), "v1_cells": v1, "mt_cells": mt, "repetitions": repetitions, "seed": seed,
        "simulate_seconds": simulate_s,
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}",
        "ceiling": {g: {"estimated": float(np.median(rho[regions == g])),
                        "true": float(np.median(truth.reliability[regions == g])),
                        "median_abs_difference": float(np.median(np.abs(rho - truth.reliability)[regions == g]))}
                    for g in ("V1", "MT")},
        "noise_free_corrected": {g: float(np.median((noise_free / np.sqrt(rho))[regions == g])) for g in ("V1", "MT")},
        "readouts": {},
    }
    model = load_run(run)
    depths = area_depths(model.pathway)
    for readout in readouts:
        folder = out / readout
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "analysis", "neural", str(run), "--stimuli", str(root),
                               "--responses", str(path), "--readout", *READOUTS[readout], "--folds", str(folds),
                               "--seed", str(seed), "--out", str(folder)], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"analysis neural failed:\n{done.stderr[-3000:]}")
        seconds = time.perf_counter() - start
        report = json.loads((folder / "results.json").read_text())
        (folder / "table.txt").write_text(done.stdout)
        entry = {"seconds": seconds, "assignment": report["assignment"], "readout": report["readout"],
                 "depth": {g: depths.get(a) for g, a in report["assignment"].items()}, "areas": {},
                 "shuffled_max_abs_r": max(abs(a["shuffled_median_r"]) for w in ("trained", "random_init")
                                           for g in report[w]["encoding"]["regions"].values()
                                           for a in g["areas"].values())}
        for weights in ("trained", "random_init"):
            for g in ("V1", "MT"):
                for area, row in report[weights]["encoding"]["regions"][g]["areas"].items():
                    entry["areas"].setdefault(area, {"depth": depths[area]})[f"{weights}_{g}"] = row["median_corrected"]
                    entry["areas"][area][f"{weights}_{g}_ci95"] = [row["lo"], row["hi"]]
                for area, row in report[weights]["rsa"]["regions"][g]["areas"].items():
                    entry["areas"][area][f"{weights}_{g}_rsa"] = row["mean"]
            entry[f"{weights}_rsa_ceiling"] = {g: report[weights]["rsa"]["regions"][g]["noise_ceiling"]
                                               for g in ("V1", "MT")}
        # each cell's best area, by its encoder depth: do V1 cells peak earlier than MT cells?
        best_depth: dict[str, list[int]] = {"V1": [], "MT": []}
        for scores in report["trained"]["encoding"]["by_readout"].values():
            for g, b in zip(scores["neuroids"]["region"], scores["neuroids"]["best_area"]):
                if b is not None:
                    best_depth[g].append(depths[b])
        blocks = sorted(set(depths.values()))
        entry["best_depth"] = {g: {"median_block": float(np.median(v)), "cells_per_block": {
            str(b): v.count(b) for b in blocks}} for g, v in best_depth.items()}
        entry["best_depth"]["mann_whitney_p"] = float(mannwhitneyu(best_depth["V1"], best_depth["MT"],
                                                                   alternative="less").pvalue)
        # one area recomputed outside the command: scikit-learn, SciPy and rsatoolbox called directly
        area, how = report["assignment"]["MT"], report["readout"]["MT"]
        group = np.isin(regions, [g for g, r in report["readout"].items() if r == how])
        x = area_readouts(model, clips, how, areas=[area])[area]
        y = recording.mean()[:, group]
        folds_ = KFold(folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, alpha_per_target=True)),
                                      x, y, cv=folds_)
        direct = np.array([np.mean([pearsonr(predicted[t, n], y[t, n])[0] for _, t in folds_.split(x)])
                           for n in range(y.shape[1])])
        ours = np.array(report["trained"]["encoding"]["by_readout"][how]["neuroids"]["r"][area], dtype=float)
        mt = regions == "MT"
        data = data_rdms(recording, mt)
        model_rdm = model_rdms({area: x}, recording.stimulus_ids)[area]
        from rsatoolbox.rdm import compare

        by_rsatoolbox = float(np.mean(compare(model_rdm, data, "spearman")))
        by_hand = float(np.mean([spearmanr(pdist(x, "correlation"),
                                           pdist(recording.per_repetition()[:, mt, r], "correlation"))[0]
                                 for r in data.rdm_descriptors["repetition"]]))
        entry["independent"] = {"area": area, "ridge_max_abs_difference": float(np.nanmax(np.abs(direct - ours))),
                                "rsa_command": report["trained"]["rsa"]["regions"]["MT"]["areas"][area]["mean"],
                                "rsa_rsatoolbox": by_rsatoolbox, "rsa_by_hand": by_hand}
        entry["figure"] = str(folder / "neural.png")
        result["readouts"][readout] = entry
    return result


def _n(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def _close(r: dict, region: str) -> str:
    """Which areas' medians fall inside the assigned area's 95% interval (not told apart)."""
    best = r["assignment"][region]
    lo, hi = r["areas"][best][f"trained_{region}_ci95"]
    close = [a for a, v in r["areas"].items() if a != best and v[f"trained_{region}"] is not None
             and lo <= v[f"trained_{region}"] <= hi]
    if not close:
        return f"For {region} cells no other area's median lies inside {best}'s interval ({_n(lo)}-{_n(hi)})."
    return (f"For {region} cells {', '.join(close)} lie inside {best}'s interval ({_n(lo)}-{_n(hi)}): "
            "the assignment does not tell them apart.")


def _depth(r: dict) -> str:
    b = r["best_depth"]
    per = {g: ", ".join(f"{n} at block {k}" for k, n in b[g]["cells_per_block"].items() if n) for g in ("V1", "MT")}
    return (f"Cell by cell, the best area of V1 cells lies at block {b['V1']['median_block']:g} (median; {per['V1']}), "
            f"of MT cells at block {b['MT']['median_block']:g} ({per['MT']}); one-sided Mann-Whitney p = "
            f"{b['mann_whitney_p']:.3f} that V1 cells' best areas are not earlier.")


def findings(result: dict) -> list[str]:
    """What the measurements show, in sentences computed from them."""
    out = []
    c = result["ceiling"]
    out.append(f"The split-half noise ceiling recovers the simulation's reliability: median {_n(c['V1']['estimated'])} "
               f"against {_n(c['V1']['true'])} (V1 cells), {_n(c['MT']['estimated'])} against {_n(c['MT']['true'])} "
               f"(MT), a median difference per cell of {_n(c['V1']['median_abs_difference'], 3)} / "
               f"{_n(c['MT']['median_abs_difference'], 3)}; the true rates as a noise-free model score "
               f"{_n(result['noise_free_corrected']['V1'])} / {_n(result['noise_free_corrected']['MT'])} after the "
               "noise correction (1 is right).")
    for readout, r in result["readouts"].items():
        a, d = r["assignment"], r["depth"]
        order = ("an earlier depth than" if d["V1"] < d["MT"] else "the same depth as" if d["V1"] == d["MT"]
                 else "a later depth than")
        trained_mt = r["areas"][a["MT"]]["trained_MT"]
        random_mt = r["areas"][a["MT"]]["random_init_MT"]
        best_random_mt = max(v["random_init_MT"] for v in r["areas"].values() if v["random_init_MT"] is not None)
        ventral_mt = max((v["trained_MT"] for k, v in r["areas"].items() if k.startswith("ventral.")), default=None)
        ind = r["independent"]
        out.append(
            f"`--readout {' '.join(READOUTS[readout])}`: V1 cells are assigned {a['V1']} (block {d['V1']}), "
            f"MT cells {a['MT']} (block {d['MT']}): V1 at {order} MT. {_close(r, 'V1')} {_close(r, 'MT')} "
            f"{_depth(r)} MT cells: {a['MT']} reaches {_n(trained_mt)} "
            f"noise-corrected (random weights: {_n(random_mt)}, best random area {_n(best_random_mt)})"
            + (f", the ventral stream, which sees one frame, at most {_n(ventral_mt)}" if ventral_mt is not None else "")
            + f". The shuffled control stays within {_n(r['shuffled_max_abs_r'], 3)} of 0 for every area. "
            f"Direct scikit-learn gives the command's ridge r to {ind['ridge_max_abs_difference']:.1e}; "
            f"RSA {_n(ind['rsa_command'], 4)} (command), {_n(ind['rsa_rsatoolbox'], 4)} (rsatoolbox), "
            f"{_n(ind['rsa_by_hand'], 4)} (SciPy by hand).")
    r = next(iter(result["readouts"].values()))
    rsa = {g: max(v[f"trained_{g}_rsa"] for v in r["areas"].values()) for g in ("V1", "MT")}
    low = {g: r["trained_rsa_ceiling"][g][0] for g in ("V1", "MT")}
    out.append(f"RSA (correlation-distance RDMs, Spearman) puts no area near the recording's noise ceiling: at best "
               f"{_n(rsa['V1'], 3)} for V1 cells (ceiling from {_n(low['V1'], 3)}) and {_n(rsa['MT'], 3)} for MT cells "
               f"(from {_n(low['MT'], 3)}). An RDM weighs every feature alike, so an area whose geometry over these "
               "clips is set by what the cells ignore (the scene's appearance, for MT cells) scores near 0 even where "
               "a weighted readout (the encoding model) finds the cells' signal in it.")
    return out


def render(result: dict) -> str:
    lines = ["# `analysis neural` on simulated V1 and MT cells", "",
             f"Measured by `{result['command']} --docs` on {result['machine']}: {result['stimuli']} stimuli (the run's "
             f"evaluation videos), {result['v1_cells']} V1 and {result['mt_cells']} MT cells, "
             f"{result['repetitions']} repetitions, seed {result['seed']}. Run: `{result['run']}` "
             f"(graph: {result['graph']}). How the cells are made and what is checked: "
             "`benchmarks/neural_validation.py`, decisions N1-N5 in [decisions.md](decisions.md).", "",
             "## What it shows", ""]
    lines += [f"- {f}" for f in findings(result)]
    for readout, r in result["readouts"].items():
        words = " ".join(READOUTS[readout])
        lines += ["", f"## `--readout {words}` ({r['seconds'] / 60:.1f} min for the command)", "",
                  "Median noise-corrected predictivity (95% bootstrap interval over cells); RSA (Spearman of "
                  "correlation-distance RDMs, mean over repetitions). Ceiling of RSA (rsatoolbox): "
                  + ", ".join(f"{g} {_n(lo, 3)}-{_n(hi, 3)}" for g, (lo, hi) in r["trained_rsa_ceiling"].items())
                  + ".", "",
                  "| area | block | V1 cells trained | V1 random | MT cells trained | MT random | RSA V1 | RSA MT |",
                  "|---|---|---|---|---|---|---|---|"]
        for area, v in r["areas"].items():
            lines.append(f"| {area} | {v['depth']} | {_n(v['trained_V1'])} ({_n(v['trained_V1_ci95'][0])}-"
                         f"{_n(v['trained_V1_ci95'][1])}) | {_n(v['random_init_V1'])} | {_n(v['trained_MT'])} "
                         f"({_n(v['trained_MT_ci95'][0])}-{_n(v['trained_MT_ci95'][1])}) | {_n(v['random_init_MT'])} "
                         f"| {_n(v['trained_V1_rsa'], 3)} | {_n(v['trained_MT_rsa'], 3)} |")
        lines += ["", f"![{readout}](neural_validation_{readout}.png)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.neural_validation", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a trained run directory (the demo: python -m recipes.bimm_ucf101)")
    parser.add_argument("--readouts", nargs="+", default=list(READOUTS), choices=list(READOUTS),
                        help="per-region: V1 cells read out on the grid, MT cells pooled")
    parser.add_argument("--v1", type=int, default=40)
    parser.add_argument("--mt", type=int, default=40)
    parser.add_argument("--repetitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default RUN/analysis/neural_validation)")
    parser.add_argument("--docs", action="store_true", help="also write docs/neural_validation.md and its figures")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "pathway.json").is_file():
        print(f"error: {run} is not a run directory; train one first: python -m recipes.bimm_ucf101 run_dir={run}",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else run / "analysis" / "neural_validation"
    result = measure(run, out, args.readouts, args.v1, args.mt, args.repetitions, args.seed)
    (out / "neural_validation.json").write_text(json.dumps(result, indent=1))
    print(render(result))
    if args.docs:
        docs = ROOT / "docs"
        for readout, r in result["readouts"].items():
            shutil.copy(r["figure"], docs / f"neural_validation_{readout}.png")
        (docs / "neural_validation.json").write_text(json.dumps(result, indent=1))
        (docs / "neural_validation.md").write_text(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
