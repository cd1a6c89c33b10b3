"""How a stream's linear probes move while it is pretrained: the learning curve behind what
``--variant small`` can and cannot show (decision S7).

    python -m benchmarks.probe_curve --variant small ventral.optim.epochs=16 --every 88   # ~5 min
    python -m benchmarks.probe_curve --variant demo --every 150 --docs                   # ~17 min

Runs ``recipes.bimm_ucf101``'s ventral and joint stages in this process, as the command line
would (``recipes.pipeline.run``; any ``key=value`` after the options is a config override),
and every ``--every`` optimiser steps of each stage probes the stream the recipe finetunes
(dorsal for UCF101) as ``python -m analysis`` does: a linear probe per area on features
pooled over tokens, the run's training videos against its test videos. During the ventral
stage the stream probed is the one the joint stage would start from at that step: the joint
graph with the ventral weights copied in and the dorsal stream inherited from them, with the
recipe's temporal contrast (decision D21) applied to a freshly initialised kernel. So the first point is the joint stage's start
from an untrained ventral stream, and ``python -m analysis``'s random-weights column (the
same graph, never trained, seed 0) is measured beside the curve. The times are training
seconds, probes excluded. Writes ``OUT/curve.json``, ``OUT/curve.md`` and ``OUT/curve.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import attrs
import torch

__all__ = ["measure", "render", "findings", "main"]

ROOT = Path(__file__).resolve().parents[1]


class _Probe:
    """Linear probes of one stream of a model, on the run's own training and test videos."""

    def __init__(self, run_dir: Path, stream: str) -> None:
        from analysis.features import run_dataset

        self.stream = stream
        self.train, self.test = run_dataset(run_dir, train=True), run_dataset(run_dir, train=False)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        from analysis.features import extract
        from analysis.readouts import linear_probe

        was = model.training
        model.eval()
        try:
            return linear_probe(extract(model, self.train, self.stream, progress=False),
                                extract(model, self.test, self.stream, progress=False))
        finally:
            model.train(was)


@contextlib.contextmanager
def _same_random_draws():
    """Leave torch's, NumPy's and Python's random states as they were: the training after a
    probe draws the same masks and crops as it would without it."""
    import random

    import numpy as np

    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def _joint_start(cfg, run_dir: Path, ventral_model):
    """The joint graph as the joint stage would start from ``ventral_model``'s weights."""
    from areas.bimm import run_pathway
    from recipes.stages import start_from_ventral

    model = run_pathway(run_dir).build()
    start_from_ventral(cfg, model, ventral_model)
    return model


@contextlib.contextmanager
def _observed(cfg, every: int, points: list[dict]):
    """Wrap the recipe's training stages so that every ``every`` optimiser steps the probed
    stream is measured (the stage's own loop, schedule and data order are unchanged)."""
    from recipes import stages

    real = stages._train
    clock = {"probes": 0.0, "start": time.perf_counter()}
    probe: list[_Probe] = []

    def measure_at(stage: str, step: int, model) -> None:
        started = time.perf_counter()
        if not probe:
            probe.append(_Probe(Path(cfg.run_dir), cfg.finetune.stream))
        with _same_random_draws():
            seen = _joint_start(cfg, Path(cfg.run_dir), model) if stage == "ventral" else model
            top1 = probe[0](seen)
        seconds = started - clock["start"] - clock["probes"]
        clock["probes"] += time.perf_counter() - started
        points.append({"stage": stage, "step": step, "train_seconds": seconds, "probe_top1": top1})
        shown = " ".join(f"{a}={100 * v:.1f}" for a, v in top1.items())
        print(f"probe {stage} step {step}: {shown}", file=sys.stderr, flush=True)

    def train(stage, cfg_, model, step_fn, dataset, optim, *args, **kwargs):
        calls = [0]

        def observed_step(m, batch):
            if calls[0] % (every * optim.accum_steps) == 0:
                measure_at(stage, calls[0] // optim.accum_steps, model)
            calls[0] += 1
            return step_fn(m, batch)

        state = real(stage, cfg_, model, observed_step, dataset, optim, *args, **kwargs)
        measure_at(stage, state.step, model)
        return state

    stages._train = train
    try:
        yield
    finally:
        stages._train = real


def measure(variant: str, seed: int, every: int, out: Path, overrides: list[str],
            reference_seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    from recipes import bimm_ucf101
    from recipes.cli import parse
    from recipes.pipeline import run
    from analysis.features import load_run, random_weights

    cfg = parse(["--variant", variant, *overrides], bimm_ucf101.VARIANTS, "recipes.bimm_ucf101", bimm_ucf101.__doc__)
    cfg = attrs.evolve(cfg, seed=seed, run_dir=str(out / "run"), resume=False, stages=("ventral", "joint"))
    points: list[dict] = []
    with _observed(cfg, every, points):
        run(cfg)
    trained = load_run(cfg.run_dir)
    probe = _Probe(Path(cfg.run_dir), cfg.finetune.stream)
    baseline = probe(random_weights(trained, seed=0))  # python -m analysis's random-weights column
    references = []  # how far one random draw is from another, and from the recipe's untrained start
    for s in reference_seeds:
        random_init = random_weights(trained, seed=s)
        untrained = _joint_start(cfg, Path(cfg.run_dir), random_weights(trained, seed=1000 + s))  # never trained
        references.append({"seed": s, "random_init_probe_top1": probe(random_init),
                           "untrained_start_probe_top1": probe(untrained)})
    command = (f"python -m benchmarks.probe_curve --variant {variant} --seed {seed} --every {every}"
               + (f" --reference-seeds {' '.join(map(str, reference_seeds))}" if tuple(reference_seeds) != (0, 1, 2)
                  else "") + "".join(f" {o}" for o in overrides))
    return {"command": command, "variant": variant, "seed": seed, "stream": cfg.finetune.stream,
            "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
            "steps": {"ventral": cfg.ventral.optim.epochs, "joint": cfg.joint.optim.epochs},
            "random_init_probe_top1": baseline, "references": references, "points": points}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def findings(result: dict) -> str:
    """What the curve shows, computed from it: per area, the start, the lowest point and the
    end against the random-weights column, and from which point on it stays above that column."""
    points, baseline = result["points"], result["random_init_probe_top1"]
    said = []
    for area, base in baseline.items():
        values = [p["probe_top1"][area] for p in points]
        low = min(range(len(values)), key=values.__getitem__)
        above = next((i for i in range(len(values)) if all(v > base for v in values[i:])), None)
        where = (f"above it from {points[above]['stage']} step {points[above]['step']} on "
                 f"({points[above]['train_seconds'] / 60:.1f} min of training)") if above is not None \
            else "never above it to the end"
        said.append(f"{area}: starts at {_pct(values[0])}, lowest {_pct(values[low])} at {points[low]['stage']} "
                    f"step {points[low]['step']}, ends at {_pct(values[-1])} ({100 * (values[-1] - values[0]):+.1f} on its "
                    f"start); random weights {_pct(base)}, {where}")
    text = "**What it shows.** " + "; ".join(said) + "."
    refs = result.get("references") or []
    if refs:
        leads = [100 * (r["untrained_start_probe_top1"][a] - r["random_init_probe_top1"][a]) for r in refs for a in baseline]
        spread = {a: [100 * r["random_init_probe_top1"][a] for r in refs] for a in baseline}
        many = "s" if len(refs) > 1 else ""
        text += (f" Over {len(refs)} random draw{many} (seed{many} {', '.join(str(r['seed']) for r in refs)}) "
                 "the random weights "
                 "probe at " + ", ".join(f"{a} {min(v):.1f}-{max(v):.1f}" for a, v in spread.items())
                 + "; the joint stage's start from a ventral stream never trained probes "
                 f"{min(leads):+.1f} to {max(leads):+.1f} points from the random weights of the same seed"
                 + (", so a lead over the random-weights column of up to that much comes from the recipe's "
                    "initialisation of the dorsal stream (decision D21), not from pretraining." if min(leads) > 0
                    else "."))
    return text


def render(result: dict) -> str:
    areas = list(result["random_init_probe_top1"])
    lines = [f"Command: `{result['command']}`; {result['machine']}. Stream probed: {result['stream']} "
             f"(linear probe top-1 %, features pooled per area, chance 10%).", "",
             "| stage | step | training min | " + " | ".join(areas) + " |",
             "|---|---|---|" + "---|" * len(areas)]
    for p in result["points"]:
        lines.append(f"| {p['stage']} | {p['step']} | {p['train_seconds'] / 60:.2f} | "
                     + " | ".join(_pct(p["probe_top1"][a]) for a in areas) + " |")
    lines.append("| same graph, random weights | – | – | "
                 + " | ".join(_pct(result["random_init_probe_top1"][a]) for a in areas) + " |")
    refs = result.get("references") or []
    if refs:
        lines += ["", "References, one row per random draw (" + "/".join(areas) + "):", "",
                  "| seed | same graph, random weights | joint stage's start from an untrained ventral stream |",
                  "|---|---|---|"]
        lines += [f"| {r['seed']} | " + " / ".join(_pct(r["random_init_probe_top1"][a]) for a in areas) + " | "
                  + " / ".join(_pct(r["untrained_start_probe_top1"][a]) for a in areas) + " |" for r in refs]
    return "\n".join(lines) + "\n\n" + findings(result) + "\n"


def figure(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    minutes = [p["train_seconds"] / 60 for p in result["points"]]
    for i, (area, base) in enumerate(result["random_init_probe_top1"].items()):
        colour = f"C{i}"
        ax.plot(minutes, [100 * p["probe_top1"][area] for p in result["points"]], "o-", color=colour,
                label=f"{result['stream']}.{area}")
        ax.axhline(100 * base, color=colour, ls="--", lw=1)
    joint = next((p for p in result["points"] if p["stage"] == "joint"), None)
    if joint is not None:
        ax.axvline(joint["train_seconds"] / 60, color="grey", lw=1)
        ax.text(joint["train_seconds"] / 60, ax.get_ylim()[1], " joint stage", va="top", fontsize=8, color="grey")
    ax.set_xlabel("minutes of pretraining (2 CPU cores)" if "2 CPU" in result["machine"] else "minutes of pretraining")
    ax.set_ylabel("linear probe top-1 %")
    ax.set_title(f"--variant {result['variant']}, seed {result['seed']}: probes while pretraining "
                 "(dashed: random weights)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="small", help="a variant of recipes.bimm_ucf101 (small, demo, tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=50, help="optimiser steps between probes")
    parser.add_argument("--reference-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="random draws of the references measured after the curve")
    parser.add_argument("--out", default="runs/probe_curve")
    parser.add_argument("--docs", action="store_true", help="also write docs/probe_curve.md, .json and .png")
    parser.add_argument("--from-json", default=None, metavar="FILE", help="render a curve measured before")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value), as on the recipe's command line")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")
    out = Path(args.out).resolve()
    result = json.loads(Path(args.from_json).read_text()) if args.from_json else \
        measure(args.variant, args.seed, args.every, out, args.overrides, tuple(args.reference_seeds))
    out.mkdir(parents=True, exist_ok=True)
    text = render(result)
    (out / "curve.json").write_text(json.dumps(result, indent=1))
    (out / "curve.md").write_text(text)
    figure(result, out / "curve.png")
    if args.docs:
        (ROOT / "docs" / "probe_curve.json").write_text(json.dumps(result, indent=1))
        figure(result, ROOT / "docs" / "probe_curve.png")
        (ROOT / "docs" / "probe_curve.md").write_text(
            "# Linear probes while pretraining\n\n"
            f"Generated by `{result['command']} --docs` (decision S7 in [decisions.md](decisions.md)).\n\n"
            + text + "\n![probes while pretraining](probe_curve.png)\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
