"""Where one BIMM training step spends its time, phase by phase.

    python -m benchmarks.step_profile [--scale demo|bench] [--steps 12] [--warmup 3] [--docs LABEL]

``--scale demo`` (default) profiles the joint step of ``python -m recipes.bimm_ucf101`` as the
demo runs it: its graph, batch and clips, read from the built-in set by the joint stage's own
dataset and loader (its workers), so "data wait" is the time the step waits for its batch.
``--scale bench`` profiles the step of ``python -m benchmarks.step`` (ViT-S, 16x112^2, batch 8,
the same random clips; no data phase).

Each step runs the model's own parts in order, timed one by one: per stream its inputs (frame
pick, mask), each area's target, the encoder forward, the decoders' forward and losses; then
the backward pass split at each area's stage output (decoders first, then each stream's
encoder, which together give exactly the gradients of one backward: a test checks it); then
the AdamW update. A plain step (``model(batch).loss.backward()`` and the update) is timed in
the same run, interleaved, so the sum of the phases can be read against it.

Prints a table of milliseconds per phase (median over steps) with its share of the phased
step, and one JSON line. ``--docs LABEL`` also writes the table into docs/benchmarks.md
between the markers of that label (``before`` / ``after`` a change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console

from visualpath.area import TargetInput
from visualpath.engine import OptimSpec, Runtime, build_optimizer
from visualpath.masking import running_cell_subset
from visualpath.model import _gather

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


class Phases:
    """Wall time per named phase, summed within a step."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.current[name] += time.perf_counter() - start

    def take(self) -> dict[str, float]:
        out, self.current = dict(self.current), defaultdict(float)
        return out


def phased_step(model, batch, optimizer, phases: Phases, generator: torch.Generator | None = None) -> torch.Tensor:
    """One training step of ``model`` (a built pathway) on ``batch``, timed per phase.

    The forward follows :meth:`PathwayModel.forward` part by part; the backward is cut at
    each area's stage output so that decoders and encoders are timed apart. Returns the loss.
    """
    parts = []
    total = None
    for stream in model.pathway.streams:
        name = stream.name
        module = model.streams[name]
        with phases(f"{name} inputs (frames, mask)"):
            pixels, maps = model._prepare(stream, model._select(stream, batch), generator)
            grid = module.layout.grid(pixels.shape)
            mask = stream.mask(pixels.shape[0], grid, device=pixels.device, generator=generator)
            inp = TargetInput(pixels=pixels, layout=module.layout, batch=batch, maps=maps)
        targets, predicted = {}, {}
        for area in stream.areas:
            if not area.has_readout:
                continue
            with phases(f"{name} target {area.name}"), torch.no_grad():
                keep = area.decoder.keep
                predicted[area.name] = mask.masked if keep >= 1 else \
                    running_cell_subset(mask.masked, grid, keep, generator)
                targets[area.name] = _gather(area.loss_target(inp), predicted[area.name])
        with phases(f"{name} encoder forward"):
            outputs = dict(model.forward_encoder(name, model._visible_tokens(stream, pixels, grid, mask.keep)))
        with phases(f"{name} decoders forward + loss"):
            cut = {k: v.detach().requires_grad_() for k, v in outputs.items()}
            loss = None
            for area in stream.areas:
                if area.name not in targets:
                    continue
                reads = [cut[r] for r in area.decoder.reads]
                pred = model.forward_decoder(name, area.name, cut[area.name], mask.keep, predicted[area.name], grid,
                                             reads)
                weighted = area.weight * model.forward_loss(pred, targets[area.name])
                loss = weighted if loss is None else loss + weighted
        if loss is not None:
            parts.append((stream, loss, outputs, cut))
            total = stream.weight * loss if total is None else total + stream.weight * loss
    for stream, loss, _, _ in parts:
        with phases(f"{stream.name} decoders backward"):
            (stream.weight * loss).backward()
    for stream, _, outputs, cut in parts:
        with phases(f"{stream.name} encoder backward"):
            pairs = [(outputs[k], cut[k].grad) for k in outputs if cut[k].grad is not None]
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    with phases("optimizer (AdamW)"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return total


def plain_step(model, batch, optimizer) -> None:
    model(batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- the two scales


def demo_setup():
    """The demo's joint stage: its graph, optimiser and a loader over the built-in set."""
    from recipes.bimm_ucf101 import VARIANTS
    from recipes.graph import build_graph
    from recipes.stages import video_records
    from visualpath.data import TrainTransform, VideoDataset
    from visualpath.loader import flatten_views, make_loader

    cfg = VARIANTS["demo"]
    runtime = Runtime(device=torch.device("cpu"), rank=0, world=1, local_rank=0)
    torch.manual_seed(cfg.seed)
    model = build_graph(cfg).build().train()
    optimizer = build_optimizer(model, cfg.joint.optim, runtime)
    _, records, classes = video_records(cfg, train=True)
    transform = TrainTransform(size=cfg.data.size, crop="multiscale", flip=cfg.joint.flip)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, transform=transform,
                           seed=cfg.seed, name="training videos")
    loader = make_loader(dataset, cfg.joint.optim.batch_size, runtime, shuffle=True, seed=cfg.seed,
                         workers=cfg.data.workers)

    def batches():
        epoch = 0
        while True:
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                yield flatten_views(batch)
            epoch += 1

    title = (f"demo joint step: {cfg.data.frames}x{cfg.data.size}^2 clips, batch {cfg.joint.optim.batch_size}, "
             f"width {model.pathway.encoder.width}, {cfg.data.workers} loader workers")
    return model, optimizer, batches(), title


def bench_setup():
    """``benchmarks.step``'s BIMM contender: ViT-S, 16x112^2 clips, batch 8, random pixels."""
    from benchmarks.step import Setup, _video, graph

    s = Setup("small", 16, 112, 8, torch.device("cpu"), None)
    torch.manual_seed(0)
    model = graph(s).build().train()
    runtime = Runtime(device=s.device, rank=0, world=1, local_rank=0)
    optimizer = build_optimizer(model, OptimSpec(epochs=1, batch_size=s.batch, base_lr=1.5e-4), runtime)
    video = _video(s)

    def batches():
        while True:
            yield {"video": video}

    return model, optimizer, batches(), "benchmarks.step's BIMM step: ViT-S, 16x112^2 clips, batch 8"


# --------------------------------------------------------------------------- report


def profile(scale: str, steps: int, warmup: int) -> dict:
    model, optimizer, batches, title = demo_setup() if scale == "demo" else bench_setup()
    phases = Phases()
    rows: dict[str, list[float]] = defaultdict(list)
    plain: list[float] = []
    for i in range(warmup + steps):
        with phases("data wait"):
            batch = next(batches)
        batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        phased_step(model, batch, optimizer, phases)
        taken = phases.take()
        start = time.perf_counter()
        plain_step(model, batch, optimizer)
        if i >= warmup:
            plain.append(time.perf_counter() - start)
            for k, v in taken.items():
                rows[k].append(v)
    if scale == "bench":
        rows.pop("data wait", None)  # the same tensor every step: nothing to wait for
    medians = {k: statistics.median(v) for k, v in rows.items()}
    total = sum(medians.values())
    groups = defaultdict(float)
    for k, v in medians.items():
        groups["targets" if " target " in k else "data wait" if k == "data wait" else "model"] += v
    return {"scale": scale, "title": title, "steps": steps, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "phases_ms": {k: 1e3 * v for k, v in medians.items()},
            "phased_step_ms": 1e3 * total, "plain_step_ms": 1e3 * statistics.median(plain),
            "shares": {k: v / total for k, v in groups.items()}}


def markdown(result: dict, command: str) -> str:
    lines = [f"`{command}` — {result['title']}; medians over {result['steps']} steps, "
             f"{result['threads']} threads, torch {result['torch']}.", "",
             "| phase | ms | share |", "|---|---|---|"]
    total = result["phased_step_ms"]
    for k, v in result["phases_ms"].items():
        lines.append(f"| {k} | {v:.1f} | {100 * v / total:.1f}% |")
    lines.append(f"| **sum of phases** | **{total:.1f}** | 100% |")
    lines.append(f"| plain step, same run (one forward, one backward, AdamW) | {result['plain_step_ms']:.1f} | |")
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in result["shares"].items())
    lines += ["", f"Shares: {shares}."]
    return "\n".join(lines)


def write_docs(label: str, text: str, path: Path = DOCS) -> None:
    """Put ``text`` between ``<!-- LABEL -->`` and ``<!-- /LABEL -->`` in docs/benchmarks.md."""
    begin, end = f"<!-- {label} -->", f"<!-- /{label} -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("demo", "bench"), default="demo")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--docs", metavar="LABEL", help="write the table into docs/benchmarks.md under LABEL")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    result = profile(args.scale, args.steps, args.warmup)
    command = f"python -m benchmarks.step_profile --scale {args.scale}"
    text = markdown(result, command)
    Console(width=140).print(text, markup=False, highlight=False)
    print(json.dumps(result))
    if args.docs:
        write_docs(f"step-profile:{args.scale}-{args.docs}", text)
    return result


if __name__ == "__main__":
    main()
