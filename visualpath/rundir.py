"""A run directory: the one home of everything a run writes and reads back.

::

    run_dir/
      config.json          the recipe's configuration (``{"config": ..., "git_revision": ...}``)
      pathway.json         the graph it trains (:mod:`visualpath.graph`), written before any stage
      metrics.jsonl        one JSON record per logged step, per stage
      <stage>/model.safetensors, <stage>/state.pt   each stage's checkpoint

Every consumer -- the joint stage after the ventral one, finetuning, testing, analysis,
transfer, benchmarks -- rebuilds the model from ``pathway.json`` (:func:`read_pathway`,
:func:`load_model`), so a graph a user wrote in Python is as runnable as the paper's.
"""

from __future__ import annotations

import errno
import logging
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import torch
from safetensors.torch import load as load_bytes, save_file
from torch import nn

from visualpath.atomic import atomic, file_mode
from visualpath import usercode
from visualpath.errors import Refused, one_line, shown
from visualpath.graph import Pathway, pathway_from_dict
from visualpath.overrides import override_keys
from visualpath.spec import CODE_FORMAT
from visualpath.trust import trusting

if TYPE_CHECKING:
    from visualpath.model import PathwayModel
    from visualpath.runtime import Runtime

__all__ = [
    "TrainState",
    "pretrained_stage",
    "RunLog",
    "save_checkpoint",
    "load_checkpoint",
    "has_checkpoint",
    "clear_stage",
    "prune_stage",
    "stage_progress",
    "selected_checkpoint",
    "CheckpointWriteError",
    "RunLock",
    "RunDirBusy",
    "FAULT_POINTS",
    "load_weights",
    "load_state",
    "read_weights",
    "DamagedWeights",
    "git_revision",
    "PATHWAY_FILE",
    "write_pathway",
    "read_pathway",
    "stage_pathway",
    "load_model",
    "graph_differences",
    "LinkedRun",
    "check_links",
    "read_json",
    "run_config",
    "metrics_records",
    "append_line",
]

log = logging.getLogger(__name__)

PATHWAY_FILE = "pathway.json"


# --------------------------------------------------------------------------- a run's JSON files, checked


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def read_json(path: str | Path, what: str, kind: type = dict) -> Any:
    """The JSON document ``path`` holds, which must be ``kind`` (an object by default).

    Raises:
        Refused: in one line naming the file: unreadable, not JSON (where), nested too deeply,
            or another kind of value; ``what`` says what the file should be.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise Refused(f"{shown(path)} cannot be read as text ({getattr(err, 'strerror', None) or err}): "
                      f"it should hold {what}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise Refused(f"{shown(path)} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                      f"it should hold {what}") from None
    except RecursionError:
        raise Refused(f"{shown(path)} is nested too deeply to be {what}") from None
    if not isinstance(value, kind):
        raise Refused(f"{shown(path)} holds {_kind(value)}, not {_kind(kind())}: it should hold {what}")
    return value


def run_config(run_dir: str | Path) -> dict:
    """The settings a run was started with (``config.json``'s ``"config"`` object; ``{}`` when
    the run has no config.json), its sections checked to be objects."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    saved = read_json(path, 'a run\'s settings, {"config": {...}}')
    config = saved.get("config")
    if not isinstance(config, dict):
        raise Refused(f"{shown(path)} has no \"config\" object (it holds {_kind(config)}): not a run's settings")
    for section, value in config.items():
        if section in ("model", "data", "ventral", "joint", "finetune", "test") and not isinstance(value, dict):
            raise Refused(f"{shown(path)}: config.{section} is {_kind(value)}, not an object")
    return config


def metrics_records(path: str | Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one JSON object per line (blank lines skipped).

    Raises:
        Refused: naming the file and the line that is not a JSON object.
    """
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise Refused(f"{shown(path)} cannot be read as text ({getattr(err, 'strerror', None) or err})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise Refused(f"{shown(path)}, line {number}: not a JSON record ({getattr(err, 'msg', 'nested too deeply')})"
                          ) from None
        if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
            raise Refused(f"{shown(path)}, line {number}: not a metrics record (a JSON object with a \"stage\")")
        records.append(record)
    return records


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """Where a stage is: the next epoch and step, and counters worth keeping."""

    epoch: int = 0
    step: int = 0
    skipped: int = 0
    extra: dict = field(default_factory=dict)


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


# A stage's checkpoint is one unit: a directory ``ckpt-<step>-<epoch>-<id>/`` holding the weights
# and the training state, made complete under a temporary name, renamed into place, and then
# selected by one atomic update of the ``current`` symlink. ``model.safetensors`` and
# ``state.pt`` beside it are symlinks through ``current``, so every reader of the stage's
# files sees one consistent checkpoint, and a kill at any instant leaves the previous one
# selected (decision R1 in docs/decisions.md).

CURRENT = "current"
FAULT_POINTS = ("weights-written", "state-written", "unit-complete", "selected", "old-removed")
fault_hook: Callable[[str], None] | None = None  # tests: called at each named point of a write


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one stays selected."""


_reached: dict[str, int] = {}


def _fault(point: str) -> None:
    """A named point of a checkpoint write, where tests kill the process or raise.

    ``VISUALPATH_KILL_AT=point`` (or ``point@k``: the k-th time it is reached) ends the process
    there as SIGKILL would (nothing else runs); ``fault_hook`` is called with the point."""
    _reached[point] = _reached.get(point, 0) + 1
    wanted, _, times = os.environ.get("VISUALPATH_KILL_AT", "").partition("@")
    if wanted == point and _reached[point] == int(times or 1):
        os._exit(137)
    if fault_hook is not None:
        fault_hook(point)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _link(directory: Path, name: str) -> None:
    """``directory/name`` -> ``current/name`` (created once; dangling until a unit is selected)."""
    link = directory / name
    if link.is_symlink():
        return
    tmp = directory / f".{name}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(f"{CURRENT}/{name}", tmp)
    os.replace(tmp, link)


def _select(directory: Path, unit: str) -> None:
    tmp = directory / f".{CURRENT}.link"
    tmp.unlink(missing_ok=True)
    os.symlink(unit, tmp)
    os.replace(tmp, directory / CURRENT)  # the one atomic step that selects a checkpoint
    _fsync_dir(directory)


def _migrate_legacy(directory: Path) -> None:
    """A stage written before checkpoints were units (plain ``model.safetensors`` and
    ``state.pt``) becomes the unit ``ckpt-legacy`` first, so its files are never lost."""
    files = [n for n in ("model.safetensors", "state.pt") if (directory / n).is_file()
             and not (directory / n).is_symlink()]
    if not files or (directory / CURRENT).is_symlink():
        return
    if (directory / "ckpt-legacy").is_dir():  # a migration killed before it selected the unit
        _select(directory, "ckpt-legacy")
        return
    tmp = directory / ".ckpt-legacy.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for n in files:
        try:
            os.link(directory / n, tmp / n)
        except OSError:  # a filesystem without hard links
            shutil.copy2(directory / n, tmp / n)
    os.replace(tmp, directory / "ckpt-legacy")
    _select(directory, "ckpt-legacy")


def _units(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("ckpt-*") if p.is_dir())


def clear_stage(directory: Path) -> None:
    """Remove a stage's checkpoints (``resume=false``: the stage starts again)."""
    directory = Path(directory)
    for name in (CURRENT, "model.safetensors", "state.pt"):
        (directory / name).unlink(missing_ok=True)
    for unit in [*_units(directory), *directory.glob(".ckpt-*.tmp")]:
        shutil.rmtree(unit, ignore_errors=True)


def prune_stage(directory: Path) -> list[str]:
    """Remove a stage's checkpoint units other than the selected one, and interrupted
    writes' temporary folders (what a kill between selecting a unit and removing the old ones
    leaves); returns their names. A stage without a selected unit keeps everything."""
    directory = Path(directory)
    selected = selected_checkpoint(directory)
    if selected is None or selected == directory:
        return []
    stale = [u for u in _units(directory) if u.resolve() != selected] + list(directory.glob(".ckpt-*.tmp"))
    for unit in stale:
        shutil.rmtree(unit, ignore_errors=True)
    return [u.name for u in stale]


def has_checkpoint(directory: Path) -> bool:
    """Whether a stage directory holds a resumable checkpoint (weights and state)."""
    found = selected_checkpoint(directory)
    return found is not None and (found / "state.pt").is_file()


def selected_checkpoint(directory: Path) -> Path | None:
    """The folder holding the stage's selected ``model.safetensors`` (and ``state.pt``):
    the ``current`` unit, or a stage written before units."""
    directory = Path(directory)
    current = directory / CURRENT
    if current.is_symlink() and (current / "model.safetensors").is_file():
        return current.resolve()
    if (directory / "model.safetensors").is_file() and not (directory / "model.safetensors").is_symlink():
        return directory
    return None


def stage_progress(directory: Path) -> dict | None:
    """``{"epoch", "step", "total_steps", "finished"}`` of a stage's selected checkpoint, or
    None when it has none (or was written before progress was recorded)."""
    found = selected_checkpoint(Path(directory))
    if found is None or not (found / "progress.json").is_file():
        return None
    progress = read_json(found / "progress.json", "a checkpoint's progress (epoch, step, total_steps, finished)")
    progress.setdefault("total_steps", None)
    for key, kind in (("epoch", int), ("step", int), ("finished", bool)):
        if not isinstance(progress.get(key), kind) or (kind is int and isinstance(progress[key], bool)):
            raise Refused(f"{shown(found / 'progress.json')}: {key} is {_kind(progress.get(key))}, not "
                          f"{_kind(kind())}: a damaged checkpoint; restore it or train the stage again")
    return progress


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _python_state(random.getstate()),
    }


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))


def _needed_mib(weights: dict, optimizer) -> float:
    size = sum(t.numel() * t.element_size() for t in weights.values())
    return size * (3 if optimizer is not None else 1) / 2**20  # AdamW keeps two moments per weight


def save_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: TrainState, rng: list[dict] | None = None) -> Path:
    """Write one checkpoint unit (weights, optimizer, step, every rank's RNG) and select it.

    Args:
        rng: every rank's random state, in rank order (default: this process's alone).

    Raises:
        CheckpointWriteError: the write failed (e.g. no space left); nothing of it is left
            behind and the previous checkpoint stays selected.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _migrate_legacy(directory)
    for name in ("model.safetensors", "state.pt"):
        _link(directory, name)
    weights = {k: v.detach().contiguous().cpu() for k, v in _unwrap(model).state_dict().items()}
    unit = f"ckpt-{state.step:09d}-{state.epoch:05d}-{os.urandom(4).hex()}"  # unique: never the selected one
    tmp = directory / f".{unit}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(weights, str(tmp / "model.safetensors"))
        weights_sha = _sha256(tmp / "model.safetensors")
        _fault("weights-written")
        if optimizer is not None:
            rngs = rng if rng is not None else [_rng_state()]
            payload = {
                "optimizer": optimizer.state_dict(),
                "epoch": state.epoch,
                "step": state.step,
                "skipped": state.skipped,
                "extra": state.extra,
                "world": len(rngs),
                "rng": rngs[0],
                "rng_per_rank": rngs,
                "weights_sha256": weights_sha,
            }
            torch.save(payload, tmp / "state.pt")
            _fault("state-written")
        progress = {"epoch": state.epoch, "step": state.step, "total_steps": state.extra.get("total_steps"),
                    "finished": state.extra.get("total_steps") is not None
                    and state.step >= state.extra["total_steps"],
                    "weights_sha256": weights_sha}
        (tmp / "progress.json").write_text(json.dumps(progress))
        for f in tmp.iterdir():
            os.chmod(f, file_mode())  # safetensors writes 0600: readable by colleagues like any other file
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, directory / unit)
        _fsync_dir(directory / unit)
        _fsync_dir(directory)
        _fault("unit-complete")
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        need, free = _needed_mib(weights, optimizer), shutil.disk_usage(directory).free / 2**20
        out_of_space = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < need or \
            "write failed" in str(err) or "No space left" in str(err)
        previous = selected_checkpoint(directory)
        kept = f"the previous checkpoint ({previous.name}) stays selected" if previous else "no earlier checkpoint"
        if out_of_space:
            raise CheckpointWriteError(errno.ENOSPC, f"no space left on the device: the checkpoint of {directory} "
                                       f"needs about {need:.0f} MiB and {free:.0f} MiB are free; {kept}") from None
        raise CheckpointWriteError(getattr(err, "errno", None) or errno.EIO,
                                   f"cannot write the checkpoint of {directory} ({err}); {kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _select(directory, unit)
    _fault("selected")
    for old in _units(directory):  # earlier units and interrupted writes' leftovers
        if old.name != unit:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in directory.glob(".ckpt-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    _fault("old-removed")
    return directory / unit


def _python_state(state):
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


class DamagedWeights(Refused):
    """Weights that are not the file their checkpoint recorded (flipped bytes, a replaced or
    truncated file), or a file that is not safetensors."""


def _recorded_sha(unit: Path) -> str | None:
    """The SHA-256 a checkpoint unit recorded for its weights: ``progress.json``'s, else (units
    written before it held one) ``state.pt``'s; None for a folder that recorded none."""
    progress = unit / "progress.json"
    if progress.is_file():
        try:
            recorded = json.loads(progress.read_text()).get("weights_sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str):
            return recorded
    state = unit / "state.pt"
    if state.is_file():
        try:
            payload = torch.load(state, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 (any unreadable state is reported the same way)
            raise DamagedWeights(f"{state} cannot be read ({one_line(err)[:200]}): a damaged checkpoint; restore it "
                                 "or train the stage again (resume=false)") from None
        recorded = payload.get("weights_sha256") if isinstance(payload, dict) else None
        return recorded if isinstance(recorded, str) else None
    return None


UNVERIFIED_ENV = "VISUALPATH_UNVERIFIED_WEIGHTS"  # =1: load a checkpoint unit that recorded no hash


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (a file, or a stage folder's selected checkpoint),
    checked against the SHA-256 its checkpoint recorded, on the very bytes that are loaded.

    A checkpoint unit (``ckpt-*``) that recorded no hash (its ``progress.json`` and ``state.pt``
    gone) is refused unless ``VISUALPATH_UNVERIFIED_WEIGHTS=1``; a weights file outside any unit
    (one a user names, or a stage written before units) is loaded as it is. Every floating
    tensor must be finite.

    Raises:
        DamagedWeights: the file is not the one recorded, is not a safetensors file, recorded no
            hash, or holds NaN or infinite values (the message names the tensor).
        Refused: the folder holds no checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        found = selected_checkpoint(path)
        if found is None:
            raise Refused(f"{path} holds no checkpoint")
        path = found / "model.safetensors"
    real = path.resolve()
    recorded = _recorded_sha(real.parent) if real.name == "model.safetensors" else None
    if recorded is None and _UNIT.fullmatch(real.parent.name) and os.environ.get(UNVERIFIED_ENV) != "1":
        raise DamagedWeights(f"{path}: its checkpoint recorded no SHA-256 to check the weights against "
                             f"(progress.json and state.pt are missing from {real.parent.name}); restore them, or load "
                             f"the weights unchecked with {UNVERIFIED_ENV}=1")
    try:
        data = real.read_bytes()
    except OSError as err:
        raise DamagedWeights(f"{path} is not a readable safetensors file ({err.strerror or err})") from None
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise DamagedWeights(f"{path}: the weights are not the file their checkpoint recorded (SHA-256 differs): "
                             "damaged or replaced; restore the file or train the stage again")
    try:
        tensors = load_bytes(data)
    except Exception as err:  # noqa: BLE001 (safetensors raises its own error types)
        raise DamagedWeights(f"{path} is not a readable safetensors file ({one_line(err)[:200]})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DamagedWeights(f"{path}: tensor {shown(name)} holds NaN or infinite values; a diverged or damaged "
                                 "checkpoint: restore it or train the stage again (resume=false)")
    return tensors


def load_weights(model: nn.Module, path: Path, strict: bool = True):
    """Load ``model.safetensors`` (a file, or a stage folder's selected checkpoint) into
    ``model``, verified (:func:`read_weights`); returns missing/unexpected keys.

    Raises:
        DamagedWeights: also when the tensors do not fit the model (missing or unexpected
            names, other shapes), in one line naming the first few.
    """
    return load_state(_unwrap(model), read_weights(path), path, strict)


def load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: str | Path, strict: bool = True):
    """``model.load_state_dict(tensors)`` with a one-line refusal naming what does not fit."""
    own = model.state_dict()
    shapes = [f"{shown(k)} {tuple(v.shape)} where the model has {tuple(own[k].shape)}"
              for k, v in tensors.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in tensors] if strict else []
    unexpected = [k for k in tensors if k not in own] if strict else []
    if shapes or missing or unexpected:
        def few(items):
            return ", ".join(shown(i) for i in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

        parts = ([f"other shapes: {few(shapes)}"] if shapes else []) + \
                ([f"missing: {few(missing)}"] if missing else []) + \
                ([f"not in the model: {few(unexpected)}"] if unexpected else [])
        raise DamagedWeights(f"{shown(path)}: the weights do not fit the model built from the run's graph "
                             f"({'; '.join(parts)}): weights of another graph or size, or a damaged run")
    return model.load_state_dict(tensors, strict=strict)


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    rank: int = 0, world: int = 1) -> TrainState:
    """Restore weights, optimizer and this rank's RNG state from the selected checkpoint
    (``weights_only=True``); returns the state.

    Raises:
        DamagedWeights: the weights are not the ones the state was saved with, or the state
            cannot be read (a truncated or damaged ``state.pt``).
        Refused: the run was saved by another number of processes.
    """
    found = selected_checkpoint(Path(directory))
    if found is None:
        raise Refused(f"{directory} holds no checkpoint")
    try:
        payload = torch.load(found / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (a truncated zip, a pickle that is not weights-only, ...)
        raise DamagedWeights(f"{found / 'state.pt'} cannot be read ({one_line(err)[:200]}): a damaged checkpoint; "
                             "restore it or start the stage again (resume=false)") from None
    expected = payload.get("weights_sha256")
    if expected is not None and _sha256(found / "model.safetensors") != expected:
        raise DamagedWeights(f"{found}: model.safetensors is not the file its state.pt was saved with (a damaged "
                             "checkpoint); restore it or start the stage again (resume=false)")
    saved_world = payload.get("world", 1)
    if saved_world != world:
        raise Refused(f"{directory} was trained by {saved_world} process(es) and this run has {world}: resume "
                         f"it with {saved_world} (torchrun --nproc_per_node={saved_world}), since each process's "
                         "random state and share of the data are part of the checkpoint")
    load_weights(model, found / "model.safetensors")
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    rngs = payload.get("rng_per_rank") or [payload["rng"]]
    _set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return TrainState(payload["epoch"], payload["step"], payload["skipped"], payload["extra"])


# --------------------------------------------------------------------------- logging


def git_revision(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _after(line: str, stage: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return (isinstance(record, dict) and record.get("stage") == stage and isinstance(record.get("step", 0), int)
            and record.get("step", 0) > step)


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
            check_links(self.root)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    raise Refused(f"tensorboard=true needs the tensorboard package (pip install tensorboard): "
                                     f"{err}") from None
                self._writer = SummaryWriter(str(self.root / "tensorboard"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        if self.runtime.main:
            payload = {"config": config, "git_revision": git_revision(), "world_size": self.runtime.world,
                       "device": str(self.runtime.device), "torch": torch.__version__}
            atomic(self.root / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))

    def metrics(self, stage: str, **values: Any) -> None:
        if self.runtime.main:
            record = {"stage": stage, "time": time.time(), **values}
            append_line(self.root / "metrics.jsonl", json.dumps(record))
            if self._writer is not None:
                step = int(values.get("step", 0))
                for name, value in values.items():
                    if name not in ("step", "epoch") and isinstance(value, (int, float)):
                        self._writer.add_scalar(f"{stage}/{name}", value, step)
                self._writer.flush()

    def trim_metrics(self, stage: str, step: int) -> None:
        """Drop ``stage``'s records past ``step`` (logged after the checkpoint a run resumes
        from, and logged again as it continues): one record per step."""
        path = self.root / "metrics.jsonl"
        if not self.runtime.main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if not _after(line, stage, step)]
        if len(kept) != len(lines):
            atomic(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    def broken_files(self, stage: str, files: Mapping[str, str]) -> None:
        """``broken_files.json``: each stage's unreadable files and why, each file once."""
        if not self.runtime.main:
            return
        path = self.root / "broken_files.json"
        listed = json.loads(path.read_text()) if path.is_file() else {}
        if not files and stage not in listed:
            return
        listed[stage] = {"count": len(files), "files": dict(sorted(files.items()))}
        atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(listed, indent=2)))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage


# --------------------------------------------------------------------------- nothing written through a link


class LinkedRun(Refused):
    """A run directory holding a symbolic link it did not make: a write through it would
    land outside the run (a shared run is an archive, and archives carry links)."""


_UNIT = re.compile(r"ckpt-[A-Za-z0-9_.-]+")


def _own_link(rel: tuple[str, ...], target: str) -> bool:
    """The links a run makes itself, all inside one stage folder: ``STAGE/current`` -> a
    checkpoint unit beside it, ``STAGE/NAME`` -> ``current/NAME`` (and their temporaries,
    ``.current.link``, ``.NAME.link``, while a checkpoint is selected)."""
    if len(rel) != 2:
        return False
    name = rel[1]
    if name.startswith(".") and name.endswith(".link"):
        name = name[1:-len(".link")]
    if name == CURRENT:
        return _UNIT.fullmatch(target) is not None
    return "/" not in name and name not in ("", ".", "..") and target == f"{CURRENT}/{name}"


def check_links(root: str | Path) -> Path:
    """Refuse a run directory that holds a symbolic link other than the run's own
    (:func:`_own_link`), naming the first; returns ``root`` resolved (a run directory reached
    through a link of the reader's own, such as ``runs -> /scratch/runs``, is followed once,
    here). Every consumer that writes into a run checks this first, so no write follows a link
    planted in a shared run out of it."""
    root = Path(root)
    if not root.exists():
        return root.absolute()
    root = root.resolve()
    for folder, dirs, files in os.walk(root):  # links to folders are listed, never entered
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            if not _own_link(path.relative_to(root).parts, target):
                raise LinkedRun(f"{shown(path)} is a symbolic link (to {shown(target)}): a run's files and folders "
                                "are never links but for a stage's checkpoint selection, and a write through it would "
                                "leave the run; remove the link, or open a copy of the run made without links")
    return root


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``, never through a symbolic link (the file is
    created if missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(line + "\n")


# --------------------------------------------------------------------------- one writer per run directory


class RunDirBusy(Refused):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory for the life of a run (``run_dir/.lock``).

    The kernel drops the lock when its holder exits in any way, so a lock file left by a dead
    process never blocks; the file names the holder's PID for the message another run gets.
    Use as a context manager; without ``fcntl`` (not POSIX) it does nothing.
    """

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_links(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:
            raise RunDirBusy(f"run_dir={str(self.path.parent)!r}: cannot open its lock file {self.path} "
                             f"({err.strerror}); choose a run_dir you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)  # a filesystem without flock (some NFS or Lustre mounts): run unlocked, and say so
                log.warning("run_dir %s cannot be locked on this filesystem (%s): make sure one run at a time "
                            "writes it", self.path.parent, err.strerror)
                return self
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"PID {holder[0]}" if holder else "another process"
            raise RunDirBusy(f"run_dir={str(self.path.parent)!r} is in use by {who}; wait for that run to end or "
                             "choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


# --------------------------------------------------------------------------- the stored graph


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


def read_pathway(run_dir: str | Path, stage: str | None = None,
                 legacy: Callable[[dict], Pathway] | None = None, trust_code: bool = False) -> Pathway:
    """The graph stored in a run directory (for ``stage``'s checkpoint, see :func:`stage_pathway`).

    A stage's own graph (``pathway.<stage>.json``) comes first. Its areas are rebuilt from
    the code the run carries (``code/``), never from the paths it was trained from.

    Args:
        legacy: for a run written before graphs were stored, a function from its
            ``config.json`` to its graph (``areas.bimm.run_pathway`` passes the paper's).
        trust_code: run the code the graph needs even if it is neither installed nor
            trusted (:mod:`visualpath.trust`); read ``code/`` first.

    Raises:
        Refused: naming the directory when it holds neither.
        LinkedRun: the directory holds a link it did not make (:func:`check_links`).
        visualpath.trust.CodeNotTrusted: the graph needs code the reader has not trusted.
    """

    if Path(run_dir).is_dir():
        check_links(run_dir)  # nothing read or written through a link planted in the run
    with trusting(trust_code):
        return _read_pathway(Path(run_dir), stage, legacy)


def _read_pathway(run_dir: Path, stage: str | None, legacy) -> Pathway:
    own = run_dir / _stage_file(stage) if stage else None
    if own is not None and own.is_file():
        return read_spec(own)
    stored = run_dir / PATHWAY_FILE
    if stored.is_file():
        return stage_pathway(read_spec(stored), stage)
    config = run_dir / "config.json"
    if legacy is not None and config.is_file():
        return stage_pathway(legacy({"config": run_config(run_dir)}), stage)
    if config.is_file():
        raise Refused(f"{run_dir} was written before runs stored their graph ({PATHWAY_FILE}): load it with "
                      "analysis.features.load_run, which rebuilds the paper's graph of its config.json")
    raise Refused(f"{run_dir} is not a run directory: it has no {PATHWAY_FILE}"
                  + (" or config.json" if legacy is not None else ""))


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
               legacy: Callable[[dict], Pathway] | None = None, trust_code: bool = False) -> PathwayModel:
    """The pathway of a run directory with its trained weights (verified against the hash
    their checkpoint recorded), in eval mode.

    Args:
        stage: ``"joint"`` or ``"ventral"``; default: the joint checkpoint if there is one.
        legacy, trust_code: see :func:`read_pathway`.
    """
    run_dir = Path(run_dir)
    read_pathway(run_dir, legacy=legacy, trust_code=trust_code)  # says so when it is no run directory at all
    ckpt = run_dir / pretrained_stage(run_dir, stage) / "model.safetensors"
    model = read_pathway(run_dir, stage=ckpt.parent.name, legacy=legacy, trust_code=trust_code).build()
    load_state(model, read_weights(ckpt), ckpt)
    return model.to(device).eval()


def graph_differences(old: Pathway, new: Pathway, limit: int = 5) -> list[str]:
    """``key: old -> new`` lines between two graphs (keys as graph overrides spell them)."""

    if old == new:
        return []
    a, b = override_keys(old), override_keys(new)
    out = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out[:limit] or ["the streams or their areas differ"]
