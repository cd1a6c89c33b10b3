"""Loading batches: an epoch sampler that is a function of (seed, epoch) and splits ranks, so a
resumed run sees the same data order; the loader; views flattened into the batch."""

from __future__ import annotations

from typing import Iterator, Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from visualpath.preemption import ignore_in_workers
from visualpath.runtime import Runtime

__all__ = ["EpochSampler", "make_loader", "flatten_views"]


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
    if workers:  # once here, not in every worker of every epoch (visualpath.data.transforms imports it late)
        import torchvision.transforms.v2.functional  # noqa: F401
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=generator,
                      drop_last=drop_last, collate_fn=collate_fn, pin_memory=runtime.device.type == "cuda",
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      worker_init_fn=ignore_in_workers if workers else None)


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
