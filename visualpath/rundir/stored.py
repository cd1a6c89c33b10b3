"""The graph a run trains, stored beside it (``pathway.json``, and ``pathway.<stage>.json`` for
a stage that trains another graph), and the model read back from a run: graph and weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from visualpath import usercode
from visualpath.atomic import atomic
from visualpath.errors import Refused, shown
from visualpath.graph import Pathway, pathway_from_dict
from visualpath.overrides import override_keys
from visualpath.rundir.checkpoint import load_state, read_weights
from visualpath.rundir.files import check_links, read_json
from visualpath.spec import CODE_FORMAT
from visualpath.trust import trusting

if TYPE_CHECKING:
    from visualpath.model import PathwayModel

__all__ = ["PATHWAY_FILE", "write_pathway", "read_spec", "read_pathway", "stage_pathway", "pretrained_stage",
           "load_model", "graph_differences"]

PATHWAY_FILE = "pathway.json"


def _stage_file(stage: str) -> str:
    return PATHWAY_FILE.replace(".json", f".{stage}.json")


def write_pathway(root: str | Path, pathway: Pathway, stage: str | None = None, builder: str | None = None) -> Path:
    """Store ``pathway`` as ``root/pathway.json`` (atomically), or as ``pathway.<stage>.json``
    for a stage that trains another graph than the run's part for it (Table 7c's rows
    change the joint stage's targets only).

    The user's own code the graph needs (its areas' modules outside the installed packages,
    the ``builder`` reference's module and the user modules they import) is copied into
    ``root/code/`` first and listed, with each file's SHA-256, in the spec's ``"code"``
    (:mod:`visualpath.usercode`); the author's copies become trusted by content
    (:mod:`visualpath.trust`), so their own run opens anywhere without a flag.
    """
    root = Path(root)
    path = root / (_stage_file(stage) if stage else PATHWAY_FILE)
    spec = pathway.to_dict()
    modules = [sys.modules.get(type(a).__module__) for s in pathway.streams for a in s.areas]
    if builder is not None and ":" in builder and not Path(builder).is_dir():
        try:
            modules.append(usercode.module_of(builder.rpartition(":")[0], f"pathway={builder!r}"))
        except ValueError:
            pass  # a builder named by a spec file or a run: nothing of it runs
    entries = usercode.collect(m for m in modules if m is not None)
    if entries:
        spec = {"format": CODE_FORMAT, **{k: v for k, v in spec.items() if k != "format"},
                "code": usercode.write(root, entries)}
        usercode.remember_authored(entries)
    text = json.dumps(spec, indent=2)
    atomic(path, lambda tmp: Path(tmp).write_text(text))
    return path


def read_spec(path: Path) -> Pathway:
    """The graph a spec file holds (its carried code is read from the folder it is in)."""

    path = Path(path)
    spec = read_json(path, "a graph (streams, areas, encoder)")
    try:
        return pathway_from_dict(spec, root=path.parent, where=str(path))
    except RecursionError:
        raise Refused(f"{shown(path)} is nested too deeply to be a graph") from None


def stage_pathway(pathway: Pathway, stage: str | None) -> Pathway:
    """The part of a run's graph that a stage's checkpoint holds: the image streams for
    ``"ventral"`` (the MAE-style first stage), the whole graph otherwise."""
    if stage != "ventral":
        return pathway
    images = [s.name for s in pathway.streams if s.modality == "image"]
    if not images:
        raise Refused("the graph has no image stream, so it has no ventral stage")
    return pathway.select(images)


def read_pathway(run_dir: str | Path, stage: str | None = None, trust_code: bool = False) -> Pathway:
    """The graph stored in a run directory (for ``stage``'s checkpoint, see :func:`stage_pathway`).

    A stage's own graph (``pathway.<stage>.json``) comes first. Its areas are rebuilt from
    the code the run carries (``code/``), never from the paths it was trained from.

    Args:
        trust_code: run the code the graph needs even if it is neither installed nor
            trusted (:mod:`visualpath.trust`); read ``code/`` first.

    Raises:
        Refused: naming the directory when it holds no stored graph.
        LinkedRun: the directory holds a link it did not make (:func:`check_links`).
        visualpath.trust.CodeNotTrusted: the graph needs code the reader has not trusted.
    """
    run_dir = Path(run_dir)
    _require_run(run_dir)
    check_links(run_dir)  # nothing read or written through a link planted in the run
    own = run_dir / _stage_file(stage) if stage else None
    with trusting(trust_code):
        if own is not None and own.is_file():
            return read_spec(own)
        return stage_pathway(read_spec(run_dir / PATHWAY_FILE), stage)


def _require_run(run_dir: Path) -> None:
    """Refuse, in one line, a folder that is no run of this version (no ``pathway.json``)."""
    if (run_dir / PATHWAY_FILE).is_file():
        return
    if (run_dir / "config.json").is_file():
        raise Refused(f"{run_dir} was written by a version that did not store its graph ({PATHWAY_FILE}), "
                      "which this version no longer reads: train it again")
    raise Refused(f"{run_dir} is not a run directory: it has no {PATHWAY_FILE}")


def pretrained_stage(run_dir: str | Path, stage: str | None = None) -> str:
    """The pretraining stage whose weights a run is read with: ``stage``, or by default the
    joint stage if it has a checkpoint, else the ventral one.

    Raises:
        Refused: the run holds no such checkpoint.
    """
    stages = [stage] if stage else ["joint", "ventral"]
    found = next((s for s in stages if (Path(run_dir) / s / "model.safetensors").is_file()), None)
    if found is None:
        raise Refused(f"{run_dir} holds no {' or '.join(stages)} checkpoint (model.safetensors)")
    return found


def load_model(run_dir: str | Path, stage: str | None = None, device: str | torch.device = "cpu",
               trust_code: bool = False) -> PathwayModel:
    """The pathway of a run directory with its trained weights (verified against the hash
    their checkpoint recorded), in eval mode.

    Args:
        stage: ``"joint"`` or ``"ventral"``; default: the joint checkpoint if there is one.
        trust_code: see :func:`read_pathway`.
    """
    run_dir = Path(run_dir)
    _require_run(run_dir)  # says so when it is no run directory at all
    ckpt = run_dir / pretrained_stage(run_dir, stage) / "model.safetensors"
    model = read_pathway(run_dir, stage=ckpt.parent.name, trust_code=trust_code).build()
    load_state(model, read_weights(ckpt), ckpt)
    return model.to(device).eval()


def graph_differences(old: Pathway, new: Pathway, limit: int = 5) -> list[str]:
    """``key: old -> new`` lines between two graphs (keys as graph overrides spell them)."""

    if old == new:
        return []
    a, b = override_keys(old), override_keys(new)
    out = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out[:limit] or ["the streams or their areas differ"]
