"""What the demo's pretraining is worth: BIMM against the VideoMAE baseline and against no
pretraining, over several seeds, on the built-in set.

    python -m benchmarks.demo_compare                       # 3 seeds, about 1 h on 2 CPU cores
    python -m benchmarks.demo_compare --seeds 0 1 --variant tiny --out /tmp/compare

Per seed it runs, each as the command a user types (``seed=S run_dir=...``):

- ``bimm``: ``python -m recipes.bimm_ucf101`` (ventral, joint, finetune, test);
- ``videomae``: ``python -m recipes.videomae_ucf101`` (the same joint schedule on the
  dorsal stream with one RGB target, then the same finetuning);
- ``scratch``: ``python -m recipes.bimm_ucf101 stages=finetune,test``: the same
  finetuning from random weights.

and measures, for each pretrained run, the fraction of each area's target variance its
decoder leaves unexplained at masked tokens after each stage (:mod:`analysis.fit`, on the
test videos) and the frozen-feature linear probe and kNN of every area
(:func:`analysis.report.analyse_run`) beside its two references, each drawn several times
with seeds 0, 1, ... whatever the run's seed (so the same for every seed and printed once, as
the mean ± sd over the draws): the same graph with random weights, and the recipe's untrained
start (each video stream inherited from its image stream, as the joint stage starts, D21);
and once per graph the fraction of each target left by the mean of a token's
8 neighbours' true targets (:func:`analysis.fit.neighbour_fit`), a reference of how much
the targets' local redundancy gives away. It writes ``OUT/compare.json`` and ``OUT/compare.md``; with ``--docs`` also
``docs/demo_results.md`` (and ``.json``), ``docs/demo_reconstruction.png`` and
``docs/demo_reconstruction_ventral.png`` (the first seed's BIMM figures, dorsal and ventral)
and the README's results block, so the README's numbers are this script's.
``--from-json docs/demo_results.json`` writes the tables again from a stored measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.memory import run_measured

__all__ = ["main", "render", "readme_block"]

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "bimm": ("recipes.bimm_ucf101", ()),
    "videomae": ("recipes.videomae_ucf101", ()),
    "scratch": ("recipes.bimm_ucf101", ("stages=finetune,test",)),
}
LABELS = {"bimm": "BIMM (`recipes.bimm_ucf101`)", "videomae": "VideoMAE (`recipes.videomae_ucf101`)",
          "scratch": "none (`stages=finetune,test`)"}
README_START, README_END = "<!-- demo-results:start -->", "<!-- demo-results:end -->"


def _run(kind: str, seed: int, variant: str, out: Path, log) -> dict:
    module, extra = RUNS[kind]
    run_dir = out / f"{kind}-s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # each measurement starts from nothing, so its wall time is whole
    cmd = [sys.executable, "-m", module, "--variant", variant, f"seed={seed}", f"run_dir={run_dir}", *extra]
    log(f"$ {' '.join(cmd[1:])}")
    with open(out / f"{kind}-s{seed}.log", "w") as f:
        measured = run_measured(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if measured["returncode"]:
        raise subprocess.CalledProcessError(measured["returncode"], cmd)
    results = json.loads((run_dir / "results.json").read_text())
    return {"run_dir": str(run_dir), "command": " ".join(["python", *cmd[1:]]), "wall_s": measured["wall_s"],
            "peak_rss_mib": measured["peak_rss_mib"], "peak_tree_mib": measured["peak_tree_mib"],
            "top1": results["top1"], "chance": results.get("chance")}


def _measure(run_dir: Path, kind: str) -> dict:
    """Target fit after each pretraining stage, and the frozen probes of the joint model."""
    from analysis.features import load_run, run_dataset
    from analysis.fit import target_fit
    from analysis.report import analyse_run

    test = run_dataset(run_dir, train=False)
    fit = {}
    for stage in (("ventral", "joint") if kind == "bimm" else ("joint",)):
        model = load_run(run_dir, stage=stage)
        fit[stage] = target_fit(model, test, batches=None)
    report = analyse_run(run_dir, stage="joint", figures=False, progress=False)
    probes = {f"{r['stream']}.{r['area']}": {"probe": r["probe_top1"], "knn": r["knn_top1"],
                                            "random_probe": r.get("random_init_probe_top1"),
                                            "random_draws": r.get("random_init_probe_draws"),
                                            "start_draws": r.get("untrained_start_probe_draws"),
                                            "dsi": r.get("dsi"), "osi": r.get("osi")}
              for r in report["rows"]}
    return {"fit": fit, "probes": probes}


def _neighbour_reference(run_dir: Path) -> dict:
    """:func:`analysis.fit.neighbour_fit` of a run's graph on its test videos."""
    from analysis.features import load_run, run_dataset
    from analysis.fit import neighbour_fit

    return neighbour_fit(load_run(run_dir, stage="joint"), run_dataset(run_dir, train=False), batches=None)


def _stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "spread": None, "values": []}
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values), "values": values}


def summarise(per_seed: dict) -> dict:
    """Means and spreads (max - min over seeds) of every measured number."""
    seeds = sorted(per_seed, key=int)
    first = per_seed[seeds[0]]
    out = {"seeds": [int(s) for s in seeds], "top1": {}, "wall_s": {}, "fit": {}, "probes": {}}
    for kind in RUNS:
        out["top1"][kind] = _stats([per_seed[s][kind]["top1"] for s in seeds])
        out["wall_s"][kind] = _stats([per_seed[s][kind]["wall_s"] for s in seeds])
        for peak in ("peak_rss_mib", "peak_tree_mib"):  # absent from runs measured before they were
            out.setdefault(peak, {})[kind] = _stats([per_seed[s][kind].get(peak) for s in seeds])
    for kind in ("bimm", "videomae"):
        out["fit"][kind] = {
            stage: {stream: {area: _stats([per_seed[s][kind]["fit"][stage][stream][area] for s in seeds])
                             for area in areas}
                    for stream, areas in streams.items()}
            for stage, streams in first[kind]["fit"].items()}
        out["probes"][kind] = {
            key: {**{m: _stats([per_seed[s][kind]["probes"][key][m] for s in seeds])
                     for m in ("probe", "knn", "random_probe", "dsi")},
                  # the references' draws do not depend on the run's seed: the first seed's
                  **{m: first[kind]["probes"][key].get(m) for m in ("random_draws", "start_draws")}}
            for key in first[kind]["probes"]}
    out["chance"] = first["bimm"]["chance"]
    return out


def _pct(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    vals = " / ".join(f"{100 * v:.1f}" for v in stat["values"])
    return f"{100 * stat['mean']:.1f} ± {100 * stat['spread'] / 2:.1f} ({vals})"


def _reference_draws(stats: dict, draws_key: str = "random_draws") -> list[float]:
    """A reference probe's draws; a measurement recorded before the draws were has one draw
    of random weights (seed 0, the same on every seed) and no untrained start."""
    draws = stats.get(draws_key)
    if draws:
        return list(draws)
    if draws_key != "random_draws" or stats["random_probe"]["mean"] is None:
        return []
    return [stats["random_probe"]["values"][0]]


def _reference(stats: dict, draws_key: str = "random_draws", label: str = "") -> str:
    """The mean ± sd over a reference's draws, and how many there were."""
    draws = _reference_draws(stats, draws_key)
    if not draws:
        return "–"
    from analysis.report import draws_text

    return f"{draws_text(draws)} ({label}{len(draws)} draw{'s' if len(draws) > 1 else ''})"


def _frac(stat: dict) -> str:
    if stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.2f} ({' / '.join(f'{v:.2f}' for v in stat['values'])})"


def _minutes(stat: dict) -> str:
    return f"{stat['mean'] / 60:.1f} min" if stat["mean"] is not None else "–"


def _memory(summary: dict, kind: str) -> str:
    """Mean peak memory over seeds: the largest process's resident set / the process tree's
    summed PSS (benchmarks.memory)."""
    def mib(key):
        stat = summary.get(key, {}).get(kind)
        return "–" if not stat or stat["mean"] is None else f"{stat['mean']:.0f}"

    one, tree = mib("peak_rss_mib"), mib("peak_tree_mib")
    return "–" if one == tree == "–" else f"{one} / {tree} MiB"


def readme_block(summary: dict, note: str | None = None) -> str:
    """The README's results table: finetuned top-1 and the dorsal probes, with seeds and spread."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    lines = [
        f"Top-1 on the built-in set's test videos (split 1, chance {100 * summary['chance']:.0f}%), "
        f"mean ± half the range over seeds {seeds} (each seed's value in brackets), from "
        "`python -m benchmarks.demo_compare --docs` ([docs/demo_results.md](docs/demo_results.md)):",
        "",
        "| pretraining | finetuned top-1 | frozen probe, last dorsal area | wall time | peak memory, one process / all |",
        "|---|---|---|---|---|",
    ]
    for kind in RUNS:
        probe = "–"
        if kind in summary["probes"]:
            key = [k for k in summary["probes"][kind] if k.startswith("dorsal.")][-1]
            probe = f"{_pct(summary['probes'][kind][key]['probe'])} ({key.split('.', 1)[1]})"
        elif "bimm" in summary["probes"]:  # no pretraining: the same graph with random weights
            key = [k for k in summary["probes"]["bimm"] if k.startswith("dorsal.")][-1]
            probe = _reference(summary["probes"]["bimm"][key], label="random weights, ")
        lines.append(f"| {LABELS[kind]} | {_pct(summary['top1'][kind])} | {probe} | "
                     f"{_minutes(summary['wall_s'][kind])} | {_memory(summary, kind)} |")
    if note:
        lines += ["", note]
    return "\n".join(lines)


def render(summary: dict, meta: dict) -> str:
    """``docs/demo_results.md``: every number the script measured."""
    lines = [
        "# What the demo's pretraining is worth",
        "",
        f"Measured by `{meta['command']}` on {meta['machine']}, {meta['date']}; seeds "
        f"{', '.join(str(s) for s in summary['seeds'])}. Every cell is the mean ± half the range over seeds, "
        "with each seed's value in brackets. Chance is "
        f"{100 * summary['chance']:.0f}%.",
        *([ "", meta["note"]] if meta.get("note") else []),
        "",
        "## Finetuned top-1 and wall time",
        "",
        readme_block(summary).split("\n\n", 2)[1],
        "",
        "Wall time is the whole command (pretraining, finetuning, testing), the built-in set already generated. "
        "Peak memory (`benchmarks.memory`): the largest resident set of any one process of the command (its "
        "high-water mark, what `/usr/bin/time -f %M` reports, read every 0.5 s), and the largest sum over the "
        "command's processes (the main one and its data loader's workers) of each one's proportional set size, "
        "where a page shared by n processes counts 1/n in each (sampled every 5 s).",
        "",
        "## Pretraining: fraction of each target's variance left at masked tokens",
        "",
        "1 is no better than the average target, 0 is exact (`analysis.fit.target_fit` on every test video, "
        "masks from a fixed seed). The last column is a reference that needs no training "
        "(`analysis.fit.neighbour_fit`): what is left when each token's target is predicted from the mean of "
        "its 8 neighbours' true targets, as if every neighbour were visible.",
        "",
        "| run | after stage | stream | area | unexplained variance | 8 neighbours' targets |",
        "|---|---|---|---|---|---|",
    ]
    reference = summary.get("neighbour_fit", {})
    for kind, stages in summary["fit"].items():
        for stage, streams in stages.items():
            for stream, areas in streams.items():
                for area, stat in areas.items():
                    ref = reference.get(kind, {}).get(stream, {}).get(area)
                    lines.append(f"| {kind} | {stage} | {stream} | {area} | {_frac(stat)} | "
                                 f"{'–' if ref is None else f'{ref:.2f}'} |")
    lines += [
        "",
        "## Frozen features of the pretrained encoder, per area",
        "",
        "Linear probe and kNN top-1 on features pooled over tokens (`python -m analysis RUN`), beside two "
        "references drawn with seeds 0, 1, ... whatever the run's seed, so the same for every seed (mean ± sd "
        "over the draws): \"random weights\" is the same graph never trained; \"untrained start\" is the same "
        "draws with each video stream inherited from its image stream as the joint stage starts (decision D21). "
        "A measurement recorded before `python -m analysis` drew them several times shows its one draw.",
        "",
        "| run | stream.area | linear probe | kNN | random weights, probe | untrained start, probe | median DSI |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, areas in summary["probes"].items():
        for key, stats in areas.items():
            dsi = stats["dsi"]
            lines.append(f"| {kind} | {key} | {_pct(stats['probe'])} | {_pct(stats['knn'])} | "
                         f"{_reference(stats)} | {_reference(stats, 'start_draws')} | {_frac(dsi)} |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, block: str) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} block to fill")
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{block}\n{README_END}", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", default="demo", help="the recipes' variant (demo; tiny for a smoke test)")
    parser.add_argument("--out", default="runs/demo_compare", help="folder for the runs, logs and tables")
    parser.add_argument("--note", default=None, help="a paragraph written under the tables' header (e.g. the machine was shared)")
    parser.add_argument("--docs", action="store_true",
                        help="also write docs/demo_results.md, the reconstruction figures in docs/ and the README block")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="write the tables again from a stored measurement (docs/demo_results.json) instead of "
                             "measuring; with --docs, docs/demo_results.md and the README block (not the figures)")
    args = parser.parse_args(argv)
    if args.from_json:
        stored = json.loads(Path(args.from_json).read_text())
        table = render(stored["summary"], stored["meta"])
        print(table)
        if args.docs:
            (ROOT / "docs" / "demo_results.md").write_text(table)
            update_readme(ROOT / "README.md", readme_block(stored["summary"], stored["meta"].get("note")))
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "compare.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("variant", args.variant) != args.variant:
        state = {}
    per_seed = state.setdefault("per_seed", {})
    state["variant"] = args.variant

    def log(msg: str) -> None:
        print(msg, flush=True)

    for seed in args.seeds:
        done = per_seed.setdefault(str(seed), {})
        for kind in RUNS:
            if kind in done:  # measured by an earlier, interrupted invocation
                log(f"seed {seed} {kind}: already measured")
                continue
            result = _run(kind, seed, args.variant, out, log)
            if kind != "scratch":
                result.update(_measure(Path(result["run_dir"]), kind))
            done[kind] = result
            state_file.write_text(json.dumps(state, indent=1))
            log(f"seed {seed} {kind}: top-1 {100 * result['top1']:.1f}% in {result['wall_s'] / 60:.1f} min")
    chosen = {str(s): per_seed[str(s)] for s in args.seeds}
    reference = state.setdefault("neighbour_fit", {})
    for kind in ("bimm", "videomae"):
        if kind not in reference:  # the targets' own local redundancy: the same for every seed
            reference[kind] = _neighbour_reference(Path(chosen[str(args.seeds[0])][kind]["run_dir"]))
            state_file.write_text(json.dumps(state, indent=1))
    summary = summarise(chosen)
    summary["neighbour_fit"] = reference
    command = (f"python -m benchmarks.demo_compare --seeds {' '.join(map(str, args.seeds))} --variant {args.variant} "
               f"--out {args.out}" + (" --docs" if args.docs else ""))
    meta = {"command": command,
            "machine": f"{platform.machine()} CPU, {_cores()} cores, torch {_torch_version()}",
            "date": time.strftime("%Y-%m-%d"), "note": args.note}
    state["summary"], state["meta"] = summary, meta
    state_file.write_text(json.dumps(state, indent=1))
    table = render(summary, meta)
    (out / "compare.md").write_text(table)
    print(table)
    if args.docs:
        (ROOT / "docs" / "demo_results.md").write_text(table)
        (ROOT / "docs" / "demo_results.json").write_text(json.dumps({"summary": summary, "meta": meta}, indent=1) + "\n")
        from PIL import Image

        run_dir = Path(chosen[str(args.seeds[0])]["bimm"]["run_dir"])
        for stream, name in (("dorsal", "demo_reconstruction.png"), ("ventral", "demo_reconstruction_ventral.png")):
            figure = run_dir / f"reconstruction_{stream}.png"
            if figure.exists():  # a 256-colour copy: a fifth of the size, the same figure to the eye
                Image.open(figure).convert("RGB").quantize(256).save(ROOT / "docs" / name, optimize=True)
        update_readme(ROOT / "README.md", readme_block(summary, meta.get("note")))
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
