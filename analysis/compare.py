"""``python -m analysis compare RUN_A RUN_B``: two analysed runs side by side, area by area,
with an interval on every probe difference -- a user's graph against the paper's, BIMM
against VideoMAE, one seed against another.

Each run must have been analysed (``python -m analysis RUN``, which saves every area's
features). The linear probes are fitted again on those features so that each test item's
outcome is known: when both runs read the same test items (the same data settings and
labels), the difference of two areas' probes gets a paired bootstrap interval over the
items (the same resampled items for both runs); otherwise Newcombe's interval for two
independent accuracies. Target fit ("target left") is one number per run over the test
clips, compared without an interval. When both runs were scored against the same recording
(``python -m analysis neural RUN ...`` into its default folder), each region's median encoding
``r`` per area is compared too, with a paired bootstrap over the neuroids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from analysis.features import Features, run_data
from analysis.readouts import newcombe_interval, probe_correct
from visualpath import terminal
from visualpath.atomic import atomic_write
from visualpath.errors import Refused, exit_if_disk_full, one_line, shown
from visualpath.rundir import read_json

__all__ = ["compare_runs", "print_comparison", "main"]


def _analysed(run_dir: Path) -> dict:
    path = run_dir / "analysis" / "results.json"
    if not path.is_file():
        raise Refused(f"{shown(run_dir)} has not been analysed: run python -m analysis {shown(run_dir)} first "
                      "(it saves the features compared here)")
    result = read_json(path, "the results of python -m analysis")
    rows = result.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("stream"), str)
                                             and isinstance(r.get("area"), str) for r in rows):
        raise Refused(f"{shown(path)} holds no rows of areas (stream, area) as python -m analysis writes them: "
                      f"run python -m analysis {shown(run_dir)} again")
    return result


def _features(run_dir: Path, stream: str, part: str) -> Features:
    path = run_dir / "analysis" / f"features_{stream}_{part}.safetensors"
    if not path.is_file():
        raise Refused(f"{shown(path)} is missing: run python -m analysis {shown(run_dir)} again")
    return Features.load(path)


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of ``mean(a) - mean(b)`` for per-item outcomes
    of the same items, resampling items (the same ones for both)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(a), size=(resamples, len(a)))
    diffs = a[index].mean(1) - b[index].mean(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def compare_runs(run_a: str | Path, run_b: str | Path, resamples: int = 2000, seed: int = 0) -> dict:
    """Per area of either run: each run's probe top-1, target left and random-weights
    reference, and the probe difference A - B with its 95% interval (``paired``: by a
    bootstrap over the same test items, else Newcombe's interval)."""
    run_a, run_b = Path(run_a), Path(run_b)
    results = {"a": _analysed(run_a), "b": _analysed(run_b)}
    same_data = run_data(run_a) == run_data(run_b)
    rows_of = {k: {(r["stream"], r["area"]): r for r in res["rows"]} for k, res in results.items()}
    keys = list(dict.fromkeys([*rows_of["a"], *rows_of["b"]]))
    correct: dict = {}
    for which, run in (("a", run_a), ("b", run_b)):
        for stream in dict.fromkeys(s for s, _ in rows_of[which]):
            test = _features(run, stream, "test")
            outcome = probe_correct(_features(run, stream, "train"), test)
            correct.update({(which, stream, area): (ok, test.labels) for area, ok in outcome.items()})
    rows, paired_all = [], True
    for stream, area in keys:
        a, b = rows_of["a"].get((stream, area)), rows_of["b"].get((stream, area))
        row = {"stream": stream, "area": area}
        for which, r in (("a", a), ("b", b)):
            found = correct.get((which, stream, area))
            row[f"probe_{which}"] = float(found[0].mean()) if found else None
            row[f"items_{which}"] = len(found[0]) if found else None
            row[f"target_left_{which}"] = r.get("target_left") if r else None
            row[f"random_{which}"] = r.get("random_init_probe_top1") if r else None
        if a and b:
            (ok_a, y_a), (ok_b, y_b) = correct[("a", stream, area)], correct[("b", stream, area)]
            paired = same_data and len(y_a) == len(y_b) and bool((y_a == y_b).all())
            paired_all &= paired
            row["probe_diff"] = row["probe_a"] - row["probe_b"]
            row["probe_diff_ci95"] = paired_interval(ok_a.astype(float), ok_b.astype(float), resamples, seed) \
                if paired else newcombe_interval(row["probe_a"], len(ok_a), row["probe_b"], len(ok_b))
            row["paired"] = paired
        rows.append(row)
    return {"run_a": str(run_a), "run_b": str(run_b), "rows": rows, "same_test_items": paired_all and same_data,
            "resamples": resamples, "seed": seed, "neural": _neural(run_a, run_b, resamples, seed)}


def _neuroids(result: dict) -> dict:
    """``{neuroid id: (region, {area: r})}`` over every readout of a trained model's encoding."""
    out = {}
    for scores in result["trained"]["encoding"]["by_readout"].values():
        n = scores["neuroids"]
        for i, (nid, region) in enumerate(zip(n["id"], n["region"])):
            out[str(nid)] = (region, {a: r[i] for a, r in n["r"].items()})
    return out


def _neural(run_a: Path, run_b: Path, resamples: int, seed: int) -> dict | None:
    """Both runs' encoding scores against one recording (``python -m analysis neural`` on
    each, its default folder): per region and area, the median predictivity ``r`` over the
    region's neuroids in each run and the difference with a paired bootstrap interval over
    the neuroids. None when either run has none or they scored different recordings."""
    paths = [run / "analysis" / "neural" / "results.json" for run in (run_a, run_b)]
    if not all(p.is_file() for p in paths):
        return None
    a, b = (read_json(p, "the results of python -m analysis neural") for p in paths)
    if a.get("responses") != b.get("responses"):
        return {"note": f"the runs were scored against different recordings ({a.get('responses')} and "
                        f"{b.get('responses')}): not compared"}
    try:
        na, nb = _neuroids(a), _neuroids(b)
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise Refused(f"{shown(paths[0])} or {shown(paths[1])} is not what python -m analysis neural writes "
                      f"({type(err).__name__}: {one_line(err)}): run it again") from None
    common = [n for n in na if n in nb]
    rows = []
    for region in dict.fromkeys(na[n][0] for n in common):
        ids = [n for n in common if na[n][0] == region]
        for area in [x for x in na[ids[0]][1] if x in nb[ids[0]][1]]:
            ra = np.array([np.nan if na[n][1][area] is None else na[n][1][area] for n in ids], dtype=float)
            rb = np.array([np.nan if nb[n][1][area] is None else nb[n][1][area] for n in ids], dtype=float)
            keep = np.isfinite(ra) & np.isfinite(rb)
            if keep.sum() < 2:
                continue
            ra, rb = ra[keep], rb[keep]
            rng = np.random.default_rng(seed)
            index = rng.integers(0, len(ra), size=(resamples, len(ra)))
            diffs = np.median(ra[index], axis=1) - np.median(rb[index], axis=1)
            low, high = np.percentile(diffs, [2.5, 97.5])
            rows.append({"region": region, "area": area, "neuroids": int(keep.sum()), "median_r_a": float(np.median(ra)),
                         "median_r_b": float(np.median(rb)), "diff": float(np.median(ra) - np.median(rb)),
                         "diff_ci95": [float(low), float(high)]})
    return {"responses": a.get("responses"), "rows": rows}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_comparison(result: dict, console=None) -> None:
    from rich.table import Table

    console = console or terminal.console()
    how = (f"paired bootstrap over the same test items, {result['resamples']} resamples" if result["same_test_items"]
           else "Newcombe's interval: the runs read different test items")
    table = Table(title=f"A = {result['run_a']}   B = {result['run_b']}",
                  caption=f"probe: linear-probe top-1 % on the test items; A - B with its 95% interval ({how}); * the "
                          "interval excludes 0. random: the same graph with random weights (mean of the draws). "
                          "target left: the share of each target's variance the decoder leaves at masked tokens "
                          "(1 = no better than the target's mean), one number per run, no interval",
                  caption_justify="left")
    for col in ("stream", "area", "probe A", "probe B", "A - B [95% CI]", "random A", "random B", "target left A",
                "target left B"):
        table.add_column(col, justify="left" if col in ("stream", "area") else "right")
    for r in result["rows"]:
        diff = "-"
        if r.get("probe_diff") is not None:
            low, high = r["probe_diff_ci95"]
            star = "*" if low > 0 or high < 0 else ""
            diff = f"{100 * r['probe_diff']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]{star}"
        left = [("-" if r[k] is None else f"{r[k]:.3f}") for k in ("target_left_a", "target_left_b")]
        table.add_row(r["stream"], r["area"], _pct(r["probe_a"]), _pct(r["probe_b"]), diff, _pct(r["random_a"]),
                      _pct(r["random_b"]), *left)
    console.print(table)
    neural = result.get("neural")
    if neural and neural.get("rows"):
        brain = Table(title=f"against {neural['responses']}: median encoding r over each region's neuroids",
                      caption=f"A - B with its 95% interval (paired bootstrap over the neuroids, {result['resamples']} "
                              "resamples); * the interval excludes 0", caption_justify="left")
        for col in ("region", "area", "neuroids", "r A", "r B", "A - B [95% CI]"):
            brain.add_column(col, justify="left" if col in ("region", "area") else "right")
        for r in neural["rows"]:
            low, high = r["diff_ci95"]
            star = "*" if low > 0 or high < 0 else ""
            brain.add_row(r["region"], r["area"], str(r["neuroids"]), f"{r['median_r_a']:.3f}", f"{r['median_r_b']:.3f}",
                          f"{r['diff']:+.3f} [{low:+.3f}, {high:+.3f}]{star}")
        console.print(brain)
    elif neural and neural.get("note"):
        console.print(f"neural: {neural['note']}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", help="a run analysed by python -m analysis")
    parser.add_argument("run_b", help="another analysed run")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--out", default=None, help="also write the comparison as JSON")
    args = parser.parse_args(argv)
    if args.resamples < 100:
        print(f"error: --resamples must be at least 100, got {args.resamples}", file=sys.stderr)
        return 2
    try:
        result = compare_runs(args.run_a, args.run_b, resamples=args.resamples, seed=args.seed)
        if args.out:
            atomic_write(Path(args.out), json.dumps(result, indent=1))
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written; the same command starts again", file=sys.stderr)
        return 130
    except Exception as err:  # a full disk (R13): the --out file is left whole or not at all
        return exit_if_disk_full(err)
    print_comparison(result)
    return 0
