"""What the transfer recipes (COCO, ADE20K, AVA) share: their common settings, the
pretrained encoder they adapt, the train-then-evaluate run, pixel normalisation, the
generated sets' folders and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import attrs
from rich.console import Console

from areas.bimm import ModelConfig, paper_pathway, run_pathway
from recipes.config import demo_model
from recipes.cli import paper_if_data, trust_args
from recipes.stages import ddp as _ddp
from visualpath._validate import non_negative_float
from visualpath.classifier import Encoder
from visualpath.config import parse_cli, to_dict
from visualpath.errors import Refused, no_space, one_line
from visualpath.preemption import EXIT_PREEMPTED, Preempted
from visualpath.trust import trusting
from visualpath.engine import RunLog, build_optimizer, fit, make_loader, setup, teardown
from visualpath.tokens import normalize_pixels
from visualpath.rundir import PATHWAY_FILE, pretrained_stage, read_weights
from visualpath import terminal
from visualpath.atomic import atomic_write

__all__ = ["TransferConfig", "DEMO_MODEL", "pretrained_encoder", "normalize", "check_pretrained", "generated_root",
           "train_and_evaluate", "transfer_main", "DEMO_RUN"]

DEMO_MODEL = demo_model(ModelConfig())  # the encoder's shape at demo scale without a pretrained run


@attrs.frozen(kw_only=True)
class TransferConfig:
    """Settings every transfer recipe has; each recipe's ``Config`` adds its task's own.

    Attributes:
        name: the run's title in its results
        run_dir: where config, metrics, checkpoints and results go
        seed: seeds every random draw
        device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N
        resume: continue the checkpoint in run_dir; false starts again
        log_every: optimiser steps between metric records
        checkpoint_minutes: also checkpoint this often mid-epoch (0: at epoch ends only)
        pretrained: a recipe's run directory: its encoder is the backbone
        model: the encoder's shape when no pretrained run is given
        data_root: the dataset's official layout; None: a generated set in that layout
        workers: data-loading processes (0: in the main one)
    """

    name: str = "transfer"
    run_dir: str = "runs/transfer"
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    log_every: int = 50
    checkpoint_minutes: float = attrs.field(default=10.0, validator=non_negative_float)
    pretrained: str | None = None
    model: ModelConfig = ModelConfig()
    data_root: str | None = None
    workers: int = 8

DEMO_RUN = "runs/bimm_ucf101_demo"  # the transfer demos adapt this run's encoders when it exists


def demo_pretrained() -> str | None:
    return DEMO_RUN if Path(DEMO_RUN, "config.json").is_file() else None


def check_pretrained(pretrained: str | None, stream: str) -> None:
    """``pretrained`` is a recipe's run directory whose graph has ``stream``."""
    if pretrained is None:
        return
    if not Path(pretrained, "config.json").is_file() and not Path(pretrained, PATHWAY_FILE).is_file():
        raise ValueError(f"pretrained={pretrained!r} is not a run directory of a recipe (no config.json)")
    streams = [s.name for s in run_pathway(pretrained).streams]
    if stream not in streams:
        raise ValueError(f"the backbone is the {stream} encoder: the run {pretrained!r} has streams {streams}")
    read_weights(Path(pretrained, pretrained_stage(pretrained), "model.safetensors"))  # checked before any data


def pretrained_encoder(pretrained: str | None, model: ModelConfig, stream: str, drop_path: float, task: str,
                       console: Console, fresh: str) -> Encoder:
    """``stream``'s encoder from the run ``pretrained`` (or of ``model``, randomly
    initialised), saying what was loaded and what starts ``fresh``."""
    if pretrained is not None:
        from analysis.features import load_run

        encoder = Encoder.from_pathway(load_run(pretrained), stream, drop_path=drop_path)
        console.print(f"[bold]{task}[/]: {stream} encoder from {pretrained}: loaded {len(encoder.state_dict())} "
                      f"tensors (embedding and {len(encoder.blocks)} blocks); {fresh} initialised fresh")
        return encoder
    console.print(f"[bold]{task}[/]: no pretrained run given, the {stream} encoder starts from random weights")
    return Encoder.from_pathway(paper_pathway(model).build(), stream, drop_path=drop_path)


def generated_root(folder: str, marker: str, write: Callable[[Path], object]) -> Path:
    """``$VISUALPATH_DATA/folder`` (or ``~/.cache/visualpath``), written by ``write(path)``
    unless ``folder/marker`` is already there."""
    from visualpath.data.synthetic import _cache_dir

    path = _cache_dir() / folder
    if not (path / marker).exists():
        write(path)
    return path


def train_and_evaluate(cfg: TransferConfig, task: str, prepare, step_fn, evaluate, summary: Callable[[dict], str],
                       collate=None) -> dict:
    """The run every transfer recipe makes: finetune, then evaluate, then report.

    Args:
        prepare: ``(console) -> (model, training set, evaluation set)``; the model has a
            ``backbone.encoder`` (layer-wise decay counts its blocks).
        step_fn: ``(model, batch) -> (loss, parts)`` for :func:`visualpath.engine.fit`.
        evaluate: ``(model, evaluation set, device) -> metrics``.
        summary: the metrics as one line for the console.
        collate: the loader's collate function, for items that do not stack.
    """
    runtime = setup(cfg.device, cfg.seed)
    console = terminal.console(stderr=True)
    log = RunLog(cfg.run_dir, runtime)
    log.write_config(to_dict(cfg))
    model = None
    try:
        model, train, held_out = prepare(console)
        model = model.to(runtime.device)
        optimizer = build_optimizer(model, cfg.optim, runtime, num_layers=len(model.backbone.encoder.blocks))
        loader = make_loader(train, cfg.optim.batch_size, runtime, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                             collate_fn=collate)
        fit(task, _ddp(model, runtime), step_fn, loader, optimizer, cfg.optim, runtime, log, resume=cfg.resume,
            log_every=cfg.log_every, checkpoint_minutes=cfg.checkpoint_minutes, console=console)
        results = {"run_dir": cfg.run_dir, **evaluate(model, held_out, runtime.device)}
    finally:
        log.close()
        teardown(runtime, model)
    if runtime.main:
        atomic_write(Path(cfg.run_dir, "results.json"), json.dumps(results, indent=2))
        console.print(f"[bold]{task}[/]: {summary(results)}")
    return results


normalize = normalize_pixels  # uint8 images (B, 3, H, W) or clips (B, 3, T, H, W) -> ImageNet-normalised floats


TRANSFER_OPTIONS = (
    ("--data-root DIR", "the same as data_root=DIR: the dataset in its official layout; without --variant it "
                        "selects the paper variant"),
    ("--trust-code", "let a pretrained= run from someone else rebuild with the code it carries (never remembered; "
                     "docs/reliability.md#security)"),
)
TRANSFER_NOTES = {
    "demo": "the task at laptop scale on a generated set in the dataset's layout (the demo run's encoder if "
            "runs/bimm_ucf101_demo exists)",
    "paper": "the paper's settings for the real dataset (data_root=...)",
    "tiny": "a few steps on a tiny generated set: checks that it runs end to end; learns nothing",
}


def transfer_main(module: str, doc: str, variants: dict, check, run, argv: list[str] | None = None) -> int:
    """``python -m recipes.transfer_*``: ``data_root`` given and no ``--variant`` selects the
    paper's settings. ``--trust-code`` lets a ``pretrained`` run from someone else rebuild
    with the code it carries (decision T1). Every refusal is one error line and exit status
    2; Ctrl-C one line and exit status 130."""
    argv = paper_if_data(list(sys.argv[1:] if argv is None else argv), variants, ("data_root",))
    argv, trust_code, _ = trust_args(argv)
    with trusting(trust_code, command=True):
        _, cfg = parse_cli(argv, variants, module, doc, options=TRANSFER_OPTIONS, variant_notes=TRANSFER_NOTES)
        try:
            try:
                check(cfg)
            except ValueError as err:  # a bad configuration, found before compute
                raise Refused(str(err)) from None
            run(cfg)
        except Refused as err:  # untrusted code, damaged weights, a dataset not in its layout, ...
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"interrupted: {cfg.run_dir} keeps its last checkpoint; the same command resumes from there",
                  file=sys.stderr)
            raise SystemExit(130) from None
        except Preempted as stop:  # a scheduler's SIGTERM / SIGUSR1 (decision R9)
            print(f"preempted: {stop}; the same command resumes from there (exit {EXIT_PREEMPTED})", file=sys.stderr)
            raise SystemExit(EXIT_PREEMPTED) from None
        except Exception as err:  # a full disk outside a checkpoint (R13)
            full = no_space(err)
            if full is None:
                raise
            print(f"error: {full}: free some space and run the same command again; it resumes from "
                  f"{cfg.run_dir}'s last checkpoint", file=sys.stderr)
            raise SystemExit(1) from None
    return 0
