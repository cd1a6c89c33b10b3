"""Where a run executes: device, seeds, ``torchrun`` DDP (NCCL on CUDA, gloo on CPU), clean shutdown."""

from __future__ import annotations

import gc
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Runtime", "setup", "teardown", "seed_everything"]


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
    if world > 1:
        exit_with_parent()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    seed_everything(seed + rank)
    return Runtime(device=dev, rank=rank, world=world, local_rank=local_rank)


def exit_with_parent() -> bool:
    """Ask the kernel to end this process when its parent dies (Linux ``PR_SET_PDEATHSIG``):
    a ``torchrun`` worker must not train on, unsupervised, once its agent was killed. Returns
    whether it could (not on other systems)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    return os.getppid() != 1  # the parent may already be gone: then it is too late


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
