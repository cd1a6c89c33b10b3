"""The training loop a recipe calls top to bottom (BIMM appendix A, Tables 8-9).

- :func:`fit`: the epoch loop shared by pretraining and finetuning -- gradient accumulation,
  optional clipping, bf16 autocast on CUDA (float32 on CPU), rich progress with the losses,
  lr and clips/s, metrics as JSON lines, a checkpoint every epoch (and every N steps), and an
  exact resume (model, optimizer, step, RNG states; the data order is a function of seed and
  epoch).
- :func:`evaluate`: multi-view testing (clips x crops), predictions gathered across ranks.

Its parts have their own homes, re-exported here so a recipe imports one module:
:mod:`visualpath.runtime` (device, seeds, DDP), :mod:`visualpath.optim` (AdamW, schedules),
:mod:`visualpath.loader` (sampler, loader) and :mod:`visualpath.rundir` (the run directory:
config, graph, metrics, checkpoints).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.markup import escape
from rich.table import Column
from rich.text import Text
from torch.utils.data import DataLoader

from visualpath.loader import EpochSampler, flatten_views, make_loader  # noqa: F401 (re-exported)
from visualpath.optim import OptimSpec, build_optimizer, lr_at, param_groups  # noqa: F401 (re-exported)
from visualpath.rundir import (  # noqa: F401 (re-exported)
    CheckpointWriteError,
    RunLog,
    TrainState,
    has_checkpoint,
    git_revision,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from visualpath.rundir.checkpoint import _rng_state
from visualpath.preemption import EXIT_PREEMPTED, Preempted, PreemptionWatch, stop_if_requested  # noqa: F401 (re-exported)
from visualpath.runtime import Runtime, seed_everything, setup, teardown  # noqa: F401 (re-exported)
from visualpath import terminal
from visualpath.errors import shown

__all__ = [
    "compiled",
    "OptimSpec",
    "Runtime",
    "TrainState",
    "setup",
    "teardown",
    "param_groups",
    "build_optimizer",
    "lr_at",
    "EpochSampler",
    "make_loader",
    "fit",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "load_weights",
    "RunLog",
    "NonFiniteLoss",
    "Preempted",
    "EXIT_PREEMPTED",
]

log = logging.getLogger(__name__)


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and the culprit."""


# --------------------------------------------------------------------------- the loop


StepFn = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]


def _count(batch: Mapping[str, Any]) -> int:
    """Items in a batch: clips or images, stacked or (detection) a list of images."""
    x = batch["video"] if "video" in batch else batch["image"]
    return x.shape[0] if isinstance(x, Tensor) else len(x)


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _all_reduce_mean(values: dict[str, float], runtime: Runtime) -> dict[str, float]:
    if not runtime.distributed or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=runtime.device)
    dist.all_reduce(t)
    return dict(zip(values, (t / runtime.world).tolist()))


def compiled(module: nn.Module) -> nn.Module:
    """``torch.compile`` as a training stage uses it (``compile=true``): shapes traced as
    concrete (``dynamic=False``). A stage's batches keep their shape, so a shape that does
    change costs one recompilation; symbolic shapes would fail, because the random draws of
    masks and frames (``torch.rand``, ``torch.randint`` without a generator) refuse symbolic
    sizes under torch.compile's fake tensors."""
    return torch.compile(module, dynamic=False)


def fit(
    stage: str,
    model: nn.Module,
    step_fn: StepFn,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    spec: OptimSpec,
    runtime: Runtime,
    run: RunLog,
    *,
    resume: bool = False,
    log_every: int = 10,
    checkpoint_every: int | None = None,
    checkpoint_minutes: float | None = None,
    stop_after: int | None = None,
    console=None,
) -> TrainState:
    """Train ``model`` for ``spec.epochs`` epochs with ``step_fn`` computing the loss.

    Args:
        stage: name of the stage (checkpoints in ``run.root / stage``, metrics tagged).
        loader: a loader over an :class:`EpochSampler` (see :func:`make_loader`); an item may
            hold several views, each counted as a clip.
        step_fn: ``(model, batch) -> (loss, {name: scalar tensor})`` on the device.
        resume: continue from ``run.root / stage`` if a checkpoint is there.
        log_every: optimiser steps between metric records (the only host syncs).
        checkpoint_every: also checkpoint every N optimiser steps (else each epoch end).
        checkpoint_minutes: also checkpoint at the first step after this many minutes since
            the last checkpoint (decision R8): on one process any step, across processes the
            first metric record (every ``log_every`` steps), where rank 0's clock decides for
            every rank. Resumed bit-identically like an epoch end's.
        stop_after: stop after this many optimiser steps in total (tests, smoke runs).

    Returns:
        The final :class:`TrainState`.

    Raises:
        Preempted: SIGTERM or SIGUSR1 arrived (a scheduler stopping or requeuing the job):
            every rank stopped at the same step boundary and the checkpoint there is written
            (:mod:`visualpath.preemption`, decision R9).
    """
    directory = run.stage_dir(stage)
    state = TrainState()
    console = console or terminal.console(stderr=True)
    if resume and has_checkpoint(directory):
        state = load_checkpoint(directory, model, optimizer, rank=runtime.rank, world=runtime.world)
    # Unreadable files, by path, counted once across epochs, workers, resumes and ranks.
    broken: dict[str, str] = dict(state.extra.get("broken", {}))
    broken.update({path: MISSING for path in getattr(loader.dataset, "missing_files", ()) if path not in broken})
    short: dict[str, str] = dict(state.extra.get("short", {}))  # used, their last frame repeated (decision R13)
    if hasattr(loader.dataset, "warn"):
        loader.dataset.warn = False  # the loop warns, once per file
    per_rank = loader.sampler.epoch_length()
    steps_per_epoch = per_rank // (loader.batch_size * spec.accum_steps)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{stage}: {per_rank} items per rank give no full step of {loader.batch_size} x "
            f"{spec.accum_steps} accumulation; lower the batch size"
        )
    total = spec.total_steps or steps_per_epoch * spec.epochs
    epochs = -(-total // steps_per_epoch)
    state.extra["total_steps"] = total  # recorded with each checkpoint: a later stage can tell it finished
    if resume and state.step and runtime.main:  # counted as the step lines count them
        console.print(f"[bold]{stage}[/]: resumed at step {state.step}/{total} (epoch "
                      f"{min(state.epoch + 1, epochs)}/{epochs})")
    threads = torch.get_num_threads()
    before = state.extra.get("threads")
    if resume and state.step and before is not None and before != threads and runtime.device.type == "cpu" \
            and runtime.main:
        console.print(f"[yellow]warning:[/] {stage} was trained with {before} CPU threads and resumes with {threads}: "
                      "sums are split differently across threads, so its weights will differ from an uninterrupted "
                      f"run's in the last bits; resume with OMP_NUM_THREADS={before} to continue it exactly")
    state.extra["threads"] = threads  # recorded with each checkpoint
    warmup = spec.warmup_steps if spec.warmup_steps is not None else int(round(spec.warmup_epochs * steps_per_epoch))
    milestones = tuple(int(round(m * steps_per_epoch)) for m in spec.milestones)
    peak = spec.peak_lr(runtime.world)
    autocast = runtime.autocast_dtype
    if state.step >= total:
        if runtime.main:
            console.print(f"[bold]{stage}[/]: already complete (step {state.step} of {total})")
        return state
    run.trim_metrics(stage, state.step)  # records past the checkpoint (or of a restarted stage) are logged again
    # In a terminal: the bar, count and ETA on one line (they never give way to the losses, which
    # get a line of their own). In a log file (a batch job, nohup, tee): a plain line per record.
    columns = (TextColumn(f"[bold]{stage}", table_column=Column(no_wrap=True)),
               BarColumn(bar_width=None, table_column=Column(ratio=1)),
               MofNCompleteColumn(table_column=Column(no_wrap=True)),
               TimeRemainingColumn(table_column=Column(no_wrap=True)),
               TextColumn("{task.fields[rate]}", table_column=Column(no_wrap=True)))
    live = console.is_terminal and runtime.main
    model.train()
    with PreemptionWatch(runtime) as watch, \
            _StageProgress(*columns, console=console, disable=not live, transient=False) as progress:
        task = progress.add_task(stage, total=total, completed=state.step, rate="")
        start, start_step = time.perf_counter(), state.step
        clock = _CheckpointClock(checkpoint_minutes, runtime)
        scale_checked = False
        while state.epoch < epochs and state.step < total:
            done_in_epoch = state.step - state.epoch * steps_per_epoch
            loader.sampler.set_epoch(state.epoch, skip=done_in_epoch * loader.batch_size * spec.accum_steps)
            if hasattr(loader.dataset, "set_epoch"):
                loader.dataset.set_epoch(state.epoch)
            window_start, clips, running = time.perf_counter(), 0, {}
            micro = 0
            for batch in loader:
                if state.step >= min(total, (state.epoch + 1) * steps_per_epoch):
                    break
                if any(batch.get("broken") or ()):  # read on the host: no device-to-host sync
                    _note_broken(stage, batch["broken"], loader.dataset, broken, progress.console, runtime)
                    state.skipped = len(broken)
                if any(batch.get("short") or ()):
                    _note_short(stage, batch["short"], loader.dataset, short, progress.console, runtime)
                batch = flatten_views(_to_device(batch, runtime.device))
                with torch.autocast(runtime.device.type, dtype=autocast, enabled=autocast is not None):
                    loss, parts = step_fn(model, batch)
                (loss / spec.accum_steps).backward()
                clips += _count(batch)
                running = {k: running.get(k, 0) + v.detach().float() for k, v in {"loss": loss, **parts}.items()}
                micro += 1
                if micro % spec.accum_steps:
                    continue
                lr = lr_at(state.step, total, warmup, peak, spec.min_lr, spec.schedule, milestones)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                if spec.clip_grad is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), spec.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if state.step % log_every == 0 or state.step == total:
                    values = {k: float(v) / micro for k, v in running.items()}  # host sync here only
                    values = _all_reduce_mean(values, runtime)  # a NaN on one rank reaches every rank
                    _check_finite(values, stage, state.step)
                    if not scale_checked:  # once per stage, at its first record
                        scale_checked = True
                        for note in loss_scale_notes(values):
                            if runtime.main:
                                progress.console.print(f"[yellow]warning:[/] {stage}: {note}", markup=True,
                                                       highlight=False)
                    rate = clips * runtime.world / (time.perf_counter() - window_start)
                    run.metrics(stage, epoch=state.epoch, step=state.step, lr=lr, clips_per_s=rate, **values)
                    shown = " ".join(f"{k}={v:.3f}" for k, v in values.items())
                    progress.losses = f"  {shown} lr={lr:.2e}"
                    progress.update(task, rate=f"{rate:.1f} clips/s")
                    if not live and runtime.main:
                        done = state.step - start_step
                        eta = (time.perf_counter() - start) / done * (total - state.step) if done else 0.0
                        console.print(f"{stage} step {state.step}/{total} epoch {state.epoch + 1}/{epochs} "
                                      f"{shown} lr={lr:.2e} {rate:.1f} clips/s eta {_clock(eta)}",
                                      markup=False, highlight=False, soft_wrap=True)
                    window_start, clips, running, micro = time.perf_counter(), 0, {}, 0
                progress.update(task, completed=state.step)
                logged = state.step % log_every == 0 or state.step == total
                if watch.requested(logged):  # a scheduler's signal: checkpoint here and stop (decision R9)
                    _record_files(stage, broken, short, state, run, runtime)
                    _checkpoint(directory, model, optimizer, state, runtime)
                    raise watch.stopped(stage, state.step)
                if (checkpoint_every and state.step % checkpoint_every == 0) or clock.due(logged):
                    _record_files(stage, broken, short, state, run, runtime)
                    _checkpoint(directory, model, optimizer, state, runtime)
                    clock.reset()
                if stop_after is not None and state.step >= stop_after:
                    return state
            state.epoch += 1
            _record_files(stage, broken, short, state, run, runtime)
            _checkpoint(directory, model, optimizer, state, runtime)
            clock.reset()
    _record_files(stage, broken, short, state, run, runtime)
    return state


_now = time.monotonic  # the checkpoint clock (a test advances its own)


class _CheckpointClock:
    """When a time-based checkpoint is due: after ``minutes`` on rank 0's clock. Every rank
    must take the same decision at the same step (the checkpoint gathers from all of them),
    so across processes rank 0's answer is broadcast, at metric records only (no extra sync
    on other steps)."""

    def __init__(self, minutes: float | None, runtime: Runtime) -> None:
        self.seconds = minutes * 60 if minutes else None
        self.runtime = runtime
        self.reset()

    def reset(self) -> None:
        self.last = _now()

    def due(self, logged: bool) -> bool:
        if self.seconds is None:
            return False
        if not self.runtime.distributed:
            return _now() - self.last >= self.seconds
        if not logged:
            return False
        flag = torch.tensor([float(_now() - self.last >= self.seconds)], device=self.runtime.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())


class _StageProgress(Progress):
    """A progress bar with the latest losses on a line of their own below it."""

    losses = ""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        if self.losses:
            yield Text(self.losses, overflow="ellipsis", no_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def loss_scale_notes(values: dict[str, float], factor: float = 100.0) -> list[str]:
    """A line for each area whose loss is more than ``factor`` times below or above the
    median of the others' (``values`` as a stage logs them: ``"STREAM.AREA"`` keys): its
    target is on another scale, so it weighs almost nothing (or almost everything) in the sum
    every area shares."""
    areas = {k: v for k, v in values.items() if "." in k and math.isfinite(v)}
    notes = []
    for key, value in areas.items():
        others = sorted(v for k, v in areas.items() if k != key)
        if not others or value <= 0:
            continue
        middle = others[len(others) // 2] if len(others) % 2 else (others[len(others) // 2 - 1] +
                                                                 others[len(others) // 2]) / 2
        if middle <= 0 or factor * value >= middle >= value / factor:
            continue
        low = value < middle
        area = key.split(".", 1)[1]
        notes.append(f"{key}'s loss ({value:.3g}) is {max(value, middle) / min(value, middle):.0f}x "
                     f"{'below' if low else 'above'} the other areas' median ({middle:.3g}): its target is on "
                     f"another scale, so it weighs almost {'nothing' if low else 'everything'} in the total and "
                     f"{'it' if low else 'the other areas'} will learn little; leave its scale to the default "
                     f"(drop its target_scale: the loss then sees it standardised, decision D22), standardise it "
                     f"yourself (areas.normalize_tokens), or set pathway.{area}.weight")
    return notes


MISSING = "listed but missing"  # the reason broken_files.json gives a listed file that does not exist


def _note_broken(stage: str, entries, dataset, broken: dict[str, str], console, runtime: Runtime) -> None:
    """Add the files a batch's items had to skip (their ``broken`` field) and warn once each."""
    for entry in entries:
        if not entry:
            continue
        for index, reason in json.loads(entry):
            records = getattr(dataset, "records", None)
            path = str(records[index].path) if records is not None else f"item {index}"
            if path not in broken:
                broken[path] = reason
                if runtime.main:
                    console.print(f"[yellow]{stage}: skipping unreadable file[/] {escape(shown(reason))}")


def _note_short(stage: str, entries, dataset, short: dict[str, str], console, runtime: Runtime) -> None:
    """Add the videos a batch's items found shorter than a clip (their ``short`` field,
    ``[index, frames]``) and warn once each: they are used, their last frame repeated."""
    clip = getattr(dataset, "frames", None)
    for entry in entries:
        if not entry:
            continue
        index, length = json.loads(entry)
        records = getattr(dataset, "records", None)
        path = str(records[index].path) if records is not None else f"item {index}"
        if path not in short:
            short[path] = f"{length} frame{'s' if length != 1 else ''}, a clip takes {clip}: its last frame repeats" \
                + (" (a still clip: no motion)" if length == 1 else "")
            if runtime.main:
                console.print(f"[yellow]{stage}: a short video[/] {escape(shown(path))}: {short[path]}",
                              markup=True, highlight=False)


def _gather_files(found: dict[str, str], runtime: Runtime) -> None:
    """``found`` (path -> why) with every rank's entries added."""
    if runtime.distributed:
        gathered: list = [None] * runtime.world
        dist.all_gather_object(gathered, found)
        for other in gathered:
            found.update({k: v for k, v in other.items() if k not in found})


def _record_files(stage: str, broken: dict[str, str], short: dict[str, str], state: TrainState, run: RunLog,
                  runtime: Runtime) -> None:
    """Merge every rank's unreadable and short files, keep them with the checkpoint and list
    them in ``run_dir/broken_files.json``."""
    _gather_files(broken, runtime)
    _gather_files(short, runtime)
    state.extra["broken"] = dict(sorted(broken.items()))
    state.extra["short"] = dict(sorted(short.items()))
    state.skipped = len(broken)
    run.broken_files(stage, broken, short)


def _check_finite(values: dict[str, float], stage: str, step: int) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        culprits = [k for k in bad if k != "loss"] or bad
        raise NonFiniteLoss(f"{stage}: non-finite loss at step {step} from {', '.join(culprits)}")


def _checkpoint(directory: Path, model, optimizer, state: TrainState, runtime: Runtime) -> None:
    """Rank 0 writes the unit, with every rank's random state (gathered here)."""
    rngs = [_rng_state()]
    if runtime.distributed:
        gathered: list = [None] * runtime.world
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
    failure = None
    if runtime.main:
        try:
            save_checkpoint(directory, model, optimizer, state, rng=rngs)
        except CheckpointWriteError as err:
            failure = err
        except Exception as err:  # every rank must learn that rank 0 failed, or the others wait forever
            failure = CheckpointWriteError(errno.EIO, f"cannot write the checkpoint of {directory}: "
                                                      f"{type(err).__name__}: {err}")
    if runtime.distributed:
        flags = [failure is not None]
        dist.broadcast_object_list(flags, src=0)  # every rank stops when rank 0 could not write
        if flags[0] and failure is None:
            failure = CheckpointWriteError(0, "rank 0 could not write the checkpoint")
        dist.barrier()
    if failure is not None:
        raise failure


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, runtime: Runtime, console=None, stage: str = "test") -> dict:
    """Top-1/top-5 of softmax scores averaged over each item's views (clips x crops).

    Returns ``{"top1", "top5", "count", "predictions": (N, classes) tensor, "labels",
    "skipped"}`` over the whole dataset, gathered across ranks (padding duplicates removed by
    index); ``skipped``: the unreadable files, by path, with why (each warned once), which
    ``count`` leaves out.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    model.eval()
    autocast = runtime.autocast_dtype
    scores, labels, indices = [], [], []
    broken: dict[str, str] = {}
    short: dict[str, str] = {}
    console = console or terminal.console(stderr=True)
    with Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), console=console,
                  disable=not (runtime.main and console.is_terminal)) as progress:
        task = progress.add_task(stage, total=len(loader))
        for batch in loader:
            stop_if_requested(runtime, f"during the {stage}")  # nothing to keep: the same command tests again
            if any(batch.get("broken") or ()):  # an unreadable item, replaced by a readable one: counted, not scored
                _note_broken(stage, batch["broken"], loader.dataset, broken, progress.console, runtime)
            if any(batch.get("short") or ()):
                _note_short(stage, batch["short"], loader.dataset, short, progress.console, runtime)
            batch = _to_device(batch, runtime.device)
            x = batch["video"] if "video" in batch else batch["image"]
            if x.ndim == (5 if "video" in batch else 4):  # one view per item
                x = x[:, None]
            B, V = x.shape[:2]
            with torch.autocast(runtime.device.type, dtype=autocast, enabled=autocast is not None):
                logits = model(x.flatten(0, 1))
            scores.append(logits.float().softmax(-1).view(B, V, -1).mean(1))
            labels.append(batch["label"])
            indices.append(batch["index"])
            progress.advance(task)
    scores, labels, indices = torch.cat(scores), torch.cat(labels), torch.cat(indices)
    if runtime.distributed:
        scores, labels, indices = (_gather(t, runtime) for t in (scores, labels, indices))
    _gather_files(broken, runtime)
    _gather_files(short, runtime)
    order = torch.argsort(indices, stable=True)
    scores, labels, indices = scores[order], labels[order], indices[order]
    keep = torch.ones_like(indices, dtype=torch.bool)
    keep[1:] = indices[1:] != indices[:-1]
    scores, labels = scores[keep].cpu(), labels[keep].cpu()
    top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
    model.train()
    return {
        "top1": float((top5[:, 0] == labels).float().mean()),
        "top5": float((top5 == labels[:, None]).any(1).float().mean()),
        "count": int(labels.numel()),
        "predictions": scores,
        "labels": labels,
        "skipped": dict(sorted(broken.items())),
        "short": dict(sorted(short.items())),
    }


def _gather(t: Tensor, runtime: Runtime) -> Tensor:
    out = [torch.empty_like(t) for _ in range(runtime.world)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)
