"""A recipe run: check the configuration, store the graph, run the stages, print the results.

A recipe is a :class:`~recipes.config.Config` (the paper's settings for one dataset, plus
``demo`` and ``tiny`` variants) handed to :func:`run`, which checks it before any compute,
writes ``config.json`` and the graph (``pathway.json``) into the run directory and calls the
stages of :mod:`recipes.stages` top to bottom. Stages are resumable and runnable alone
(``stages=joint,finetune``), chained through the checkpoints in the run directory.

The graph is the paper's (``model.*``) unless ``pathway=`` names another (:mod:`recipes.graph`).

Learning rates follow the linear scaling rule ``base_lr * total_batch / 256`` of MAE and
VideoMAE; the paper's appendix writes ``/16`` for the ventral stage, which with its batch of
128 would be a 16x larger rate than MAE's recipe, so we keep the common rule.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from pathlib import Path

import attrs
import torch
from rich.table import Table

from areas.bimm import SIZES, TARGETS, ModelConfig, paper_pathway, run_pathway  # noqa: F401 (re-exported)
from recipes.config import (  # noqa: F401 (re-exported: recipes import them from here)
    STAGES,
    VARIANT_NOTES,
    Config,
    DataConfig,
    FinetuneConfig,
    PretrainConfig,
    TestConfig,
    demo_model,
    demo_of,
    demo_optim,
    tiny_model,
    tiny_of,
    variants,
)
from recipes.graph import build_graph, graph_help, split_graph_args, ventral_graph
from recipes.stages import (
    checkpoint_format,
    classifies_images,
    ddp as _ddp,  # noqa: F401 (the transfer recipes wrap their models the same way)
    figure,
    FRAMES,
    given_maps,
    init_target,
    is_pathway_checkpoint,
    missing_maps,
    pretrained_graph,
    run_finetune,
    run_joint,
    run_test,
    run_ventral,
    ventral_source,
    graph_label,
    data_label,
)
from visualpath import Pathway
from visualpath.atomic import atomic_write
from visualpath.config import flatten, parse_cli, to_dict
from visualpath.data.layouts import UNLABELED, check_root, video_split
from visualpath.data.memory import release_decoded
from visualpath.engine import RunLog, setup, teardown
from visualpath.errors import Refused, one_line, shown
from visualpath.preemption import EXIT_PREEMPTED, Preempted
from visualpath.trust import chosen, graph_code, trusting
from visualpath.rundir import (
    PATHWAY_FILE,
    CheckpointWriteError,
    clear_stage,
    prune_stage,
    RunLock,
    graph_differences,
    has_checkpoint,
    run_config,
    stage_pathway,
    stage_progress,
    write_pathway,
)
from visualpath import terminal

__all__ = ["Config", "ModelConfig", "DataConfig", "PretrainConfig", "FinetuneConfig", "TestConfig", "run",
           "check", "paper_pathway", "build_graph", "main", "demo_optim", "demo_of", "tiny_of", "SIZES", "STAGES",
           "TARGETS"]


def check(cfg: Config) -> Pathway:
    """Reject a configuration that cannot run, before any data or compute is touched;
    returns the graph it trains."""
    check_device(cfg.device)
    if cfg.data.root is not None:
        check_root(cfg.data.format, cfg.data.root)
        if cfg.data.format in ("lists", "folders", UNLABELED):  # a user's own layout: read its lists now
            for train in (True, False):
                video_split(cfg.data.format, cfg.data.root, train, cfg.data.split)
    if cfg.data.format == UNLABELED and set(cfg.stages) & {"finetune", "test"}:
        raise ValueError("data.format=unlabeled has no labels to finetune or test on: stages=ventral,joint (then "
                         "finetune the run on labelled data with pretrained=RUN_DIR)")
    if cfg.pretrained is not None and not Path(cfg.pretrained).exists():
        raise ValueError(f"pretrained={cfg.pretrained!r} does not exist; expected a run directory of a recipe "
                         "(holding config.json and joint/ or ventral/model.safetensors) or a checkpoint file "
                         "(ours, VideoMAE, MAE, timm or Hugging Face)")
    if cfg.pretrained is not None and Path(cfg.pretrained).is_file() and \
            not is_pathway_checkpoint(Path(cfg.pretrained)):
        try:
            checkpoint_format(cfg.pretrained)
        except ValueError as err:
            raise ValueError(f"pretrained={cfg.pretrained!r}: {err}") from None
    if cfg.pretrained is not None and any(s in cfg.stages for s in ("ventral", "joint")):
        raise ValueError("pretrained= finetunes another run: set stages=finetune,test")
    _check_writable(Path(cfg.run_dir))
    if cfg.data.image_root not in (None, "builtin", FRAMES):
        check_root("imagenet", cfg.data.image_root, key="data.image_root")
    if "ventral" in cfg.stages and cfg.data.image_root is None:
        raise ValueError("the ventral stage needs its images: data.image_root=/path/to/imagenet (an ImageNet-layout "
                         "folder: the paper's IN-1K initialisation, Table 7a's default) or data.image_root=frames "
                         "(frames of the video set: Table 7a's 'UCF101 Init' row)")
    pathway = build_graph(cfg)  # the builder runs and the graph validates here
    stored = _stored_graph(cfg)
    if cfg.pretrained is not None:
        pathway = pretrained_graph(cfg) or pathway  # finetuning another run: the graph it trained
    elif stored is not None and not set(cfg.stages) & {"ventral", "joint"}:
        pathway = stored  # finetuning or testing this run: the graph it trained
    finetuned = pathway
    streams = [s.name for s in finetuned.streams]
    if cfg.finetune.stream not in streams and any(s in cfg.stages for s in ("finetune", "test")):
        raise ValueError(f"finetune.stream={cfg.finetune.stream!r} is not a stream of the graph; its streams: "
                         f"{streams}")
    if cfg.finetune.stream in streams and classifies_images(cfg, finetuned) and \
            cfg.data.image_root in (None, FRAMES) and any(s in cfg.stages for s in ("finetune", "test")):
        raise ValueError(f"finetune.stream={cfg.finetune.stream!r} is an image stream, so it classifies images: "
                         "set data.image_root (an ImageNet-layout folder, or 'builtin')")
    if cfg.init is not None:
        if not Path(cfg.init).is_file():
            raise ValueError(f"init={cfg.init!r} does not exist; expected a checkpoint file (VideoMAE, MAE, timm or "
                             "Hugging Face: .pth, .bin or .safetensors)")
        _, stream, _ = init_target(cfg, pathway)
        _check_init_fits(cfg, pathway, stream)
    if "ventral" in cfg.stages and not any(s.modality == "image" for s in pathway.streams):
        raise ValueError(f"stages include 'ventral' (pretraining the image streams) but the graph has none; its "
                         f"streams: {[f'{s.name} ({s.modality})' for s in pathway.streams]}")
    declared = sorted({m for s in pathway.streams for m in s.maps})
    for key, images in (("data.maps", False), ("data.image_maps", True)):
        unknown = [m for m in given_maps(cfg, images) if m not in declared]
        if unknown:
            raise ValueError(f"{key} names {unknown[0]!r}, which no area of the graph reads; declared maps: "
                             f"{declared or 'none'}")
    needs = []
    if "joint" in cfg.stages:
        needs.append(("data.maps", missing_maps(pathway, given_maps(cfg))))
    if "ventral" in cfg.stages and cfg.data.image_root is not None:
        on_images = cfg.data.image_root != FRAMES
        ventral = ventral_graph(cfg, pathway)
        if ventral is not None:
            needs.append(("data.image_maps" if on_images else "data.maps",
                          missing_maps(ventral, given_maps(cfg, images=on_images))))
    for key, missing in needs:
        if missing:
            area, name = missing[0]
            raise ValueError(f"area {area} reads the side map {name!r} and has no fallback: precompute it "
                             f"(python -m recipes.precompute_maps --map {name} ...) and pass {key}={name}=DIR")
    patch, tube = pathway.encoder.patch, pathway.encoder.tube
    if cfg.data.size % patch or cfg.data.frames % tube:
        raise ValueError(f"data.size must be a multiple of {patch} and data.frames of {tube}, got "
                         f"{cfg.data.size}, {cfg.data.frames}")
    side = cfg.data.size // patch
    for stream in pathway.streams:
        frames = -(-cfg.data.frames // stream.frame_step)
        if stream.modality == "video" and frames % tube:
            raise ValueError(f"stream {stream.name!r} sees {frames} of data.frames={cfg.data.frames} "
                             f"(frame_step {stream.frame_step}), not a multiple of the tube ({tube})")
        grid = (side, side) if stream.modality == "image" else (frames // tube, side, side)
        try:
            stream.mask.count(grid)
        except ValueError as err:
            raise ValueError(f"mask of stream {stream.name!r} at data.size={cfg.data.size}: {err}") from None
    check_memory(cfg, pathway)
    if cfg.data.root is None and 2 * cfg.data.synthetic_size < cfg.data.size:
        raise ValueError(f"data.synthetic_size={cfg.data.synthetic_size} is less than half the crop, data.size="
                         f"{cfg.data.size}: each crop would be the built-in set's frames enlarged more than 2x; "
                         f"raise data.synthetic_size to at least {-(-cfg.data.size // 2)} (up to 512) or lower "
                         "data.size")
    check_targets(pathway, cfg.data.size, cfg.data.frames)
    return pathway


def check_targets(pathway: Pathway, size: int, frames: int) -> None:
    """Each area's target, computed once on one random clip (or image) at the run's size,
    has the ``(1, tokens, target_dim)`` shape its decoder is built for: a user's area whose
    target disagrees with its ``target_dim`` is refused before compute, naming both shapes.

    Raises:
        Refused: naming the stream, the area and the shapes, or the error its target raised.
    """
    from visualpath import TargetInput
    from visualpath.tokens import Layout

    enc = pathway.encoder
    generator = torch.Generator().manual_seed(0)
    for stream in pathway.streams:
        video = stream.modality == "video"
        layout = Layout(stream.modality, enc.patch, enc.tube if video else 1, enc.channels)
        shape = (1, enc.channels, -(-frames // stream.frame_step), size, size) if video else \
            (1, enc.channels, size, size)
        pixels = torch.rand(shape, generator=generator)
        maps = {m: torch.zeros(shape[:1] + (1,) + shape[2:]) for m in stream.maps}
        tokens = math.prod(layout.grid(shape))
        for area in stream.areas:
            if not area.has_readout:
                continue
            where = f"area {area.name} ({type(area).__name__}) of stream {stream.name!r}"
            want = area.target_dim(layout)
            try:
                with torch.no_grad():
                    got = area.target(TargetInput(pixels=pixels, layout=layout, maps=maps))
            except Exception as err:  # noqa: BLE001 (a user's target: any failure is theirs to see, in one line)
                raise Refused(f"{where}: its target fails on a {tuple(shape)} input: {type(err).__name__}: "
                              f"{one_line(err)[:300]}") from None
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != (1, tokens, want):
                found = tuple(getattr(got, "shape", ()))
                if len(found) != 3 or found[:2] != (1, tokens):  # a map, not tokens: the patches were never cut
                    advice = (f"a target is one row per token: cut a map of shape (B, C, [T,] H, W) into tokens with "
                              f"inp.layout.patchify(map), which gives (1, {tokens}, values per token)")
                else:
                    advice = "make target_dim return the values per token its target gives"
                raise Refused(f"{where}: its target has shape {found} where (1, {tokens}, {want}) was expected "
                              f"(batch, tokens, target_dim(layout)={want}); {advice}")


# what one clip holds in memory at the finetuning stage (every token, no mask), besides the model: the
# activations each block keeps for the backward pass, about 16 tensors of width D per token, in float32
_ACTIVATIONS_PER_TOKEN = 16


def check_memory(cfg: Config, pathway: Pathway) -> None:
    """Refuse a clip size that could not fit in this machine's memory (the host's, or the
    GPU's for ``device=cuda``) even one clip at a time: the estimate is one clip's decoded
    frames and one finetuning step's activations, named with what the machine has."""
    enc = pathway.encoder
    tokens = max(cfg.data.frames // enc.tube, 1) * (cfg.data.size // enc.patch) ** 2
    frames = enc.channels * cfg.data.frames * cfg.data.size ** 2 * (1 + 4)  # uint8, then float32
    need = frames + tokens * enc.width * enc.depth * _ACTIVATIONS_PER_TOKEN * 4
    available = _memory_available(cfg.device)
    if available is not None and need > available:
        raise Refused(f"data.size={cfg.data.size} with data.frames={cfg.data.frames} needs about {need / 2**30:.1f} GiB "
                      f"for a single clip ({tokens} tokens through a {enc.depth}-block encoder of width {enc.width}) "
                      f"and this machine has {available / 2**30:.1f} GiB: lower data.size or data.frames")


def _memory_available(device: str) -> int | None:
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_device(device: str) -> None:
    """``device`` names a device this machine has: auto, cpu, mps, cuda or cuda:N."""
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (index and (kind != "cuda" or not index.isdigit())):
        raise Refused(f"device must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise Refused(f"device={device}: this machine has no CUDA device; use device=auto or cpu")
        if index and int(index) >= count:
            raise Refused(f"device={device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise Refused(f"device={device}: MPS is not available on this machine; use device=auto or cpu")


def _check_writable(run_dir: Path) -> None:
    """The run directory can be created and written (not under a file, not read-only),
    decided without creating it: a refusal leaves the folder as it found it."""
    existing = run_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        probe = existing / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ValueError(f"run_dir={str(run_dir)!r} cannot be written ({reason}); choose a writable folder") from None


def _check_init_fits(cfg: Config, pathway: Pathway, stream: str) -> None:
    """``init=``'s tensors fit the stream they start (loaded into a throwaway model)."""
    from visualpath.interop import load_checkpoint

    try:
        load_checkpoint(pathway.build(), cfg.init, stream=stream)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"init={cfg.init!r} does not fit the {stream} stream: {str(err).splitlines()[0]}") from None


def _stored_graph(cfg: Config) -> Pathway | None:
    """The graph already stored in ``cfg.run_dir``, if any."""
    if not Path(cfg.run_dir, PATHWAY_FILE).is_file():
        return None
    try:
        return run_pathway(cfg.run_dir)
    except ValueError as err:  # a stored graph that no longer loads: say so, do not guess
        raise ValueError(f"run_dir={cfg.run_dir!r} stores a graph that cannot be read: {err}") from None


# keys that may change between a run and its resumption: they do not change what is trained
# (the graph is compared as a graph: pathway= may name it differently, or not at all for
# finetune/test stages, which take the graph stored in the run directory)
RESUMABLE_CHANGES = ("name", "run_dir", "stages", "resume", "log_every", "checkpoint_minutes", "tensorboard", "device",
                     "data.workers",
                     "compile", "checkpointing", "pathway", "pathway_overrides",
                     "test.")


def resume_conflicts(cfg: Config) -> list[str]:
    """Settings that differ from the run already in ``cfg.run_dir`` (empty when none is there).

    A resumed stage must continue the run it started; one with other settings would mix two
    experiments in one set of checkpoints.
    """
    saved = Path(cfg.run_dir, "config.json")
    trained = [s for s in STAGES if has_checkpoint(Path(cfg.run_dir, s))]
    if not cfg.resume or not trained:
        return []
    if not saved.is_file():
        return [f"config.json is missing beside the checkpoints of {', '.join(trained)}: the settings they were "
                "trained with are unknown"]
    if not Path(cfg.run_dir, PATHWAY_FILE).is_file():
        return [f"{PATHWAY_FILE} is missing beside the checkpoints of {', '.join(trained)}: a run of a version "
                "that did not store its graph, which this version no longer reads; train it again"]
    out = []
    stored = _stored_graph(cfg)
    if stored is not None and set(cfg.stages) & {"ventral", "joint"}:
        out += [f"graph {line}" for line in graph_differences(stored, build_graph(cfg))]
    old = flatten(run_config(cfg.run_dir))
    new = flatten(to_dict(cfg))
    defaults = flatten(to_dict(Config()))
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUMABLE_CHANGES) or key in RESUMABLE_CHANGES:
            continue
        if key not in old and new.get(key) == defaults.get(key):
            continue  # a setting added after the run started, left at its default
        if old.get(key) != new.get(key):
            out.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return out


def unfinished_stages(cfg: Config) -> list[str]:
    """Why a run must not go on: a later stage would start from an earlier stage that stopped
    before its end (e.g. finetuning a half-trained encoder)."""
    order = [s for s in STAGES if s in ("ventral", "joint", "finetune")]
    out = []
    for i, stage in enumerate(order):
        if stage in cfg.stages or not any(s in cfg.stages for s in order[i + 1:] + ["test"]):
            continue
        progress = stage_progress(Path(cfg.run_dir, stage))
        if progress is not None and not progress["finished"]:
            out.append(f"the {stage} stage stopped at step {progress['step']} of {progress['total_steps']}: finish it "
                       f"(stages={stage},...) before the stages after it, or start them from another run "
                       "(pretrained=)")
    return out


def run(cfg: Config, *, trust_code: bool = False) -> dict:
    """Run the configured stages; returns the results (also in ``run_dir/results.json``).

    In Python, ``cfg.pathway`` is the caller's choice and the code it names runs; on the
    command line only a ``pathway=`` the command line itself gives is (decision T1).

    Args:
        trust_code: run code that ``cfg.pathway``, the run directory or ``pretrained=``
            names even if it is neither installed nor trusted by you (:mod:`visualpath.trust`).
    """
    with trusting(trust_code, chosen(cfg.pathway)):
        pathway = check(cfg)
        with RunLock(cfg.run_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
            preflight(cfg)
            return _run(cfg, pathway)


def preflight(cfg: Config) -> None:
    """What the run directory says against running ``cfg`` in it, before compute."""
    conflicts = resume_conflicts(cfg)
    if conflicts:
        pretrained_kept = has_checkpoint(Path(cfg.run_dir, "joint")) or has_checkpoint(Path(cfg.run_dir, "ventral"))
        if pretrained_kept and not set(cfg.stages) & {"ventral", "joint"} and cfg.pretrained is None:
            advice = (f"to finetune its pretrained encoder with these settings, give the new run its own directory: "
                      f"run_dir={cfg.run_dir.rstrip('/')}_ft pretrained={cfg.run_dir} "
                      f"stages={','.join(cfg.stages)}")
        else:
            advice = "choose another run_dir, or resume=false to start it again"
        raise ValueError(f"run_dir={cfg.run_dir!r} holds a run with other settings ({'; '.join(conflicts)}); "
                         f"{advice}")
    if cfg.pretrained is None:
        blocked = unfinished_stages(cfg)
        if blocked:
            raise ValueError(f"run_dir={cfg.run_dir!r}: {blocked[0]}")


def _run(cfg: Config, pathway: Pathway) -> dict:
    runtime = setup(cfg.device, cfg.seed)
    console = terminal.console(stderr=True, quiet=not runtime.main)  # under torchrun, rank 0 speaks
    run_log = RunLog(cfg.run_dir, runtime, tensorboard=cfg.tensorboard)
    run_log.write_config(to_dict(cfg))
    if runtime.main and not cfg.resume:  # start again: this stage's and the later stages' checkpoints go
        first = min(STAGES.index(s) for s in cfg.stages)
        for stage in STAGES[first:]:
            clear_stage(run_log.stage_dir(stage))
    if runtime.main:  # units a kill left beside the selected one (after its selection, before the clean-up)
        for stage in STAGES:
            prune_stage(run_log.stage_dir(stage))
    runtime.barrier()
    if runtime.main and (set(cfg.stages) & {"ventral", "joint"} or not Path(cfg.run_dir, PATHWAY_FILE).is_file()):
        write_pathway(run_log.root, pathway, builder=cfg.pathway)
        ventral = ventral_graph(cfg, pathway) if "ventral" in cfg.stages else None
        if ventral is not None and ventral != stage_pathway(pathway, "ventral"):
            write_pathway(run_log.root, ventral, stage="ventral", builder=cfg.pathway)
    runtime.barrier()
    results: dict = {"run_dir": str(run_log.root), "graph": graph_label(cfg), "data": data_label(cfg),
                     "device": str(runtime.device), "world": runtime.world}
    model = None
    try:
        if "ventral" in cfg.stages:
            _, state = run_ventral(cfg, runtime, run_log, console)
            results["ventral_skipped"] = state.skipped
            results["ventral_images"] = ventral_source(cfg)
        if "joint" in cfg.stages:
            joint, state = run_joint(cfg, runtime, run_log, console)
            results["joint_skipped"] = state.skipped
            if runtime.main:
                figure(joint, cfg, run_log, runtime, console)
        if "finetune" in cfg.stages:
            model, state, classes = run_finetune(cfg, runtime, run_log, console)
            results["finetune_skipped"] = state.skipped
            if runtime.main:  # the class names travel with the finetuned model (exports use them)
                atomic_write(run_log.root / "classes.json", json.dumps(list(classes)))
        release_decoded()  # the training videos kept in memory (data.memory_gb): the test reads its own files
        if "test" in cfg.stages:
            test = run_test(cfg, runtime, run_log, console, model=model)
            results.update(top1=test["top1"], top5=test["top5"], test_items=test["count"],
                           test_skipped=test["skipped_count"], chance=test["chance"])
    finally:
        run_log.close()
        teardown(runtime, model)
    if runtime.main:
        atomic_write(run_log.root / "results.json", json.dumps(results, indent=2))
        _table(cfg.name, results)
    return results


def _table(name: str, results: dict) -> None:
    table = Table(title=f"{name} results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("graph", "data", "top1", "top5", "chance", "test_items", "test_skipped", "ventral_images",
                "ventral_skipped", "joint_skipped", "finetune_skipped", "run_dir"):
        if key in results:
            value = results[key]
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    terminal.console().print(table)


def paper_if_data(argv: list[str], recipe_variants: dict, data_keys: tuple[str, ...] = ("data.root",)) -> list[str]:
    """``argv`` with ``--data-root``-style spellings normalised and, when it names one of
    ``data_keys`` but no ``--variant``, ``--variant paper`` in front: real data gets the
    paper's settings, the built-in sets the demo's."""
    def flat(name: str) -> str:
        return name.replace("-", "_").replace(".", "_")

    wanted = {flat(k): k for k in data_keys}
    out = []
    for a in argv:  # --data-root, --data_root, data_root= ... -> the config's own key
        dashes = "--" if a.startswith("--") else ""
        name, eq, value = a[len(dashes):].partition("=")
        is_key = (dashes or eq) and flat(name) in wanted  # a bare word is a value, not a key
        out.append(f"{dashes}{wanted[flat(name)]}{eq}{value}" if is_key else a)
    named = any(a.startswith(("--" + k, k + "=")) for a in out for k in data_keys)
    if named and "paper" in recipe_variants and not any(a.startswith("--variant") for a in out):
        out = ["--variant", "paper", *out]
    return out


RECIPE_OPTIONS = (
    ("--data-root DIR", "the same as data.root=DIR: the dataset in its official layout; without --variant it "
                        "selects the paper variant"),
    ("--trust-code", "run the code a run or graph names even if it is neither installed nor trusted by you "
                     "(never remembered; docs/reliability.md#security)"),
    ("pathway.KEY=VALUE", "set a field of the graph (graph keys, at the end)"),
)


def parse(argv: list[str], recipe_variants: dict, module: str, doc: str) -> Config:
    """The command line's config: ``[--variant V] [key=value ...] [pathway.KEY=VALUE ...]``;
    ``--help`` also lists the graph's streams, areas and keys."""
    try:
        argv, graph = split_graph_args(argv)
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None

    def with_graph(cfg: Config) -> Config:
        return attrs.evolve(cfg, pathway_overrides=cfg.pathway_overrides + graph)

    _, cfg = parse_cli(argv, recipe_variants, module, doc, help_extra=lambda c: graph_help(with_graph(c)),
                       options=RECIPE_OPTIONS, variant_notes=VARIANT_NOTES)
    problem = config_file_run_dir(argv, cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return with_graph(cfg)


def config_file_run_dir(argv: list[str], cfg: Config) -> str | None:
    """Why ``cfg.run_dir`` may not be used when a ``--config`` file set it (None if it may): a
    file someone else wrote chooses where this run writes only inside the current folder
    (decision T1); anywhere else takes ``run_dir=`` on the command line."""
    if _run_dir_on_line(argv) or not any(a == "--config" or a.startswith("--config=") for a in argv):
        return None
    here = Path.cwd().resolve()
    path = (here / cfg.run_dir).resolve()  # through any link on the way: where the writes would land
    if Path(cfg.run_dir).is_absolute() or ".." in Path(cfg.run_dir).parts or not path.is_relative_to(here):
        return (f"the --config file sets run_dir={shown(cfg.run_dir)!r}, outside the current folder"
                + (f" (it leads to {shown(path)})" if not Path(cfg.run_dir).is_absolute() else "")
                + ": a config file chooses only a folder inside it; give run_dir= on the command line to write there")
    return None


FLAG_OPTIONS = ("--help", "-h", "--print-config", "--trust-code")  # the options that take no value


def _run_dir_on_line(argv: list[str]) -> bool:
    """Whether the command line itself sets ``run_dir`` (``run_dir=D``, ``--run-dir D``,
    ``--run_dir=D``), read as the parser reads it: the value of another option
    (``--config run_dir.yaml``, ``--name run_dir=x``) is not a setting."""
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, _ = a.lstrip("-").partition("=")
        if key.replace("-", "_") == "run_dir" and (eq or a.startswith("--")):
            return True
        if a.startswith("-") and not eq and a not in FLAG_OPTIONS:
            i += 1  # its value follows
        i += 1
    return False


def trust_args(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    """``argv`` without its ``--trust-code`` (also ``trust_code=true``), whether it was
    given, and the graphs the command line itself names (``pathway=REF``): the code the
    reader chose. A ``--config`` file's ``pathway`` is not among them (decision T1)."""
    rest, trust_code, named, i = [], False, [], 0
    while i < len(argv):
        a = argv[i]
        bare = a[2:] if a.startswith("--") else a
        key, eq, value = bare.partition("=")
        if key.replace("-", "_") == "trust_code":
            if eq and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                print(f"error: trust_code takes true or false, got {value!r}", file=sys.stderr)
                raise SystemExit(2)
            trust_code = (value.lower() in ("true", "1", "yes")) if eq else True
            i += 1
            continue
        if key == "pathway":  # its code, as what the value says (a run's folder or a .json names none)
            if eq:
                named += graph_code(value)
            elif a.startswith("--") and i + 1 < len(argv):
                named += graph_code(argv[i + 1])
        rest.append(a)
        i += 1
    return rest, trust_code, named


def main(module: str, doc: str, recipe_variants: dict, argv: list[str] | None = None,
         data_keys: tuple[str, ...] = ("data.root",)) -> int:
    """``python -m recipes.NAME``: given real data (``data_keys``) and no ``--variant``, the
    paper's settings. Every refusal is one line (``error: ...``, exit 2) before compute; a
    run stopped by Ctrl-C says where it stopped (exit 130); one stopped by a scheduler's
    SIGTERM or SIGUSR1 checkpoints at the next step and says so (exit 75, decision R9)."""
    argv = paper_if_data(list(sys.argv[1:] if argv is None else argv), recipe_variants, data_keys)
    argv, trust_code, named = trust_args(argv)
    with trusting(trust_code, named, command=True):
        cfg = parse(argv, recipe_variants, module, doc)
        try:
            try:
                check(cfg)
                preflight(cfg)
            except ValueError as err:  # a bad configuration, found before compute
                raise Refused(str(err)) from None
            run(cfg, trust_code=trust_code)
        except CheckpointWriteError as err:  # e.g. the disk is full: the previous checkpoint is kept
            print(f"error: {err.strerror or err}", file=sys.stderr)
            raise SystemExit(1) from None
        except Refused as err:  # untrusted code, damaged weights, a busy run directory, ...: one line
            sys.stderr.write(f"error: {one_line(err)}\n")  # one write: processes of one job share the stream
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"interrupted: {interrupted_at(cfg)}; the same command resumes from there", file=sys.stderr)
            raise SystemExit(130) from None
        except Preempted as stop:  # a scheduler's SIGTERM / SIGUSR1: checkpointed at a step boundary (R9)
            print(f"preempted: {stop}; the same command resumes from there (exit {EXIT_PREEMPTED})", file=sys.stderr)
            raise SystemExit(EXIT_PREEMPTED) from None
    return 0


def interrupted_at(cfg: Config) -> str:
    """Where an interrupted run stopped: each stage's last checkpoint."""
    kept = []
    for stage in STAGES:
        progress = stage_progress(Path(cfg.run_dir, stage))
        if progress is not None:
            kept.append(f"{stage} at step {progress['step']}"
                        + (f" of {progress['total_steps']}" if progress.get("total_steps") else ""))
    return (f"{cfg.run_dir} keeps the last checkpoint of each stage ({', '.join(kept)})" if kept
            else f"{cfg.run_dir} holds no checkpoint yet")


def entry(name: str, doc: str, recipe_variants: dict[str, Config], data_keys: tuple[str, ...] = ("data.root",)):
    """A recipe's ``main(argv=None)`` for ``python -m recipes.<name>``."""
    def recipe_main(argv: list[str] | None = None) -> int:
        return main(f"recipes.{name}", doc, recipe_variants, argv, data_keys)
    return recipe_main
