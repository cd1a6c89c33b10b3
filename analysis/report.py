"""One call that probes every area of a run: ``analyse_run(run_dir)``; ``python -m analysis``.

For each stream and area: linear-probe and kNN top-1 on the run's video set (features of
one centre clip per video, pooled over tokens; an image stream sees each clip's middle
frame), median orientation selectivity (OSI) and circular variance on static gratings, and
for video streams median direction selectivity (DSI) on drifting gratings. Figures
(reconstructions, CKA between all areas, tuning curves, attention maps) and
``results.json`` go to ``RUN_DIR/analysis/``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from analysis.features import extract, load_run, run_dataset
from analysis.readouts import knn, linear_probe
from analysis.similarity import similarity_matrix
from analysis.tuning import tuning_report

__all__ = ["analyse_run", "main"]


def analyse_run(run_dir: str | Path, stage: str | None = None, limit: int | None = None, device: str = "cpu",
                figures: bool = True, progress: bool = True) -> dict:
    """Probe every area of a run; returns ``{"rows": [...], "cka": {...}, "figures": [...]}``
    and writes ``RUN_DIR/analysis/results.json`` (and the figures)."""
    run_dir = Path(run_dir)
    model = load_run(run_dir, stage=stage, device=device)  # checks the directory first
    out_dir = run_dir / "analysis"
    out_dir.mkdir(exist_ok=True)
    data = json.loads((run_dir / "config.json").read_text())["config"]["data"]
    train_set, test_set = run_dataset(run_dir, train=True, limit=limit), run_dataset(run_dir, train=False, limit=limit)
    tuning = tuning_report(model, size=data["size"], frames=data["frames"])
    tuning_rows = {(r["stream"], r["area"]): r for r in tuning.table()}
    rows, test_feats = [], {}
    for stream in model.streams:
        train = extract(model, train_set, stream, device=device, progress=progress)
        test = extract(model, test_set, stream, device=device, progress=progress)
        train.save(out_dir / f"features_{stream}_train")
        test.save(out_dir / f"features_{stream}_test")
        test_feats[stream] = test
        probe, neighbours = linear_probe(train, test), knn(train, test)
        for area in train.names:
            t = tuning_rows[(stream, area)]
            rows.append({"stream": stream, "area": area, "probe_top1": probe[area], "knn_top1": neighbours[area],
                         "osi": t["osi"], "circular_variance": t["circular_variance"], "dsi": t.get("dsi"),
                         "train_items": len(train), "test_items": len(test)})
    joined = {f"{s}.{a}": f for s, feats in test_feats.items() for a, f in feats.areas.items()}
    cka = similarity_matrix(joined, measure="cka")
    result = {"run_dir": str(run_dir), "rows": rows, "chance": 1 / len(test_set.classes),
              "cka": {"names": cka.rows, "values": cka.values.tolist()}, "figures": []}
    if figures:
        result["figures"] = _figures(model, cka, tuning, test_set, out_dir)
    (out_dir / "results.json").write_text(json.dumps(_finite(result), indent=1))
    return result


def _finite(value):
    """NaN (an area with no responsive unit) as JSON null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _figures(model, cka, tuning, test_set, out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from analysis.figures import attention_figure, cka_heatmap, reconstruction_figure, tuning_curves

    written = []
    clip = test_set[0]["video"][:1]  # (1, C, T, H, W) uint8

    def save(fig, name):
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(str(out_dir / name))

    batch = {"video": clip, "image": clip[:, :, clip.shape[2] // 2]}  # every stream reads its own key
    for stream in model.streams:
        torch.manual_seed(0)
        save(reconstruction_figure(model, batch, stream), f"reconstruction_{stream}.png")
        save(tuning_curves(tuning, stream), f"tuning_{stream}.png")
        save(attention_figure(model, clip, stream), f"attention_{stream}.png")
    save(cka_heatmap(cka, "linear CKA between areas (test clips)"), "cka.png")
    return written


def _fmt(value, percent=False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.2f}"


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"what each area learned: {result['run_dir']} (chance {100 * result['chance']:.1f}%)")
    for col in ("stream", "area", "probe top-1 %", "kNN top-1 %", "OSI", "circ. var.", "DSI"):
        table.add_column(col, justify="left" if col in ("stream", "area") else "right")
    for r in result["rows"]:
        table.add_row(r["stream"], r["area"], _fmt(r["probe_top1"], True), _fmt(r["knn_top1"], True),
                      _fmt(r["osi"]), _fmt(r["circular_variance"]), _fmt(r["dsi"]))
    console.print(table)
    if result["figures"]:
        console.print("figures: " + ", ".join(Path(f).name for f in result["figures"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a recipe's run directory (config.json + joint/ or ventral/)")
    parser.add_argument("--stage", choices=("joint", "ventral"), default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many videos per split")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = analyse_run(args.run_dir, stage=args.stage, limit=args.limit, device=args.device,
                             figures=not args.no_figures)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_table(result)
    return 0
