"""What ``--variant small`` shows in minutes: whether each area of a graph learns anything.

    python -m benchmarks.small_variant                       # the paper's graph, 3 seeds, ~15 min
    python -m benchmarks.small_variant --pathway tests/fixtures/v3_sobel.py:build --seeds 0
    python -m benchmarks.small_variant --docs                # also writes docs/small_variant.md

Per seed it runs the commands a user types: ``python -m recipes.bimm_ucf101 --variant small
seed=S run_dir=...`` (timed; the built-in set is generated once before the first, so the
time is the variant's own), then ``python -m analysis RUN --no-figures``, and reads from
``RUN/analysis/results.json`` each area's fraction of its target left at masked tokens
(``target_left``; 1 = nothing learned) beside its 8-neighbour reference, and its linear probe
beside two references that ``python -m analysis`` draws several times: the same graph with
random weights, and the recipe's untrained start (each video stream inherited from its image
stream, as the joint stage starts; decision D21). Both references are drawn with seeds 0, 1,
... whatever the run's seed, so they are the same for every run and are printed once, as the
mean ± sd over their draws. An area that learns shows ``target_left`` below 1 and a probe above
every draw of both references. Writes ``OUT/small.json`` and ``OUT/small.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "render", "findings"]

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def measure(seeds: list[int], out: Path, pathway: str | None = None) -> dict:
    graph = [f"pathway={pathway}"] if pathway else []
    from recipes import bimm_ucf101, stages

    stages.video_records(bimm_ucf101.VARIANTS["small"], train=True)  # the built-in set, generated once first
    runs = []
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        seconds = _run(["-m", "recipes.bimm_ucf101", "--variant", "small", f"seed={seed}", f"run_dir={run_dir}",
                        "resume=false", *graph])
        analysis = _run(["-m", "analysis", str(run_dir), "--no-figures"])
        results = json.loads((run_dir / "results.json").read_text())
        rows = json.loads((run_dir / "analysis" / "results.json").read_text())["rows"]
        runs.append({"seed": seed, "seconds": seconds, "analysis_seconds": analysis, "top1": results["top1"],
                     "chance": results["chance"], "rows": [
                         {k: r.get(k) for k in ("stream", "area", "target_left", "target_left_neighbours",
                                                "probe_top1", "random_init_probe_top1", "random_init_probe_draws",
                                                "untrained_start_probe_draws")} for r in rows]})
    return {"command": f"python -m benchmarks.small_variant --seeds {' '.join(map(str, seeds))}"
                       + (f" --pathway {pathway}" if pathway else ""),
            "graph": pathway or "the paper's BIMM graph", "machine": f"{os.cpu_count()} CPU cores, "
            f"{platform.processor() or platform.machine()}", "runs": runs}


def _spread(values: list[float], fmt: str) -> str:
    mid = statistics.mean(values)
    half = (max(values) - min(values)) / 2
    return f"{mid:{fmt}} ± {half:{fmt}}" if len(values) > 1 else f"{mid:{fmt}}"


def _draws(rows: list[dict], name: str) -> list[float]:
    """A reference's draws, the same for every seed's run (drawn with seeds 0, 1, ...): the
    first run's. A measurement written before the draws were recorded has one value per run,
    the mean of its draws (or its one draw), equal on every run: that value."""
    draws = rows[0].get(f"{name}_draws")
    if draws:
        return list(draws)
    value = rows[0].get(f"{name}_top1")
    return [] if value is None else [value]


def _reference(draws: list[float]) -> str:
    from analysis.report import draws_text

    return draws_text(draws) if draws else "–"


def render(result: dict) -> str:
    runs = result["runs"]
    lines = [f"Graph: {result['graph']}; {len(runs)} seed(s) ({', '.join(str(r['seed']) for r in runs)}); "
             f"{result['machine']}. Command: `{result['command']}`.", "",
             f"- `python -m recipes.bimm_ucf101 --variant small`: {_spread([r['seconds'] / 60 for r in runs], '.2f')} "
             f"min per run (range {min(r['seconds'] for r in runs) / 60:.2f}–{max(r['seconds'] for r in runs) / 60:.2f}"
             f"), the built-in set already generated; finetuned top-1 "
             f"{_spread([100 * r['top1'] for r in runs], '.1f')}% (chance {100 * runs[0]['chance']:.0f}%).",
             f"- `python -m analysis RUN --no-figures`: {_spread([r['analysis_seconds'] / 60 for r in runs], '.2f')} "
             "min.", "",
             "Mean ± half the range over seeds; the references, the same for every seed (drawn with seeds 0, 1, ... "
             f"whatever the run's seed), as the mean ± sd over {_draw_count(runs)}:", "",
             "| stream | area | target left (1 = nothing learned) | 8-neighbour reference | linear probe % | "
             "same graph, random weights % | recipe's untrained start % |", "|---|---|---|---|---|---|---|"]
    keys = [(r["stream"], r["area"]) for r in runs[0]["rows"]]
    for stream, area in keys:
        rows = [next(x for x in r["rows"] if (x["stream"], x["area"]) == (stream, area)) for r in runs]

        def col(name: str, scale: float = 1.0, fmt: str = ".2f") -> str:
            values = [x[name] * scale for x in rows if x[name] is not None]
            return _spread(values, fmt) if values else "–"

        lines.append(f"| {stream} | {area} | {col('target_left')} | {col('target_left_neighbours')} | "
                     f"{col('probe_top1', 100, '.1f')} | {_reference(_draws(rows, 'random_init_probe'))} | "
                     f"{_reference(_draws(rows, 'untrained_start_probe'))} |")
    return "\n".join(lines) + "\n\n" + findings(result) + "\n"


def _draw_count(runs: list[dict]) -> str:
    n = max(len(_draws([r], "random_init_probe")) for r in runs[0]["rows"])
    return f"{n} draws" if n > 1 else "1 draw (recorded before the draws were)"


def findings(result: dict) -> str:
    """What the table shows, in words computed from it: which areas left less than all of
    their target on every seed, and which probes beat every draw of both references (random
    weights, the recipe's untrained start) on every seed, or none of them on any."""
    runs = result["runs"]
    learned, above, below = [], [], []
    for stream, area in [(r["stream"], r["area"]) for r in runs[0]["rows"]]:
        rows = [next(x for x in r["rows"] if (x["stream"], x["area"]) == (stream, area)) for r in runs]
        name = f"{stream} {area}"
        if all(x["target_left"] is not None and x["target_left"] < 0.99 for x in rows):
            learned.append(f"{name} ({max(x['target_left'] for x in rows):.2f} at most)")
        references = _draws(rows, "random_init_probe") + _draws(rows, "untrained_start_probe")
        probes = [x["probe_top1"] for x in rows if x["probe_top1"] is not None]
        if probes and references and all(p > max(references) for p in probes):
            above.append(name)
        elif probes and references and all(p <= min(references) for p in probes):
            below.append(name)
    n = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    said = ["**What it shows.** Target left below 0.99 on every one of the " + n + ": "
            + (", ".join(learned) if learned else "no area") + "; every other area left 0.99 or more of it on a seed "
            "at least."]
    said.append("Probes above every draw of both references on every seed: "
                + (", ".join(above) if above else "none") + "; at or below every draw on every seed: "
                + (", ".join(below) if below else "none") + ".")
    if learned and not above:
        said.append("At this budget the target fit is the measure that tells an area that learns from one "
                    "that does not: the trained features do not yet probe better than random ones. Pretraining "
                    "first takes the probes below where they started and passes the random-weights column "
                    "only after several minutes more (docs/probe_curve.md).")
    return " ".join(said)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_variant", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pathway", default=None, help="a graph of your own (FILE.py:FN or module:FN)")
    parser.add_argument("--out", default="runs/small_variant")
    parser.add_argument("--docs", action="store_true", help="also write docs/small_variant.md and .json")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="render a measurement written before (OUT/small.json) instead of measuring")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    result = json.loads(Path(args.from_json).read_text()) if args.from_json else \
        measure(args.seeds, out, args.pathway)
    text = render(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "small.json").write_text(json.dumps(result, indent=1))
    (out / "small.md").write_text(text)
    if args.docs:
        (ROOT / "docs" / "small_variant.json").write_text(json.dumps(result, indent=1))
        (ROOT / "docs" / "small_variant.md").write_text(
            "# `--variant small`: does each area learn, in minutes\n\n"
            "Generated by `python -m benchmarks.small_variant --docs` (decision S7 in [decisions.md](decisions.md)).\n\n"
            + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
