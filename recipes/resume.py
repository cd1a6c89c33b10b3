"""What a run directory says against running a configuration in it: settings that differ
from the run already there, a stage that stopped before its end, and where an interrupted
run stopped."""


from __future__ import annotations

from pathlib import Path

from areas.bimm import run_pathway
from recipes.config import STAGES, Config
from recipes.graph import build_graph
from visualpath import Pathway
from visualpath.config import flatten, to_dict
from visualpath.rundir import PATHWAY_FILE, graph_differences, has_checkpoint, run_config, stage_progress


def stored_graph(cfg: Config) -> Pathway | None:
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


# the model's scale (decision H5): its only effect is the graph, which a resumed run compares as a graph
SCALE_KEYS = tuple(f"model.{name}" for name in ("size", "width", "heads", "patch", "depth", "decoder_width",
                                                "decoder_heads", "decoder_depth"))


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
    stored = stored_graph(cfg)
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
        if key not in new and key not in defaults:
            continue  # a setting this version no longer has: what it set, the graph, is compared as a graph
        if key not in old and key in SCALE_KEYS:
            continue  # a scale setting added after the run started: it sets the graph, compared as a graph
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
