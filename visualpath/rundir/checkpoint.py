"""A stage's checkpoint as one unit, written so that a kill at any instant leaves a complete
one selected, and read back verified against the hash it recorded (decisions R1, R6).

A unit is a directory ``ckpt-<step>-<epoch>-<id>/`` holding the weights, the training state
and ``progress.json`` (with the weights' SHA-256), made complete under a temporary name,
renamed into place, and then selected by one atomic update of the ``current`` symlink.
``model.safetensors`` and ``state.pt`` beside it are symlinks through ``current``, so every
reader of the stage's files sees one consistent checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes, save_file
from torch import nn

from visualpath.atomic import file_mode, sha256
from visualpath.errors import Refused, no_space, one_line, shown
from visualpath.rundir.files import CURRENT, _UNIT, _kind, read_json

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "has_checkpoint", "clear_stage", "prune_stage",
           "stage_progress", "selected_checkpoint", "CheckpointWriteError", "FAULT_POINTS", "load_weights",
           "load_state", "read_weights", "DamagedWeights", "UNVERIFIED_ENV"]


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

FAULT_POINTS = ("weights-written", "state-written", "unit-complete", "selected", "old-removed")
# Called with each named point of a checkpoint write, in order, when set: where the fault tests
# (tests/visualpath/test_faults.py, tests/killpoint.py) raise or end the process.
fault_hook: Callable[[str], None] | None = None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one stays selected."""


def _fault(point: str) -> None:
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
    if selected is None:
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
    """The selected checkpoint unit of a stage (the folder holding its ``model.safetensors``,
    ``state.pt`` and ``progress.json``), or None when it has none.

    Raises:
        Refused: the stage holds plain weights of a version before checkpoint units.
    """
    directory = Path(directory)
    current = directory / CURRENT
    if current.is_symlink() and (current / "model.safetensors").is_file():
        return current.resolve()
    plain = directory / "model.safetensors"
    if plain.is_file() and not plain.is_symlink():
        raise Refused(f"{directory} holds weights of a version before checkpoint units, which this version no longer "
                      "reads: train the stage again (resume=false)")
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
    for name in ("model.safetensors", "state.pt"):
        _link(directory, name)
    weights = {k: v.detach().contiguous().cpu() for k, v in _unwrap(model).state_dict().items()}
    unit = f"ckpt-{state.step:09d}-{state.epoch:05d}-{os.urandom(4).hex()}"  # unique: never the selected one
    tmp = directory / f".{unit}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(weights, str(tmp / "model.safetensors"))
        weights_sha = sha256((tmp / "model.safetensors").read_bytes())
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
                "rng_per_rank": rngs,
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
    except (OSError, RuntimeError, SafetensorError) as err:  # safetensors' own error for a failed write
        shutil.rmtree(tmp, ignore_errors=True)
        need, free = _needed_mib(weights, optimizer), shutil.disk_usage(directory).free / 2**20
        out_of_space = no_space(err) is not None or free < need or "write failed" in str(err)
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
    """The SHA-256 a checkpoint unit recorded for its weights (``progress.json``), or None."""
    try:
        recorded = json.loads((unit / "progress.json").read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


UNVERIFIED_ENV = "VISUALPATH_UNVERIFIED_WEIGHTS"  # =1: load a checkpoint unit that recorded no hash


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` (a file, or a stage folder's selected checkpoint),
    checked against the SHA-256 its checkpoint recorded, on the very bytes that are loaded.

    A checkpoint unit (``ckpt-*``) that recorded no hash (its ``progress.json`` gone) is
    refused unless ``VISUALPATH_UNVERIFIED_WEIGHTS=1``; a weights file outside any unit (one a
    user names) is loaded as it is. Every floating
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
                             f"(progress.json is missing from {real.parent.name}); restore them, or load "
                             f"the weights unchecked with {UNVERIFIED_ENV}=1")
    try:
        data = real.read_bytes()
    except OSError as err:
        raise DamagedWeights(f"{path} is not a readable safetensors file ({err.strerror or err})") from None
    if recorded is not None and sha256(data) != recorded:
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
        DamagedWeights: the weights are not the file the checkpoint recorded, or the state
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
    keys = ("optimizer", "epoch", "step", "skipped", "extra", "world", "rng_per_rank")
    lacking = [k for k in keys if k not in payload] if isinstance(payload, dict) else list(keys)
    if lacking:
        raise DamagedWeights(f"{found / 'state.pt'} lacks {', '.join(lacking)}: not a checkpoint of this version; "
                             "start the stage again (resume=false)")
    saved_world = payload["world"]
    if saved_world != world:
        raise Refused(f"{directory} was trained by {saved_world} process(es) and this run has {world}: resume "
                         f"it with {saved_world} (torchrun --nproc_per_node={saved_world}), since each process's "
                         "random state and share of the data are part of the checkpoint")
    load_weights(model, found / "model.safetensors")
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    _set_rng_state(payload["rng_per_rank"][rank])
    return TrainState(payload["epoch"], payload["step"], payload["skipped"], payload["extra"])
