"""Training engine: plain functions a recipe calls top to bottom (BIMM appendix A, Tables 8-9).

- :func:`setup` / :func:`teardown`: device, seeds, ``torchrun`` DDP (NCCL on CUDA, gloo on
  CPU) and a clean shutdown.
- :func:`param_groups`, :func:`build_optimizer`, :func:`lr_at`: AdamW with no weight decay on
  norms, biases and tokens, optional layer-wise lr decay, ``lr = base_lr * total_batch / 256``
  and a per-step cosine schedule with linear warm-up.
- :func:`fit`: the epoch loop shared by pretraining and finetuning -- gradient accumulation,
  optional clipping, bf16 autocast on CUDA (float32 on CPU), rich progress with the losses,
  lr and clips/s, metrics as JSON lines, a checkpoint every epoch (and every N steps), and an
  exact resume (model, optimizer, step, RNG states; the data order is a function of seed and
  epoch).
- :func:`evaluate`: multi-view testing (clips x crops), predictions gathered across ranks.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from visualpath._validate import non_negative_float, positive, positive_float
from visualpath.rundir import (  # noqa: F401  (re-exported: the run directory's home is visualpath.rundir)
    RunLog,
    TrainState,
    _atomic,
    _unwrap,
    git_revision,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)

__all__ = [
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
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """Where and how this process trains."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        """Wait for every rank (a no-op without DDP)."""
        if self.distributed:
            dist.barrier()

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.device.type == "cuda" else None


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def setup(device: str = "auto", seed: int = 0) -> Runtime:
    """Start this process: DDP from ``torchrun``'s environment if present, device, seeds, TF32."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    seed_everything(seed + rank)
    return Runtime(device=dev, rank=rank, world=world, local_rank=local_rank)


def teardown(runtime: Runtime, *objects: Any) -> None:
    """Shut DDP down cleanly: drop the caller's references, collect, barrier, destroy.

    Plain ``destroy_process_group()`` after gloo training aborts the process at exit in some
    runs ("terminate called without an active exception"); releasing the model and optimizer
    and synchronising first avoids it.
    """
    del objects
    gc.collect()
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- optimisation


@attrs.frozen(kw_only=True)
class OptimSpec:
    """Optimiser and schedule (Tables 8 and 9).

    Attributes:
        epochs: training epochs.
        batch_size: clips per device per step.
        base_lr: learning rate for a total batch of 256 (``lr = base_lr * total / 256``).
        warmup_epochs: linear warm-up length.
        weight_decay: AdamW weight decay (not applied to norms, biases, tokens).
        betas: AdamW betas.
        min_lr: floor of the cosine schedule.
        accum_steps: gradient accumulation steps per optimiser step.
        clip_grad: max gradient norm, or None.
        layer_decay: layer-wise lr decay (finetuning), or None.
        schedule: after warm-up, ``"cosine"`` decay to ``min_lr`` (pretraining and
            finetuning), ``"linear"`` decay to ``min_lr`` (ADE20K), or ``"step"``: x0.1 at
            each of ``milestones`` (epochs; COCO's 27 and 33).
        warmup_steps: warm-up length in optimiser steps, overriding ``warmup_epochs``
            (ADE20K warms up over 1,500 iterations).
        total_steps: train this many optimiser steps instead of ``epochs`` full epochs
            (ADE20K's 160k iterations); the schedule spans them.
        milestones: epochs of the ``"step"`` schedule's decays.
    """

    epochs: int = attrs.field(validator=positive)
    batch_size: int = attrs.field(validator=positive)
    base_lr: float = attrs.field(validator=positive_float)
    warmup_epochs: float = attrs.field(default=0.0, validator=non_negative_float)
    weight_decay: float = attrs.field(default=0.05, validator=non_negative_float)
    betas: tuple[float, float] = (0.9, 0.95)
    min_lr: float = attrs.field(default=1e-6, validator=non_negative_float)
    accum_steps: int = attrs.field(default=1, validator=positive)
    clip_grad: float | None = None
    layer_decay: float | None = None
    schedule: str = "cosine"
    warmup_steps: int | None = None
    total_steps: int | None = None
    milestones: tuple[float, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.schedule not in ("cosine", "linear", "step"):
            raise ValueError(f"OptimSpec.schedule must be 'cosine', 'linear' or 'step', got {self.schedule!r}")
        for name in ("warmup_steps", "total_steps"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (name == "total_steps" and value < 1)):
                raise ValueError(f"OptimSpec.{name} must be a positive step count or None, got {value!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"OptimSpec.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"OptimSpec.layer_decay must be in (0, 1], got {self.layer_decay!r}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"OptimSpec.clip_grad must be > 0 or None, got {self.clip_grad!r}")

    def peak_lr(self, world: int) -> float:
        """The linear scaling rule of MAE/VideoMAE: ``base_lr * total_batch / 256``."""
        return self.base_lr * self.batch_size * self.accum_steps * world / 256


_NO_DECAY_NAMES = ("mask_token", "cls_token", "pos_embed")


def _layer_id(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder block i, num_layers + 1 for the head."""
    if ".embed." in f".{name}" or name.startswith("embed.") or "cls_token" in name or "pos_embed" in name:
        return 0
    parts = name.split(".")
    if "blocks" in parts:
        i = parts.index("blocks")
        if i + 1 < len(parts) and parts[i + 1].isdigit() and "decoders" not in parts:
            return int(parts[i + 1]) + 1
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 num_layers: int | None = None) -> list[dict]:
    """AdamW groups: decay on weights of rank >= 2, none on norms, biases and tokens.

    With ``layer_decay``, each group also carries ``lr_scale = layer_decay^(L + 1 - layer)``
    (BEiT/MAE layer-wise decay: the head gets the full rate, the embedding the least).
    """
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(t in name for t in _NO_DECAY_NAMES)
        layer = _layer_id(name, num_layers) if layer_decay is not None and num_layers is not None else 0
        key = (decay, layer)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer) if layer_decay is not None and num_layers else 1.0
            groups[key] = {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(model: nn.Module, spec: OptimSpec, runtime: Runtime, num_layers: int | None = None):
    """AdamW over :func:`param_groups`, fused on CUDA and the CPU (one kernel over all
    parameters; on a 2-core CPU a ViT-S update takes 16 ms instead of 45 ms)."""
    groups = param_groups(model, spec.weight_decay, spec.layer_decay, num_layers)
    fused = runtime.device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=spec.peak_lr(runtime.world), betas=spec.betas, fused=fused)


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float, schedule: str = "cosine",
          milestones: tuple[int, ...] = ()) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine or linear decay to
    ``floor``, or x0.1 at each step of ``milestones`` (``schedule="step"``)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "step":
        return peak * 0.1 ** sum(step >= m for m in milestones)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return floor + (peak - floor) * (1 - progress)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- data


class EpochSampler(Sampler[int]):
    """Shuffled (or ordered) indices for one rank, a function of (seed, epoch) only.

    Pads to a multiple of the world size like ``DistributedSampler``; ``skip`` drops the
    first indices of the epoch, so a run resumed mid-epoch sees exactly the batches it had
    not yet seen.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 drop_last: bool = False) -> None:
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.drop_last = drop_last
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.drop_last:
            order = order[: len(order) - len(order) % self.world]
        else:
            order += order[: (-len(order)) % self.world]
        return order[self.rank::self.world]

    def epoch_length(self) -> int:
        """Indices this rank sees in a whole epoch (ignoring ``skip``)."""
        return len(self._indices())

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        return len(self._indices()) - self.skip


def make_loader(dataset: Dataset, batch_size: int, runtime: Runtime, *, shuffle: bool, seed: int,
                workers: int = 0, drop_last: bool = True, collate_fn=None) -> DataLoader:
    """A loader over an :class:`EpochSampler`; ``drop_last`` keeps per-step batches equal;
    ``collate_fn`` for items that do not stack (detection: lists of images and targets)."""
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=runtime.rank, world=runtime.world)
    # A private generator: creating an iterator must not draw from the global RNG, or a run
    # resumed mid-epoch would see different masks than the run it continues.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      drop_last=drop_last, collate_fn=collate_fn, pin_memory=runtime.device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def flatten_views(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Items with ``V`` views (``video`` ``(B, V, C, T, H, W)``, side maps ``(B, V, T, H, W)``)
    -> a batch of ``B * V``."""
    out = dict(batch)
    video = batch.get("video")
    if video is not None and video.ndim == 6:
        B, V = video.shape[:2]
        for key, value in batch.items():
            if key in ("label", "index", "skipped"):
                out[key] = value.repeat_interleave(V)
            elif isinstance(value, Tensor) and value.ndim >= 4 and tuple(value.shape[:2]) == (B, V):
                out[key] = value.flatten(0, 1)  # the clips and their side maps
    return out


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
        stop_after: stop after this many optimiser steps in total (tests, smoke runs).

    Returns:
        The final :class:`TrainState`.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    directory = run.stage_dir(stage)
    state = TrainState()
    if resume and (directory / "state.pt").is_file():
        state = load_checkpoint(directory, model, optimizer)
        if runtime.main:
            log.info("%s: resumed at epoch %d, step %d", stage, state.epoch, state.step)
    per_rank = loader.sampler.epoch_length()
    steps_per_epoch = per_rank // (loader.batch_size * spec.accum_steps)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{stage}: {per_rank} items per rank give no full step of {loader.batch_size} x "
            f"{spec.accum_steps} accumulation; lower the batch size"
        )
    total = spec.total_steps or steps_per_epoch * spec.epochs
    epochs = -(-total // steps_per_epoch)
    warmup = spec.warmup_steps if spec.warmup_steps is not None else int(round(spec.warmup_epochs * steps_per_epoch))
    milestones = tuple(int(round(m * steps_per_epoch)) for m in spec.milestones)
    peak = spec.peak_lr(runtime.world)
    autocast = runtime.autocast_dtype
    console = console or Console(stderr=True)
    columns = (TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}"))
    model.train()
    with Progress(*columns, console=console, disable=not runtime.main, transient=False) as progress:
        task = progress.add_task(stage, total=total, completed=state.step, info="")
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
                # read on the host before the copy: no device-to-host sync in the step
                state.skipped += int(batch["skipped"].sum()) if "skipped" in batch else 0
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
                    _check_finite(values, stage, state.step)
                    values = _all_reduce_mean(values, runtime)
                    rate = clips * runtime.world / (time.perf_counter() - window_start)
                    run.metrics(stage, epoch=state.epoch, step=state.step, lr=lr, clips_per_s=rate, **values)
                    shown = " ".join(f"{k}={v:.3f}" for k, v in values.items())
                    progress.update(task, info=f"{shown} lr={lr:.2e} {rate:.1f} clips/s")
                    window_start, clips, running, micro = time.perf_counter(), 0, {}, 0
                progress.update(task, completed=state.step)
                if checkpoint_every and state.step % checkpoint_every == 0:
                    _checkpoint(directory, model, optimizer, state, runtime)
                if stop_after is not None and state.step >= stop_after:
                    return state
            state.epoch += 1
            _checkpoint(directory, model, optimizer, state, runtime)
    return state


def _check_finite(values: dict[str, float], stage: str, step: int) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        culprits = [k for k in bad if k != "loss"] or bad
        raise NonFiniteLoss(f"{stage}: non-finite loss at step {step} from {', '.join(culprits)}")


def _checkpoint(directory: Path, model, optimizer, state: TrainState, runtime: Runtime) -> None:
    if runtime.main:
        save_checkpoint(directory, model, optimizer, state)
    if runtime.distributed:
        dist.barrier()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, runtime: Runtime, console=None, stage: str = "test") -> dict:
    """Top-1/top-5 of softmax scores averaged over each item's views (clips x crops).

    Returns ``{"top1", "top5", "count", "predictions": (N, classes) tensor, "labels"}``
    over the whole dataset, gathered across ranks (padding duplicates removed by index).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    model.eval()
    autocast = runtime.autocast_dtype
    scores, labels, indices = [], [], []
    console = console or Console(stderr=True)
    with Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), console=console,
                  disable=not runtime.main) as progress:
        task = progress.add_task(stage, total=len(loader))
        for batch in loader:
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
    }


def _gather(t: Tensor, runtime: Runtime) -> Tensor:
    out = [torch.empty_like(t) for _ in range(runtime.world)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)
