"""Training-step time and memory: our VideoMAE-equivalent vs Hugging Face's, and BIMM's joint step.

    python -m benchmarks.step [--size small] [--frames 16] [--res 112] [--batch 8] [--repeats 7]
                              [--device auto] [--compile] [--checkpointing] [--decoder-keep 1.0]
                              [--pathway FILE.py:FN | module:FN | graph.json | RUN_DIR] [--feedback MT>V1]
                              [--docs]

``--docs`` (default settings only) writes the table and ratios into docs/benchmarks.md.
Where the BIMM step's time goes, phase by phase: ``python -m benchmarks.step_profile``.

One process; the contenders are interleaved repeat by repeat on the same inputs, each step a
full forward, backward and AdamW update:

- ``hf-videomae``: ``transformers.VideoMAEForPreTraining`` (SDPA attention, ``norm_pix_loss``)
  with ``torch.optim.AdamW`` (its default multi-tensor form);
- ``ours-videomae``: our dorsal stream alone, one RGB target (V4's per-patch, per-channel
  normalised pixels, as VideoMAE's norm-pix loss) read at the last block, the same decoder
  width/depth/heads, tube mask 0.9, initialised with the Hugging Face encoder's weights;
  AdamW as our engine builds it (fused on CUDA);
- ``ours-bimm``: the paper's joint step (ventral V1 -> V2 -> V4 on one frame per clip,
  dorsal V1 -> V2 -> MT, V1/V2 shared, decoders 1/2/4 blocks) at the same encoder size, or
  the joint step of the graph ``--pathway`` names (a builder that takes an argument gets the
  benchmark's ``ModelConfig``; a stored graph or a run's keeps its own size).

``--feedback MT>V1`` adds ``ours-bimm+feedback``, the same graph with that top-down link (a
second pass of the stages from V1 on), and prints its cost as a ratio to ``ours-bimm``.

It also times each area's target (the paper's: V1 Gabor, V2 contours, V4 RGB, MT motion) on
the step's inputs, in every stream that reads it, to give the share of a step spent computing
targets. On CUDA every contender runs
under bf16 autocast (ours as the engine does; Hugging Face the same way), with the peak
memory of each (``max_memory_allocated``) and the model FLOP utilisation (FLOPs counted by
``torch.utils.flop_counter``). On the CPU, float32; "step MiB" is the growth of the peak
resident set over what the model, optimizer and inputs hold, in a separate process running
two steps of the contender alone.

Prints medians and min-max over repeats and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from areas.bimm import SIZES, ModelConfig, paper_pathway
from visualpath import Pathway
from visualpath.area import TargetInput
from visualpath.engine import OptimSpec, Runtime, build_optimizer, compiled

DECODER = {"tiny": (96, 3), "small": (192, 3), "base": (384, 6), "large": (512, 8)}  # VideoMAE's widths, heads
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


@dataclass
class Setup:
    size: str
    frames: int
    res: int
    batch: int
    device: torch.device
    autocast: torch.dtype | None
    compile: bool = False
    checkpointing: bool = False
    decoder_keep: float = 1.0
    pathway: str | None = None
    feedback: str | None = None


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- contenders


def hf_videomae(s: Setup):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    spec = SIZES[s.size]()
    dec_w, dec_h = DECODER[s.size]
    cfg = VideoMAEConfig(image_size=s.res, patch_size=16, num_frames=s.frames, tubelet_size=2,
                         hidden_size=spec.width, num_hidden_layers=spec.depth, num_attention_heads=spec.heads,
                         intermediate_size=int(spec.width * spec.mlp_ratio), qkv_bias=True, layer_norm_eps=1e-6,
                         decoder_hidden_size=dec_w, decoder_num_hidden_layers=4, decoder_num_attention_heads=dec_h,
                         decoder_intermediate_size=4 * dec_w, norm_pix_loss=True, use_mean_pooling=False,
                         attn_implementation="sdpa")
    model = VideoMAEForPreTraining(cfg).to(s.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    tokens_per_frame = (s.res // 16) ** 2
    hidden = max(1, round(0.9 * tokens_per_frame))
    mean = torch.tensor([0.485, 0.456, 0.406], device=s.device).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=s.device).view(1, 1, 3, 1, 1)

    def step(video):  # video: (B, C, T, H, W) uint8
        pixels = (video.permute(0, 2, 1, 3, 4).float() / 255 - mean) / std  # (B, T, C, H, W)
        noise = torch.rand(video.shape[0], tokens_per_frame, device=s.device)
        spatial = torch.zeros_like(noise, dtype=torch.bool).scatter_(1, noise.argsort(1)[:, :hidden], True)
        mask = spatial.repeat(1, s.frames // 2)  # tube mask (B, N)
        with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
            loss = model(pixel_values=pixels, bool_masked_pos=mask).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return model, step


def _ours(s: Setup, pathway: Pathway):
    model = pathway.build().to(s.device).train()
    if s.checkpointing:
        model.checkpointing = True
    runtime = Runtime(device=s.device, rank=0, world=1, local_rank=0)
    opt = build_optimizer(model, OptimSpec(epochs=1, batch_size=s.batch, base_lr=1.5e-4), runtime)
    forward = compiled(model) if s.compile else model  # as compile=true trains

    def step(video):
        with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
            loss = forward({"video": video}).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return model, step


def model_config(s: Setup, **changes) -> ModelConfig:
    """The recipes' pathway config at this size (the paper's graph reads at blocks 2, 4 and 12
    of 12), VideoMAE's decoder width and heads."""
    dec_w, dec_h = DECODER[s.size]
    return ModelConfig(size=s.size, decoder_width=dec_w, decoder_heads=dec_h, **changes)


def with_keep(pathway: Pathway, keep: float) -> Pathway:
    """``pathway`` with its V1 and V2 decoders reconstructing ``keep`` of the masked tokens
    (the graph's own key, ``pathway.V1.decoder.keep``; VideoMAE V2's decoder masking)."""
    if keep == 1.0:
        return pathway
    from visualpath.overrides import apply_overrides

    names = {a.name for s in pathway.streams for a in s.areas}
    return apply_overrides(pathway, {f"{a}.decoder.keep": keep for a in ("V1", "V2") if a in names})


def ours_videomae(s: Setup, hf_model=None):
    pathway = paper_pathway(model_config(s, targets="RGB", streams=("dorsal",)))  # RGB at the last block
    model, step = _ours(s, pathway)
    if hf_model is not None:  # equal encoder weights
        from visualpath.interop import load_checkpoint

        load_checkpoint(model, {k: v for k, v in hf_model.state_dict().items() if k.startswith("videomae.")},
                        stream="dorsal")
    return model, step


def graph(s: Setup) -> Pathway:
    """The graph whose joint step is timed: ``--pathway``'s, else the paper's at this size."""
    if s.pathway is None:
        return with_keep(paper_pathway(model_config(s)), s.decoder_keep)
    from recipes.config import Config
    from recipes.graph import build_graph
    from visualpath.trust import graph_code, trusting

    with trusting(named=graph_code(s.pathway)):  # the reader named it on the command line (decision T1)
        return with_keep(build_graph(Config(pathway=s.pathway, model=model_config(s))), s.decoder_keep)


def ours_bimm(s: Setup):
    return _ours(s, graph(s))


def feedback_graph(s: Setup) -> Pathway:
    """:func:`graph` with the ``--feedback`` links (``MT>V1``, ...) in every stream holding both ends."""
    from visualpath.overrides import _feedback_links, apply_overrides

    base = graph(s)
    ends = {end for link in _feedback_links(s.feedback, "--feedback") for end in link.values()}
    edits = [f"{stream.name}.feedback={s.feedback}" for stream in base.streams
             if ends <= {a.name for a in stream.areas}]
    if not edits:
        raise SystemExit(f"--feedback {s.feedback}: no stream of the graph holds both ends of every link")
    return apply_overrides(base, edits)


def ours_feedback(s: Setup):
    return _ours(s, feedback_graph(s))


def target_timers(s: Setup, pathway: Pathway):
    """Callables computing each area's target on a step's inputs, in every stream that reads
    it, as the joint step does (an image stream on one frame of each clip)."""
    layouts = {name: module.layout for name, module in pathway.build().streams.items()}
    readers: dict[str, list] = {}
    for stream in pathway.streams:
        for area in stream.areas:
            if area.has_readout:
                readers.setdefault(area.name, []).append((area, layouts[stream.name], stream.frame_step))

    def timer(name):
        @torch.no_grad()
        def run(video):
            pixels = video.float() / 255
            out = []
            for area, layout, step in readers[name]:
                x = pixels[:, :, ::step] if layout.is_video else pixels[:, :, 0]
                out.append(area.target(TargetInput(x, layout)))
            return out

        return run

    return {name: timer(name) for name in readers}


# --------------------------------------------------------------------------- measuring


def _time(fn, video, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn(video)
    _sync(device)
    return time.perf_counter() - start


def _flops(model_step, video, device) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model_step(video)
    _sync(device)
    return float(counter.get_total_flops())


def _peak_tflops(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from ``/proc/self/status``, MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(args_json: str) -> None:
    """Run two steps of one contender alone; print its peak resident set and the growth over
    what it held before the first step (CPU). ``VmHWM`` starts afresh at ``exec``, unlike
    ``ru_maxrss``, which a child inherits from the process that forked it."""
    a = json.loads(args_json)
    s = _setup(argparse.Namespace(**a))
    video = _video(s)
    build = {"hf-videomae": hf_videomae, "ours-videomae": ours_videomae, "ours-bimm": ours_bimm,
             "ours-bimm+feedback": ours_feedback}[a["which"]]
    _, step = build(s)
    before = _rss_mib("VmRSS")
    for _ in range(2):
        step(video)
    peak = _rss_mib("VmHWM")
    print(json.dumps({"peak_mib": peak, "step_growth_mib": peak - before}))


def _cpu_memory(args, which: str) -> dict:
    import subprocess

    payload = json.dumps({**vars(args), "which": which})
    out = subprocess.run([sys.executable, "-m", "benchmarks.step", "--memory-child", payload], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _video(s: Setup) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (s.batch, 3, s.frames, s.res, s.res), dtype=torch.uint8, generator=g).to(s.device)


def _setup(args) -> Setup:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = torch.bfloat16 if device.type == "cuda" else None
    return Setup(args.size, args.frames, args.res, args.batch, device, autocast, args.compile, args.checkpointing,
                 args.decoder_keep, getattr(args, "pathway", None), getattr(args, "feedback", None))


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__.splitlines()[0])
    on_gpu = torch.cuda.is_available()
    parser.add_argument("--size", choices=list(SIZES), default="base" if on_gpu else "small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--res", type=int, default=224 if on_gpu else 112)
    parser.add_argument("--batch", type=int, default=32 if on_gpu else 8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile our models")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of our blocks")
    parser.add_argument("--decoder-keep", type=float, default=1.0,
                        help="fraction of masked tokens the V1/V2 decoders reconstruct (running cell)")
    parser.add_argument("--pathway", default=None,
                        help="the graph to time instead of the paper's: FILE.py:FN, module:FN, graph.json or a run")
    parser.add_argument("--feedback", default=None,
                        help="also time the graph with these feedback links (e.g. MT>V1): the cost of the second pass")
    parser.add_argument("--trust-code", action="store_true",
                        help="let a run given to --pathway rebuild with the code it carries (decision T1)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--docs", action="store_true",
                        help="write the table and ratios into docs/benchmarks.md (default settings only)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return {}
    s = _setup(args)
    if s.pathway is not None:
        graph(s)  # a graph that cannot be built, or a run not trusted, is refused before any timing
    torch.manual_seed(0)
    console = Console(width=140)
    video = _video(s)
    hf_model, hf_step = hf_videomae(s)
    _, mine_step = ours_videomae(s, hf_model)
    _, bimm_step = ours_bimm(s)
    steps = {"hf-videomae": hf_step, "ours-videomae": mine_step, "ours-bimm": bimm_step}
    if s.feedback:
        steps["ours-bimm+feedback"] = ours_feedback(s)[1]
    targets = {f"target {k}": v for k, v in target_timers(s, graph(s)).items()}
    runs = {**steps, **targets}
    for _ in range(args.warmup):
        for fn in runs.values():
            fn(video)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(_time(fn, video, s.device))
    memory: dict[str, float] = {}
    flops: dict[str, float] = {}
    if s.device.type == "cuda":
        for name, fn in steps.items():
            torch.cuda.reset_peak_memory_stats(s.device)
            fn(video)
            _sync(s.device)
            memory[name] = torch.cuda.max_memory_allocated(s.device) / 2**20
            flops[name] = _flops(fn, video, s.device)
    elif not args.no_memory:
        memory = {name: _cpu_memory(args, name)["step_growth_mib"] for name in steps}
    med = {k: _stats(v) for k, v in times.items()}
    target_total = sum(med[k][0] for k in targets)
    peak = _peak_tflops(s.device)
    table = Table(title=f"training step, {s.size} {s.frames}x{s.res}^2, batch {s.batch}, {s.device.type}"
                        f"{' bf16' if s.autocast else ' fp32'}{' compiled' if s.compile else ''}")
    mem_col = "peak MiB" if s.device.type == "cuda" else "step MiB"
    for col in ("contender", "median s", "min-max s", "clips/s", mem_col, "TFLOP/step", "MFU"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    rows = {}
    for name, (m, lo, hi) in med.items():
        f = flops.get(name)
        mfu = f / m / (peak * 1e12) if (f and peak) else None
        rows[name] = {"median_s": m, "min_s": lo, "max_s": hi, "clips_per_s": s.batch / m,
                      "peak_mib": memory.get(name), "tflop_per_step": f / 1e12 if f else None, "mfu": mfu}
        table.add_row(name, f"{m:.4f}", f"{lo:.4f}-{hi:.4f}", f"{s.batch / m:.1f}" if name in steps else "",
                      f"{memory[name]:.0f}" if name in memory else "", f"{f / 1e12:.2f}" if f else "",
                      f"{100 * mfu:.1f}%" if mfu else "")
    console.print(table)
    ratios = {
        "hf / ours-videomae (speed-up, target >= 1.2 CPU, 1.3 GPU)": med["hf-videomae"][0] / med["ours-videomae"][0],
        "ours-bimm / ours-videomae (target <= 1.8)": med["ours-bimm"][0] / med["ours-videomae"][0],
        "targets / ours-bimm (target <= 0.10)": target_total / med["ours-bimm"][0],
    }
    if s.feedback:
        ratios[f"ours-bimm+feedback ({s.feedback}) / ours-bimm"] = med["ours-bimm+feedback"][0] / med["ours-bimm"][0]
    for k in targets:
        ratios[f"  {k} / ours-bimm"] = med[k][0] / med["ours-bimm"][0]
    for k, v in ratios.items():
        console.print(f"{k}: [bold]{v:.3f}[/]")
    if args.docs:
        _write_docs(rows, ratios, steps, s, argv)
    result = {"setup": {k: str(v) for k, v in vars(s).items()}, "rows": rows, "ratios": ratios,
              "device_name": torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps(result))
    return result


def _write_docs(rows: dict, ratios: dict, steps: dict, s: Setup, argv: list[str] | None) -> None:
    """The default run's table and ratios into docs/benchmarks.md, between its markers."""
    from benchmarks.step_profile import write_docs

    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--docs"]
    if given not in ([], ["--no-memory"]):
        raise SystemExit("--docs records the default settings only; run `python -m benchmarks.step --docs`")
    lines = [f"`python -m benchmarks.step` — {s.size} {s.frames}x{s.res}^2, batch {s.batch}, "
             f"{s.device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}.", "",
             "| contender | median s | min–max s | clips/s | step MiB |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        mib = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else ""
        rate = f"{r['clips_per_s']:.1f}" if name in steps else ""
        lines.append(f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f}–{r['max_s']:.3f} | {rate} | {mib} |")
    lines.append("")
    lines += [f"- {k.strip()}: **{v:.2f}**" for k, v in ratios.items()]
    write_docs("step", "\n".join(lines))


def cli(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.step``: a refusal (an untrusted or damaged run, a bad graph) is one line."""
    from visualpath.errors import Refused, one_line
    from visualpath.trust import trusting

    trust_code = "--trust-code" in (sys.argv[1:] if argv is None else argv)
    try:
        with trusting(trust_code, command=True):
            main(argv)
    except Refused as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
