"""One call that probes every area of a run: ``analyse_run(run_dir)``; ``python -m analysis``.

For each stream and area: the fraction of its target's variance the model leaves at masked
tokens (``analysis.fit.target_fit``, 1 = no better than the average target; decision S3) beside
what the token's 8 neighbours give away (``neighbour_fit``, S5); linear-probe and kNN top-1 on
the run's video set (features of one centre clip per video, pooled over tokens; an image
stream sees each clip's middle frame) with their 95% Wilson intervals, the same probe on the same graph with random
weights (the baseline any learning must beat), median orientation selectivity (OSI) and
circular variance on static gratings, and for video streams median direction selectivity
(DSI) on drifting gratings, with the share of responsive units and the quartiles of their
distributions. A warning names the areas whose CKA is saturated (one principal component
holding most of the variance). Figures (per-area loss curves from ``metrics.jsonl``,
reconstructions, CKA between all areas, tuning curves and OSI/DSI histograms over every
responsive unit, attention maps) and ``results.json`` go to ``RUN_DIR/analysis/``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

from visualpath.inherit import inherit_sources
from analysis.features import KeptItems, extract, load_run, random_weights, run_data, run_dataset, untrained_start
from visualpath.atomic import atomic, atomic_write
from analysis.fit import neighbour_fit, target_fit_details
from analysis.readouts import knn, linear_probe, wilson_interval
from analysis.similarity import similarity_matrix, top_component_share
from analysis.tuning import tuning_report
from visualpath.errors import exit_if_disk_full, one_line
from visualpath.rundir import pretrained_stage, stage_progress
from visualpath.trust import TRUST_HELP
from visualpath import terminal

__all__ = ["analyse_run", "json_ready", "main"]


def analyse_run(run_dir: str | Path, stage: str | None = None, limit: int | None = None, device: str = "cpu",
                figures: bool = True, progress: bool = True, trust_code: bool = False, random_draws: int = 3,
                keep_gb: float = 2.0) -> dict:
    """Probe every area of a run; returns ``{"rows": [...], "cka": {...}, "figures": [...]}``
    and writes ``RUN_DIR/analysis/results.json`` (and the figures). ``trust_code``: as
    :func:`analysis.features.load_run`. ``random_draws``: the same graph with random weights is
    probed this many times (seeds 0, 1, ...): one draw moves a probe by several points, so the
    reference is their mean and spread. ``keep_gb``: the videos' clips kept in memory after their
    first read, shared by every model probed (:class:`analysis.features.KeptItems`)."""
    if isinstance(random_draws, bool) or not isinstance(random_draws, int) or random_draws < 1:
        raise ValueError(f"random_draws must be an integer >= 1, got {random_draws!r}")
    if isinstance(keep_gb, bool) or not isinstance(keep_gb, (int, float)) or not 0 <= keep_gb < math.inf:
        raise ValueError(f"keep_gb must be a number of GiB >= 0, got {keep_gb!r}")
    run_dir = Path(run_dir)
    model = load_run(run_dir, stage=stage, device=device, trust_code=trust_code)  # checks the directory first
    read = pretrained_stage(run_dir, stage)  # the stage load_run read
    progress = stage_progress(run_dir / read) or {}
    unfinished = progress and not progress.get("finished", True)
    out_dir = run_dir / "analysis"
    out_dir.mkdir(exist_ok=True)
    data = run_data(run_dir)
    train_set, test_set = run_dataset(run_dir, train=True, limit=limit), run_dataset(run_dir, train=False, limit=limit)
    test_set = KeptItems(test_set, int(keep_gb * 2**30))  # read first (the target fit), so kept first
    train_set = KeptItems(train_set, share=test_set)
    tuning = tuning_report(model, size=data["size"], frames=data["frames"])
    tuning_rows = {(r["stream"], r["area"]): r for r in tuning.table()}
    random_inits = [random_weights(model, seed=seed, device=device) for seed in range(random_draws)]
    starts = [untrained_start(model, run_dir, seed=seed, device=device) for seed in range(random_draws)]
    starts = starts if starts[0] is not None else []
    fit = target_fit_details(model, test_set, device=device)  # fraction of each target's variance left at masked tokens
    reference = neighbour_fit(model, test_set, device=device)  # what a token's 8 neighbours give away
    rows, test_feats = [], {}
    for stream in model.streams:
        train = extract(model, train_set, stream, device=device, progress=progress)
        test = extract(model, test_set, stream, device=device, progress=progress)
        train.save(out_dir / f"features_{stream}_train")
        test.save(out_dir / f"features_{stream}_test")
        test_feats[stream] = test
        probe, neighbours = linear_probe(train, test), knn(train, test)
        baselines = [linear_probe(extract(r, train_set, stream, device=device, progress=False),
                                  extract(r, test_set, stream, device=device, progress=False)) for r in random_inits]
        inherits = stream in inherit_sources(model.pathway)  # the recipe's start differs from random weights
        begins = [linear_probe(extract(r, train_set, stream, device=device, progress=False),
                               extract(r, test_set, stream, device=device, progress=False))
                  for r in starts] if inherits else []
        for area in train.names:
            t = tuning_rows[(stream, area)]
            row = {"stream": stream, "area": area, "probe_top1": probe[area], "knn_top1": neighbours[area],
                   "probe_ci95": wilson_interval(probe[area], len(test)),
                   "knn_ci95": wilson_interval(neighbours[area], len(test)),
                   "random_init_probe_top1": statistics.fmean(b[area] for b in baselines),
                   "random_init_probe_draws": [b[area] for b in baselines],
                   "random_init_probe_sd": statistics.stdev(b[area] for b in baselines) if len(baselines) > 1 else None,
                   "untrained_start_probe_top1": statistics.fmean(b[area] for b in begins) if begins else None,
                   "untrained_start_probe_draws": [b[area] for b in begins],
                   "osi": t["osi"], "circular_variance": t["circular_variance"], "dsi": t.get("dsi"),
                   "responsive": t["responsive"], "train_items": len(train), "test_items": len(test),
                   "top_component_share": top_component_share(test[area]),
                   "target_left": fit.get(stream, {}).get(area, {}).get("left"),
                   "target_average_share": fit.get(stream, {}).get(area, {}).get("average_share"),
                   "target_left_neighbours": reference.get(stream, {}).get(area)}
            row.update(_quartiles(tuning, stream, area))
            rows.append(row)
    joined = {f"{s}.{a}": f for s, feats in test_feats.items() for a, f in feats.areas.items()}
    cka = similarity_matrix(joined, measure="cka")
    saturated = [f"{r['stream']}.{r['area']}" for r in rows if r["top_component_share"] > SATURATED]
    warnings = [f"CKA is saturated for {', '.join(saturated)}: one principal component holds over "
                f"{100 * SATURATED:.0f}% of the variance of their features, so CKA with them mostly compares that "
                "one direction"] if saturated else []
    warnings += target_left_warnings(rows)
    if unfinished:
        total = progress.get("total_steps")
        warnings.insert(0, f"the {read} stage is unfinished: these are its weights at step {progress.get('step')}"
                           + (f" of {total}" if total else "") + " (the run stopped mid-stage; the command that "
                           "trained it resumes it)")
    result = {"run_dir": str(run_dir), "stage": read, "step": progress.get("step"),
              "total_steps": progress.get("total_steps"), "finished": not unfinished if progress else None,
              "rows": rows, "chance": 1 / len(test_set.classes),
              "cka": {"names": cka.rows, "values": cka.values.tolist()}, "warnings": warnings, "figures": []}
    if figures:
        result["figures"] = _figures(model, cka, tuning, test_set, out_dir, run_dir)
    atomic_write(out_dir / "results.json", json.dumps(json_ready(result), indent=1))
    return result


RF_STIMULI = 1024  # white-noise stimuli per stream for the receptive-field figures (analysis.receptive)
SATURATED = 0.9  # share of the variance on one principal component above which CKA is called saturated


def _quartiles(tuning, stream: str, area: str) -> dict:
    """25th and 75th percentiles of OSI (and DSI) over the area's responsive units."""
    out = {}
    pairs = [("osi", tuning.orientation[stream][area].osi)]
    if area in tuning.direction.get(stream, {}):
        pairs.append(("dsi", tuning.direction[stream][area].dsi))
    for name, values in pairs:
        v = values[~values.isnan()].double()
        out[f"{name}_quartiles"] = [float(v.quantile(0.25)), float(v.quantile(0.75))] if len(v) else None
    return out


def json_ready(value):
    """NaN and infinities (an area with no responsive unit, a neuroid with no ceiling) as JSON
    null, through dicts, lists and tuples."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _figures(model, cka, tuning, test_set, out_dir: Path, run_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from analysis.figures import (attention_figure, cka_heatmap, loss_curves, reconstruction_figure,
                                  tuning_distributions, tuning_curves)
    from analysis.receptive import area_receptive_fields, receptive_field_figure

    written = []
    clip = test_set[0]["video"][:1]  # (1, C, T, H, W) uint8

    def save(fig, name):
        atomic(out_dir / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)
        written.append(str(out_dir / name))

    batch = {"video": clip, "image": clip[:, :, clip.shape[2] // 2]}  # every stream reads its own key
    for stream in model.streams:
        torch.manual_seed(0)
        save(reconstruction_figure(model, batch, stream), f"reconstruction_{stream}.png")
        save(tuning_curves(tuning, stream), f"tuning_{stream}.png")
        save(attention_figure(model, clip, stream), f"attention_{stream}.png")
        fields = area_receptive_fields(model, stream, size=clip.shape[-1], frames=clip.shape[2], n=RF_STIMULI)
        save(receptive_field_figure(fields, title=f"{stream}: receptive fields of the centre token's units "
                                                  f"(reverse correlation, {RF_STIMULI} white-noise stimuli)"),
             f"receptive_fields_{stream}.png")
    save(cka_heatmap(cka, "linear CKA between areas (test clips)"), "cka.png")
    save(tuning_distributions(tuning), "tuning_distributions.png")
    if (run_dir / "metrics.jsonl").is_file():
        save(loss_curves(run_dir / "metrics.jsonl"), "losses.png")
    return written


def _range(pair) -> str:
    return "-" if not pair else f"{pair[0]:.2f}-{pair[1]:.2f}"


def _with_ci(value, interval) -> str:
    if value is None or interval is None or interval[0] is None:
        return _fmt(value, True)
    return f"{100 * value:.1f} [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}]"


def _sd(values) -> float | None:
    return statistics.stdev(values) if values and len(values) > 1 else None


def draws_text(draws: list[float]) -> str:
    """Probe accuracies over a reference's draws, in percent: ``"46.8 ± 4.9"`` (mean ± sd), or
    the one draw's value."""
    return _with_sd(statistics.fmean(draws), _sd(draws))


def _with_sd(value, sd) -> str:
    return _fmt(value, True) if value is None or sd is None else f"{100 * value:.1f} ± {100 * sd:.1f}"


def _fmt(value, percent=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.2f}"


TARGET_LEFT_LEGEND = (
    "target left: the share of the area's target variance at masked test tokens its decoder leaves unexplained "
    "(1 - R^2): 0 = predicted exactly, 1 = no better than predicting the target's mean, above 1 = worse than the "
    "mean; [8 neighbours]: the same for predicting each masked token by the mean of its 8 neighbours' true targets. "
    "random weights: the same graph never trained (mean ± sd over draws); recipe's untrained start: the same draws "
    "with each video stream initialised from its image stream as the joint stage does (decision D21)")


def target_left_warnings(rows: list[dict]) -> list[str]:
    """One line per area whose decoder does worse than predicting its target's mean, with
    what it means and the likely cause."""
    out = []
    for r in rows:
        left = r.get("target_left")
        if left is not None and not (isinstance(left, float) and math.isnan(left)) and left > 1:
            out.append(f"{r['stream']}.{r['area']} leaves {left:.2f} of its target's variance (above 1: its predictions "
                       "are worse than predicting the target's mean): the area learned nothing of its target; the "
                       "likely causes are too few training steps (the small and tiny variants leave the paper's areas "
                       "near 1, decision S7), or a target on another scale than the others' that the area keeps "
                       "itself (target_scale; a target left to the default is standardised, decision D22), whose loss "
                       "then weighs little in the total" + _average_note(r.get("target_average_share")))
    return out


def _average_note(share) -> str:
    """Why the training loss can read below 1 while nothing was learned: the loss is measured
    against predicting zero, and the target's average is part of that."""
    if share is None or (isinstance(share, float) and math.isnan(share)) or share < 0.05:
        return ""
    return (f"; its training loss can read below 1 all the same (about {1 - share:.2f} for a standardised target): "
            f"the loss is measured against predicting zero, and the target's average alone accounts for "
            f"{100 * share:.0f}% of its mean square")


def print_table(result: dict, console=None) -> None:
    from rich.table import Table

    console = console or terminal.console()
    read = ""
    if result.get("stage"):
        read = f"{result['stage']} weights" + (f" at step {result['step']}" if result.get("step") is not None else "") \
            + (f" of {result['total_steps']}" if result.get("total_steps") else "") + ", "
    table = Table(title=f"what each area learned: {result['run_dir']} ({read}chance {100 * result['chance']:.1f}%)",
                  caption=TARGET_LEFT_LEGEND, caption_justify="left")
    draws = max((len(r.get("random_init_probe_draws") or ()) for r in result["rows"]), default=0)
    random_col = f"random weights % (mean ± sd, {draws} draws)" if draws > 1 else "random weights %"
    starts = any(r.get("untrained_start_probe_top1") is not None for r in result["rows"])
    start_col = "recipe's untrained start %" if starts else None  # a video stream inherited as the joint stage does
    for col in ("stream", "area", "probe top-1 % [95% CI]", random_col, *([start_col] if starts else []),
                "kNN top-1 % [95% CI]", "target left [8 neighbours]"):
        table.add_column(col, justify="left" if col in ("stream", "area") else "right")
    for r in result["rows"]:
        left = "-" if r.get("target_left") is None else \
            f"{_fmt(r['target_left'])} [{_fmt(r.get('target_left_neighbours'))}]"
        table.add_row(r["stream"], r["area"], _with_ci(r["probe_top1"], r.get("probe_ci95")),
                      _with_sd(r.get("random_init_probe_top1"), r.get("random_init_probe_sd")),
                      *([_with_sd(r.get("untrained_start_probe_top1"), _sd(r.get("untrained_start_probe_draws")))]
                        if starts else []),
                      _with_ci(r["knn_top1"], r.get("knn_ci95")), left)
    console.print(table)
    tuning = Table(title="tuning to gratings (medians over responsive units; OSI/DSI quartiles)")
    for col in ("stream", "area", "OSI", "OSI 25-75%", "circ. var.", "DSI", "DSI 25-75%", "responsive %"):
        tuning.add_column(col, justify="left" if col in ("stream", "area") else "right")
    for r in result["rows"]:
        tuning.add_row(r["stream"], r["area"], _fmt(r["osi"]), _range(r.get("osi_quartiles")),
                       _fmt(r["circular_variance"]), _fmt(r["dsi"]), _range(r.get("dsi_quartiles")),
                       _fmt(r.get("responsive"), True))
    console.print(tuning)
    for warning in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    if result["figures"]:
        console.print("figures: " + ", ".join(Path(f).name for f in result["figures"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        usage="python -m analysis RUN_DIR [options] | extract ... | predict ... | neural ...",
        description=__doc__.splitlines()[0],
        epilog="commands on any video files (each has its own --help):\n"
               "  python -m analysis extract RUN_DIR VIDEO... --out FILE   per-area features of the videos\n"
               "  python -m analysis predict RUN_DIR VIDEO...              top-k classes of a finetuned run\n"
               "  python -m analysis neural RUN_DIR --stimuli DIR --responses FILE\n"
               "                                                          areas against neural recordings",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a recipe's run directory (config.json + joint/ or ventral/)")
    parser.add_argument("--stage", choices=("joint", "ventral"), default=None,
                        help="which pretraining stage's weights to probe (default: joint if the run has it)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many videos per split")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N (default: cuda when there is one)")
    parser.add_argument("--no-figures", action="store_true", help="the table and results.json only")
    parser.add_argument("--random-draws", type=int, default=3,
                        help="random-weight draws of the same graph probed as the reference (default: %(default)s)")
    parser.add_argument("--keep-gb", type=float, default=2.0,
                        help="GiB of decoded clips kept in memory and shared by every model probed; 0 decodes each "
                             "video again for each model (default: %(default)s)")
    parser.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        result = analyse_run(args.run_dir, stage=args.stage, limit=args.limit, device=args.device,
                             figures=not args.no_figures, trust_code=args.trust_code,
                             random_draws=args.random_draws, keep_gb=args.keep_gb)
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk (R13): what was being written is left whole or not at all
        return exit_if_disk_full(err)
    except KeyboardInterrupt:
        print(f"interrupted: {args.run_dir}/analysis may hold part of the results; the same command starts again",
              file=sys.stderr)
        return 130
    print_table(result)
    return 0
