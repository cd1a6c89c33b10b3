"""Why the demo's pretraining learns so little: what its targets give away, what a step
costs, and how fast each stream learns with nothing else in the way.

    python -m benchmarks.demo_diagnosis                 # the demo's graphs, about 6 min on 2 CPU cores
    python -m benchmarks.demo_diagnosis --ablations     # also the variations of ABLATIONS, about 14 min more
    python -m benchmarks.demo_diagnosis --docs          # all of it, into docs/demo_diagnosis.md (and .json)
    python -m benchmarks.demo_diagnosis --variant tiny --steps 2 --out /tmp/diagnosis
    python -m benchmarks.demo_diagnosis --steps 3000 --only bimm:dorsal --out runs/diagnosis-3000

It measures, on the built-in set of the variant (split 1), for the graphs of
``recipes.bimm_ucf101`` and ``recipes.videomae_ucf101``, the latter also with V4's tubes
standardised as a whole (``pathway.dorsal.V4.per_channel=false``, labelled
``videomae-whole-tube``):

1. **References that need no training** (:mod:`analysis.fit`, test videos): the fraction
   of each target's variance left when a masked token's target is interpolated from the
   tokens the stream's mask leaves visible (``visible_fit``), and from its 8 neighbours
   as if all were visible (``neighbour_fit``); and the part of each target that lies inside
   its tokens (``channel_fit``: what is left when each token's target is its own channel
   means, a pixel tube's colour).
2. **Step cost** per stream, in this process: each area's target computation and the
   whole forward and backward pass, at the recipe's joint batch size; target times are
   also given as a share of the step.
3. **Learning with the clips in memory** (``--steps``): each stream trained alone from
   random weights with AdamW at the peak learning rate and batch size of the recipe's
   stage that first trains it (ventral for images, joint for videos) (linear warm-up over 10%
   of the steps, cosine decay), one centre clip per training video held decoded in memory
   (no decoding, no augmentation), then ``target_fit`` on the test videos. It isolates
   what the objective and the model learn in a number of steps from the data pipeline and
   from the two-stage schedule.
4. **What else was tried** (``--ablations``, part of ``--docs``): the learning runs of 3
   again with one thing changed each, as ``ABLATIONS`` lists them (a lower mask ratio for
   BIMM and VideoMAE, a larger MT decoder, a higher peak learning rate, MT unstandardised,
   a V2 edge floor that drops most of the plaid's stripes), to tell a budget from a target
   that tuning at this scale does not move. ``--only`` does not limit them.

Decision S6 in docs/decisions.md records what these figures showed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import attrs
import torch

__all__ = ["GRAPHS", "ABLATIONS", "ablation_config", "main", "render"]

ROOT = Path(__file__).resolve().parents[1]
# (label, recipe module, pathway overrides)
GRAPHS = (
    ("bimm", "recipes.bimm_ucf101", ()),
    ("videomae", "recipes.videomae_ucf101", ()),
    ("videomae-whole-tube", "recipes.videomae_ucf101", ("pathway.dorsal.V4.per_channel=false",)),
)

# (label, graph label, stream, pathway overrides, factor on the peak learning rate)
ABLATIONS = (
    ("tube mask 0.5 instead of 0.9", "bimm", "dorsal", ("pathway.dorsal.mask.ratio=0.5",), 1.0),
    ("MT decoder 128 wide with 2 blocks instead of 64 and 1", "bimm", "dorsal",
     ("pathway.dorsal.MT.decoder.width=128", "pathway.dorsal.MT.decoder.depth=2"), 1.0),
    ("peak learning rate 4x", "bimm", "dorsal", (), 4.0),
    ("MT's raw differences, not standardised per token", "bimm", "dorsal", ("pathway.dorsal.MT.normalize=false",), 1.0),
    ("tube mask 0.5 instead of 0.9", "videomae", "dorsal", ("pathway.dorsal.mask.ratio=0.5",), 1.0),
    ("V2's edge floor 0.06 instead of 0.02 (most of the plaid's stripes drop out)", "bimm", "ventral",
     ("pathway.ventral.V2.min_gradient=0.06",), 1.0),
)


def _config(module: str, variant: str, overrides: tuple[str, ...]):
    import importlib

    cfg = importlib.import_module(module).VARIANTS[variant]
    return attrs.evolve(cfg, pathway_overrides=cfg.pathway_overrides + overrides)


def _variants() -> set[str]:
    from recipes.bimm_ucf101 import VARIANTS

    return set(VARIANTS)


def _graph(label: str, variant: str):
    from recipes.graph import build_graph

    _, module, overrides = next(g for g in GRAPHS if g[0] == label)
    return build_graph(_config(module, variant, overrides))


def _clips(cfg, train: bool) -> torch.Tensor:
    """One centre clip per video of split ``cfg.data.split``, decoded: ``(N, 3, T, H, W)`` uint8."""
    from analysis.features import _batches, clip_dataset

    return torch.cat([x for x, _ in _batches(clip_dataset(attrs.asdict(cfg.data), train), 32, workers=0)])


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: caches, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_cost(spec, clips: torch.Tensor, batch_size: int, repeats: int = 5) -> dict:
    """``{stream: {"step_s": ..., "targets_s": {area: ...}}}`` of the graph ``spec``, each
    stream alone with fresh weights (a step costs the same whatever they are): medians over
    ``repeats``."""
    x = clips[:batch_size]
    batch = {"video": x, "image": x[:, :, x.shape[2] // 2]}
    out = {}
    for name in (s.name for s in spec.streams):
        single = spec.select([name]).build().train()
        inp = single.target_input(batch, name)
        targets = {a.name: _median_time(lambda a=a: a.target(inp), repeats)
                   for a in single.pathway.stream(name).areas if a.has_readout}

        def step(single=single):
            single.zero_grad(set_to_none=True)
            single(batch).loss.backward()

        out[name] = {"step_s": _median_time(step, repeats), "targets_s": targets}
    return out


def learn(cfg, stream: str, train: torch.Tensor, test: torch.Tensor, steps: int, seed: int = 0, log=print) -> dict:
    """Train ``stream`` of ``cfg``'s graph alone on clips in memory; its target fit after.

    The optimiser is the recipes' (AdamW over :func:`visualpath.optim.param_groups`, the
    stage's betas, weight decay, gradient clipping and floor, linear warm-up over a tenth of
    the steps, then cosine decay), without gradient accumulation."""
    from analysis.fit import target_fit
    from recipes.graph import build_graph
    from visualpath.optim import lr_at, param_groups

    torch.manual_seed(seed)
    model = build_graph(cfg).select([stream]).build().train()
    # the schedule of the stage that trains the stream first: the ventral stage's for images
    optim = cfg.ventral.optim if not model.streams[stream].layout.is_video else cfg.joint.optim
    lr = optim.peak_lr(world=1)
    groups = param_groups(model, optim.weight_decay)  # the recipes' groups: no decay on norms, biases, tokens
    opt = torch.optim.AdamW(groups, lr=lr, betas=optim.betas)
    generator = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 10)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, warmup, lr, optim.min_lr) * group["lr_scale"]
        x = train[torch.randint(len(train), (optim.batch_size,), generator=generator)]
        out = model({"video": x}, generator=generator)  # an image stream takes a random frame of each clip
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if optim.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_grad)
        opt.step()
    wall = time.perf_counter() - start
    last = {a: float(v.detach()) for a, v in out.streams[stream].losses.items()} if steps else {}
    fit = target_fit(model.eval(), test, batches=None)[stream]
    parts = {part: target_fit(model, test, batches=None, part=part)[stream] for part in ("means", "inside")}
    log(f"  {stream}: {steps} steps in {wall:.0f} s; fraction left {', '.join(f'{a} {v:.3f}' for a, v in fit.items())}")
    return {"steps": steps, "lr": lr, "batch_size": optim.batch_size, "wall_s": wall, "fit": fit,
            "fit_parts": parts, "last_loss": last}


def ablation_config(variant: str, label: str, overrides: tuple[str, ...], lr_factor: float):
    """The recipe config of graph ``label`` at ``variant`` with an ablation's pathway
    ``overrides`` and its factor on the peak learning rate."""
    _, module, own = next(g for g in GRAPHS if g[0] == label)
    return _with_lr(_config(module, variant, own + tuple(overrides)), lr_factor)


def _with_lr(cfg, factor: float):
    """``cfg`` with the peak learning rate of every pretraining stage times ``factor`` (the
    floor ``min_lr`` is left as it is)."""
    def scaled(stage):
        return attrs.evolve(stage, optim=attrs.evolve(stage.optim, base_lr=stage.optim.base_lr * factor))

    return attrs.evolve(cfg, ventral=scaled(cfg.ventral), joint=scaled(cfg.joint))


def measure(variant: str, steps: int, only: tuple[str, ...] = (), ablations: bool = False,
            log=print) -> tuple[dict, list]:
    """Every figure of every graph, and with ``ablations`` the runs of ``ABLATIONS``;
    ``only`` (``LABEL`` or ``LABEL:STREAM`` entries) limits the learning runs of the graphs,
    the slow part, to those graphs and streams."""
    from analysis.fit import channel_fit, neighbour_fit, visible_fit
    from recipes.graph import build_graph

    results = {}
    clips = {}

    def decoded(cfg):
        key = (cfg.data.frames, cfg.data.stride, cfg.data.size, cfg.data.synthetic_clips, cfg.data.synthetic_groups)
        if key not in clips:
            log(f"decoding the built-in set ({variant}) into memory")
            clips[key] = _clips(cfg, True), _clips(cfg, False)
        return clips[key]

    for label, module, overrides in GRAPHS:
        cfg = _config(module, variant, overrides)
        train, test = decoded(cfg)
        torch.manual_seed(0)
        model = build_graph(cfg).build().eval()
        log(f"{label}: references, step cost")
        entry = {
            "command": f"python -m {module} --variant {variant}" + "".join(f" {o}" for o in overrides),
            "visible_fit": visible_fit(model, test, batches=None),
            "neighbour_fit": neighbour_fit(model, test, batches=None),
            "channel_fit": channel_fit(model, test, batches=None),
            "cost": step_cost(model.pathway, train, cfg.joint.optim.batch_size),
            "learn": {},
        }
        trained = [s for s in model.streams if not only or label in only or f"{label}:{s}" in only] if steps else []
        if trained:
            log(f"{label}: learning, {steps} steps per stream")
        for stream in trained:
            entry["learn"][stream] = learn(cfg, stream, train, test, steps, log=log)
        results[label] = entry
    varied = []
    for change, label, stream, extra, lr_factor in (ABLATIONS if ablations and steps else ()):
        cfg = ablation_config(variant, label, extra, lr_factor)
        log(f"{label}, {change}: learning {stream}, {steps} steps")
        varied.append({"change": change, "graph": label, "stream": stream, "overrides": list(extra),
                       "lr_factor": lr_factor, **learn(cfg, stream, *decoded(cfg), steps, log=log)})
    return results, varied


def _parts(m: dict) -> str:
    """``V4 0.40 / 0.98, ...``: a learning run's fraction left of each part of each target."""
    parts = m.get("fit_parts")
    if not parts:
        return "–"
    def shown(v: float) -> str:
        return f"{v:.2f}" if v == v else "–"  # NaN: a part without variance (a target standardised per channel)

    return ", ".join(f"{a} {shown(parts['means'][a])} / {shown(parts['inside'][a])}" for a in m["fit"])


def render(results: dict, meta: dict, ablations: list = ()) -> str:
    lines = [
        "# Why the demo's pretraining learns so little",
        "",
        f"Measured by `{meta['command']}` on {meta['machine']}, {meta['date']}. Fractions are of each target's "
        "variance left at masked tokens (1: no better than the average target; 0: exact), on the test videos "
        "of split 1. Decision S6 in [decisions.md](decisions.md) says what they show.",
        "",
        "## What the targets give away, before any training",
        "",
        "`visible_fit`: each masked token's target interpolated from the tokens the stream's own mask leaves "
        "visible (inverse squared distance on the token grid); `neighbour_fit`: from the mean of its 8 "
        "neighbours, as if every one were visible. Both are scaled by their best single factor. `channel_fit` is "
        "not a reference from what a model sees: each token's target predicted by its own channel means (a pixel "
        "tube's colour, a Gabor token's energy per orientation and wavelength), which leaves the part of the "
        "target that varies inside the token. An image stream reads each clip's middle frame here; "
        "`target_fit`, below, a random frame of each clip.",
        "",
        "| graph | stream | area | from the visible tokens | from all 8 neighbours | inside the token |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        for stream, areas in r["visible_fit"].items():
            for area, v in areas.items():
                lines.append(f"| {label} | {stream} | {area} | {v:.2f} | {r['neighbour_fit'][stream][area]:.2f} | "
                             f"{r['channel_fit'][stream][area]:.2f} |")
    lines += [
        "",
        "## What a step costs",
        "",
        "Median seconds of one training step of each stream alone (forward and backward, AdamW not included) at "
        "the recipe's joint batch size, and of each area's target within it.",
        "",
        "| graph | stream | step | targets (share of the step) |",
        "|---|---|---|---|",
    ]
    for label, r in results.items():
        for stream, c in r["cost"].items():
            targets = ", ".join(f"{a} {t:.3f} s ({100 * t / c['step_s']:.0f}%)" for a, t in c["targets_s"].items())
            lines.append(f"| {label} | {stream} | {c['step_s']:.3f} s | {targets} |")
    if any(r["learn"] for r in results.values()):
        lines += [
            "",
            "## How fast each stream learns, with the clips in memory",
            "",
            "Each stream trained alone from random weights on one decoded centre clip per training video "
            "(no decoding, no augmentation), AdamW at the peak learning rate and batch size of the recipe's stage "
            "that first trains the stream (ventral for images, joint for videos), then `target_fit` on the test "
            "videos. The last column scores the two parts that `channel_fit` splits a target into, the "
            "prediction's part against the target's (`target_fit(..., part=...)`): each token's channel means, "
            "and the pattern inside the token.",
            "",
            "| graph | stream | steps (batch, peak lr) | wall time | fraction left per area | "
            "of the channel means / of the pattern inside |",
            "|---|---|---|---|---|---|",
        ]
        for label, r in results.items():
            for stream, m in r["learn"].items():
                fit = ", ".join(f"{a} {v:.3f}" for a, v in m["fit"].items())
                lines.append(f"| {label} | {stream} | {m['steps']} ({m['batch_size']}, {m['lr']:.0e}) | "
                             f"{m['wall_s']:.0f} s | {fit} | {_parts(m)} |")
    if ablations:
        lines += [
            "",
            "## What else was tried",
            "",
            "The same learning runs with one thing changed each (`ABLATIONS` in the script; the overrides are "
            "those a recipe takes on its command line). MT's raw differences are scored on their own, "
            "unstandardised scale.",
            "",
            "| graph | stream | changed | overrides | steps (batch, peak lr) | fraction left per area | "
            "of the channel means / of the pattern inside |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in ablations:
            fit = ", ".join(f"{a} {v:.3f}" for a, v in m["fit"].items())
            overrides = " ".join(f"`{o}`" for o in m["overrides"]) or "–"
            lines.append(f"| {m['graph']} | {m['stream']} | {m['change']} | {overrides} | "
                         f"{m['steps']} ({m['batch_size']}, {m['lr']:.0e}) | {fit} | {_parts(m)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_diagnosis", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="demo", help="recipe variant whose graphs and set are measured (demo)")
    parser.add_argument("--steps", type=int, default=500, help="training steps per stream in memory; 0 skips (500)")
    parser.add_argument("--only", nargs="+", default=(), metavar="LABEL[:STREAM]",
                        help=f"train only these graphs or streams (labels: {', '.join(g[0] for g in GRAPHS)})")
    parser.add_argument("--out", default="runs/demo_diagnosis", help="folder for diagnosis.json and diagnosis.md")
    parser.add_argument("--ablations", action="store_true", help="also train the variations of ABLATIONS")
    parser.add_argument("--docs", action="store_true",
                        help="also write docs/demo_diagnosis.md and .json (implies --ablations)")
    args = parser.parse_args(argv)
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    if args.ablations and args.steps == 0:
        parser.error("--ablations are learning runs: give --steps above 0")
    if args.variant not in _variants():
        parser.error(f"--variant {args.variant!r}: the recipes' variants are {sorted(_variants())}")
    labels = {g[0] for g in GRAPHS}
    for o in args.only:
        label, _, stream = o.partition(":")
        if label not in labels:
            parser.error(f"--only {o!r}: no such graph; the labels are {sorted(labels)}")
        streams = {s.name for s in _graph(label, args.variant).streams}
        if stream and stream not in streams:
            parser.error(f"--only {o!r}: graph {label!r} has the streams {sorted(streams)}")
    if args.docs and (args.only or args.variant != "demo" or args.steps == 0):
        parser.error("--docs writes the stored diagnosis: run it with every graph, the demo variant and "
                     "training steps (no --only, --variant tiny or --steps 0)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, ablations = measure(args.variant, args.steps, tuple(args.only), args.ablations or args.docs,
                                 log=lambda m: print(m, flush=True))
    command = "python -m benchmarks.demo_diagnosis" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    meta = {"command": command, "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    text = render(results, meta, ablations)
    payload = json.dumps({"meta": meta, "results": results, "ablations": ablations}, indent=2)
    (out / "diagnosis.json").write_text(payload)
    (out / "diagnosis.md").write_text(text)
    if args.docs:
        (ROOT / "docs" / "demo_diagnosis.json").write_text(payload)
        (ROOT / "docs" / "demo_diagnosis.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
