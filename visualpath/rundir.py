"""A run directory: the one home of everything a run writes and reads back.

::

    run_dir/
      config.json          the recipe's configuration (``{"config": ..., "git_revision": ...}``)
      pathway.json         the graph it trains (:mod:`visualpath.spec`), written before any stage
      metrics.jsonl        one JSON record per logged step, per stage
      <stage>/model.safetensors, <stage>/state.pt   each stage's checkpoint

Every consumer -- the joint stage after the ventral one, finetuning, testing, analysis,
transfer, benchmarks -- rebuilds the model from ``pathway.json`` (:func:`read_pathway`,
:func:`load_model`), so a graph a user wrote in Python is as runnable as the paper's.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from visualpath.engine import Runtime
    from visualpath.pathway import Pathway, PathwayModel

__all__ = [
    "TrainState",
    "RunLog",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "git_revision",
    "PATHWAY_FILE",
    "write_pathway",
    "read_pathway",
    "stage_pathway",
    "load_model",
    "graph_differences",
]

PATHWAY_FILE = "pathway.json"


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """Where a stage is: the next epoch and step, and counters worth keeping."""

    epoch: int = 0
    step: int = 0
    skipped: int = 0
    extra: dict = field(default_factory=dict)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP wrappers (their keys carry no
    ``_orig_mod.`` / ``module.`` prefixes)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: TrainState) -> None:
    """``model.safetensors`` (weights) and ``state.pt`` (optimizer, step, RNG), both atomic."""
    weights = {k: v.detach().contiguous().cpu() for k, v in _unwrap(model).state_dict().items()}
    _atomic(directory / "model.safetensors", lambda tmp: save_file(weights, tmp))
    if optimizer is None:
        return
    np_state = np.random.get_state()
    payload = {
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "skipped": state.skipped,
        "extra": state.extra,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": _python_state(random.getstate()),
        },
    }
    _atomic(directory / "state.pt", lambda tmp: torch.save(payload, tmp))


def _python_state(state):
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def load_weights(model: nn.Module, path: Path, strict: bool = True):
    """Load ``model.safetensors`` into ``model``; returns missing/unexpected keys."""
    return _unwrap(model).load_state_dict(load_file(str(path)), strict=strict)


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainState:
    """Restore weights, optimizer and RNG states (``weights_only=True``); returns the state."""
    load_weights(model, directory / "model.safetensors")
    payload = torch.load(directory / "state.pt", map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    return TrainState(payload["epoch"], payload["step"], payload["skipped"], payload["extra"])


# --------------------------------------------------------------------------- logging


def git_revision(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class RunLog:
    """A run directory: ``config.json``, ``metrics.jsonl`` and per-stage checkpoints.

    Only rank 0 writes. With ``tensorboard=True`` the numeric metrics also go to TensorBoard
    event files in ``root/tensorboard`` (tag ``stage/name``, at the record's ``step``); this
    needs the ``tensorboard`` package (``pip install tensorboard``) and says so otherwise.
    """

    def __init__(self, root: str | Path, runtime: Runtime, tensorboard: bool = False) -> None:
        self.root, self.runtime = Path(root), runtime
        self._writer = None
        if runtime.main:
            self.root.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    raise ValueError(f"tensorboard=true needs the tensorboard package (pip install tensorboard): "
                                     f"{err}") from None
                self._writer = SummaryWriter(str(self.root / "tensorboard"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        if self.runtime.main:
            payload = {"config": config, "git_revision": git_revision(), "world_size": self.runtime.world,
                       "device": str(self.runtime.device), "torch": torch.__version__}
            _atomic(self.root / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))

    def metrics(self, stage: str, **values: Any) -> None:
        if self.runtime.main:
            record = {"stage": stage, "time": time.time(), **values}
            with open(self.root / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if self._writer is not None:
                step = int(values.get("step", 0))
                for name, value in values.items():
                    if name not in ("step", "epoch") and isinstance(value, (int, float)):
                        self._writer.add_scalar(f"{stage}/{name}", value, step)
                self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage


# --------------------------------------------------------------------------- the stored graph


def _stage_file(stage: str) -> str:
    return PATHWAY_FILE.replace(".json", f".{stage}.json")


def write_pathway(root: str | Path, pathway: Pathway, stage: str | None = None) -> Path:
    """Store ``pathway`` as ``root/pathway.json`` (atomically), or as ``pathway.<stage>.json``
    for a stage that trains another graph than the run's part for it (Table 7c's rows
    change the joint stage's targets only)."""
    path = Path(root) / (_stage_file(stage) if stage else PATHWAY_FILE)
    text = json.dumps(pathway.to_dict(), indent=2)
    _atomic(path, lambda tmp: Path(tmp).write_text(text))
    return path


def read_spec(path: Path) -> Pathway:
    """The graph a spec file holds."""
    from visualpath.pathway import Pathway

    try:
        spec = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    return Pathway.from_dict(spec)


def stage_pathway(pathway: Pathway, stage: str | None) -> Pathway:
    """The part of a run's graph that a stage's checkpoint holds: the image streams for
    ``"ventral"`` (the MAE-style first stage), the whole graph otherwise."""
    if stage != "ventral":
        return pathway
    images = [s.name for s in pathway.streams if s.modality == "image"]
    if not images:
        raise ValueError("the graph has no image stream, so it has no ventral stage")
    return pathway.select(images)


def read_pathway(run_dir: str | Path, stage: str | None = None,
                 legacy: Callable[[dict], Pathway] | None = None) -> Pathway:
    """The graph stored in a run directory (for ``stage``'s checkpoint, see :func:`stage_pathway`).

    A stage's own graph (``pathway.<stage>.json``) comes first.

    Args:
        legacy: for a run written before graphs were stored, a function from its
            ``config.json`` to its graph (``areas.bimm.run_pathway`` passes the paper's).

    Raises:
        ValueError: naming the directory when it holds neither.
    """

    run_dir = Path(run_dir)
    own = run_dir / _stage_file(stage) if stage else None
    if own is not None and own.is_file():
        return read_spec(own)
    stored = run_dir / PATHWAY_FILE
    if stored.is_file():
        return stage_pathway(read_spec(stored), stage)
    config = run_dir / "config.json"
    if legacy is not None and config.is_file():
        return stage_pathway(legacy(json.loads(config.read_text())), stage)
    if config.is_file():
        raise ValueError(f"{run_dir} was written before runs stored their graph ({PATHWAY_FILE}): load it with "
                         "analysis.features.load_run, which rebuilds the paper's graph of its config.json")
    raise ValueError(f"{run_dir} is not a run directory: it has no {PATHWAY_FILE}"
                     + (" or config.json" if legacy is not None else ""))


def load_model(run_dir: str | Path, stage: str | None = None, device: str | torch.device = "cpu",
               legacy: Callable[[dict], Pathway] | None = None) -> PathwayModel:
    """The pathway of a run directory with its trained weights, in eval mode.

    Args:
        stage: ``"joint"`` or ``"ventral"``; default: the joint checkpoint if there is one.
        legacy: see :func:`read_pathway`.
    """
    run_dir = Path(run_dir)
    read_pathway(run_dir, legacy=legacy)  # says so when it is no run directory at all
    stages = [stage] if stage else ["joint", "ventral"]
    ckpt = next((run_dir / s / "model.safetensors" for s in stages if (run_dir / s / "model.safetensors").is_file()),
                None)
    if ckpt is None:
        raise ValueError(f"{run_dir} holds no {' or '.join(stages)} checkpoint (model.safetensors)")
    model = read_pathway(run_dir, stage=ckpt.parent.name, legacy=legacy).build()
    model.load_state_dict(load_file(str(ckpt)), strict=True)
    return model.to(device).eval()


def graph_differences(old: Pathway, new: Pathway, limit: int = 5) -> list[str]:
    """``key: old -> new`` lines between two graphs (keys as graph overrides spell them)."""
    from visualpath.spec import override_keys

    if old == new:
        return []
    a, b = override_keys(old), override_keys(new)
    out = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out[:limit] or ["the streams or their areas differ"]
