"""A recipe run: check the configuration, store the graph, run the stages, print the results.

A recipe is a :class:`~recipes.config.Config` (the paper's settings for one dataset, plus
``demo`` and ``tiny`` variants) handed to :func:`run`, which checks it before any compute,
writes ``config.json`` and the graph (``pathway.json``) into the run directory and calls the
stages of :mod:`recipes.stages` top to bottom. Stages are resumable and runnable alone
(``stages=joint,finetune``), chained through the checkpoints in the run directory.

The graph is the paper's (``model.*``) unless ``pathway=`` names another (:mod:`recipes.graph`).
The checks live in :mod:`recipes.checks`, the resume rules in :mod:`recipes.resume` and the
command line in :mod:`recipes.cli`; this module is the run itself.

Learning rates follow the linear scaling rule ``base_lr * total_batch / 256`` of MAE and
VideoMAE; the paper's appendix writes ``/16`` for the ventral stage, which with its batch of
128 would be a 16x larger rate than MAE's recipe, so we keep the common rule.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from rich.table import Table

from recipes.checks import check
from recipes.config import STAGES, Config
from recipes.graph import ventral_graph
from recipes.resume import preflight
from recipes.stages import (Graphs, data_label, figure, graph_label, run_finetune, run_joint, run_test, run_ventral,
                            ventral_source)
from visualpath import Pathway, terminal
from visualpath.atomic import atomic_write
from visualpath.config import to_dict
from visualpath.data.memory import release_decoded
from visualpath.engine import RunLog, setup, teardown
from visualpath.preemption import stop_if_requested
from visualpath.errors import Refused
from visualpath.rundir import PATHWAY_FILE, RunLock, clear_stage, prune_stage, stage_pathway, write_pathway
from visualpath.trust import chosen, trusting

__all__ = ["run"]


def run(cfg: Config, *, trust_code: bool = False) -> dict:
    """Run the configured stages; returns the results (also in ``run_dir/results.json``).

    Top to bottom: the configuration is checked (:mod:`recipes.checks`) and the run directory
    locked and read for conflicts (:mod:`recipes.resume`), then the graph is stored and the
    stages run (:mod:`recipes.stages`). In Python, ``cfg.pathway`` is the caller's choice and
    the code it names runs; on the command line only a ``pathway=`` the command line itself
    gives is (decision T1).

    Args:
        trust_code: run code that ``cfg.pathway``, the run directory or ``pretrained=``
            names even if it is neither installed nor trusted by you (:mod:`visualpath.trust`).

    Raises:
        Refused: the configuration or the run directory refuses the run, before compute.
    """
    with trusting(trust_code, chosen(cfg.pathway)):
        pathway = _before_compute(check, cfg)
        stop_if_requested(None, "before anything was written or trained", started=False)
        with RunLock(cfg.run_dir) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
            _before_compute(preflight, cfg)
            return _run(cfg, pathway)


def _before_compute(step, cfg: Config):
    """``step(cfg)``, its ``ValueError`` (a bad configuration, found before compute) raised as
    a one-line :class:`Refused`."""
    try:
        return step(cfg)
    except Refused:
        raise
    except ValueError as err:
        raise Refused(str(err)) from None


def _run(cfg: Config, pathway: Pathway) -> dict:
    runtime = setup(cfg.device, cfg.seed)
    stop_if_requested(runtime, "before anything was written or trained", started=False)
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
    graphs = Graphs.of(cfg, run_log.root)  # read once, from the run's own copy; every stage gets it
    results: dict = {"run_dir": str(run_log.root), "graph": graph_label(cfg), "data": data_label(cfg),
                     "device": str(runtime.device), "world": runtime.world}
    model = None
    try:
        if "ventral" in cfg.stages:
            _, state = run_ventral(cfg, graphs, runtime, run_log, console)
            results["ventral_skipped"] = state.skipped
            results["ventral_short"] = len(state.extra.get("short", {}))
            results["ventral_images"] = ventral_source(cfg)
            stop_if_requested(runtime, "after the ventral stage")
        if "joint" in cfg.stages:
            joint, state = run_joint(cfg, graphs, runtime, run_log, console)
            results["joint_skipped"] = state.skipped
            results["joint_short"] = len(state.extra.get("short", {}))
            if runtime.main:
                figure(joint, cfg, run_log, runtime, console)
            stop_if_requested(runtime, "after the joint stage")
        if "finetune" in cfg.stages:
            model, state, classes = run_finetune(cfg, graphs, runtime, run_log, console)
            results["finetune_skipped"] = state.skipped
            results["finetune_short"] = len(state.extra.get("short", {}))
            if runtime.main:  # the class names travel with the finetuned model (exports use them)
                atomic_write(run_log.root / "classes.json", json.dumps(list(classes)))
            stop_if_requested(runtime, "after the finetune stage")
        release_decoded()  # the training videos kept in memory (data.memory_gb): the test reads its own files
        if "test" in cfg.stages:
            test = run_test(cfg, graphs, runtime, run_log, console, model=model)
            results.update(top1=test["top1"], top5=test["top5"], test_items=test["count"],
                           test_skipped=test["skipped_count"], test_short=test["short_count"], chance=test["chance"])
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
    for key in ("graph", "data", "top1", "top5", "chance", "test_items", "test_skipped", "test_short", "ventral_images",
                "ventral_skipped", "ventral_short", "joint_skipped", "joint_short", "finetune_skipped", "finetune_short",
                "run_dir"):
        if key in results and (results[key] or not key.endswith("_short")):  # a short video, when there is one
            value = results[key]
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    terminal.console().print(table)
