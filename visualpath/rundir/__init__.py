"""A run directory: the one home of everything a run writes and reads back.

::

    run_dir/
      config.json          the recipe's configuration (``{"config": ..., "git_revision": ...}``)
      pathway.json         the graph it trains (:mod:`visualpath.graph`), written before any stage
      metrics.jsonl        one JSON record per logged step, per stage
      <stage>/current -> ckpt-.../                 each stage's selected checkpoint unit
      <stage>/model.safetensors, <stage>/state.pt   links through current

Every consumer -- the joint stage after the ventral one, finetuning, testing, analysis,
transfer, benchmarks -- rebuilds the model from ``pathway.json`` (:func:`read_pathway`,
:func:`load_model`), so a graph a user wrote in Python is as runnable as the paper's.

One module per idea: :mod:`~visualpath.rundir.files` (JSON read back checked, no link
followed), :mod:`~visualpath.rundir.checkpoint` (checkpoint units),
:mod:`~visualpath.rundir.log` (config, metrics), :mod:`~visualpath.rundir.lock` (one writer)
and :mod:`~visualpath.rundir.stored` (the stored graph, the model read back).
"""

from visualpath.rundir.checkpoint import (
    FAULT_POINTS,
    UNVERIFIED_ENV,
    CheckpointWriteError,
    DamagedWeights,
    TrainState,
    clear_stage,
    has_checkpoint,
    load_checkpoint,
    load_state,
    load_weights,
    prune_stage,
    read_weights,
    save_checkpoint,
    selected_checkpoint,
    stage_progress,
)
from visualpath.rundir.files import LinkedRun, append_line, check_links, metrics_records, read_json, run_config
from visualpath.rundir.lock import RunDirBusy, RunLock
from visualpath.rundir.log import RunLog, git_revision
from visualpath.rundir.stored import (
    PATHWAY_FILE,
    graph_differences,
    load_model,
    pretrained_stage,
    read_pathway,
    read_spec,
    stage_pathway,
    write_pathway,
)

__all__ = [
    "TrainState", "save_checkpoint", "load_checkpoint", "has_checkpoint", "clear_stage", "prune_stage",
    "stage_progress", "selected_checkpoint", "CheckpointWriteError", "FAULT_POINTS", "load_weights", "load_state",
    "read_weights", "DamagedWeights", "UNVERIFIED_ENV", "RunLog", "git_revision", "RunLock", "RunDirBusy",
    "PATHWAY_FILE", "write_pathway", "read_spec", "read_pathway", "stage_pathway", "pretrained_stage", "load_model",
    "graph_differences", "LinkedRun", "check_links", "read_json", "run_config", "metrics_records", "append_line",
]
