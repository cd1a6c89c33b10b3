"""Decoded videos kept in memory, for a set small enough to hold (decision P3).

Each epoch of a small set decodes the same files again: on the demo's built-in set (720
training videos of 32 frames at 64 px) decoding a clip costs about 14 ms of a core, as much
CPU per step as the model's own work, and the loader's workers take it from the same cores
the step runs on. With ``data.memory_gb`` set, a training dataset decodes every video once,
whole, into one uint8 buffer in shared memory, and each item slices its frames from there:
the same frames, bit for bit, as decoding them from the file (a test compares every item).
The buffer is shared with the loader's workers (inherited when they fork, passed by handle
when they spawn) and with later datasets over the same files in the process (the joint and
finetuning stages reuse what the ventral stage decoded).

A video that does not decode is left out and read from its file as before, where the usual
rules skip and count it. Videos beyond the budget are read from their files too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from visualpath.data.decode import VideoError, open_video

__all__ = ["DecodedVideos", "decoded_videos"]

log = logging.getLogger(__name__)


def _key(path: str | os.PathLike) -> tuple[str, int, int]:
    """A file as it is now: its resolved path, size and modification time."""
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


class DecodedVideos:
    """Whole decoded videos in one shared uint8 buffer, by file.

    Attributes:
        buffer: every kept video's frames, flattened one after the other.
        index: ``(path, size, mtime) -> (offset, (N, H, W, C))``.
    """

    def __init__(self, buffer: torch.Tensor, index: dict[tuple[str, int, int], tuple[int, tuple[int, ...]]]) -> None:
        self.buffer, self.index = buffer, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel()

    def frames(self, path: str | os.PathLike) -> torch.Tensor | None:
        """``(N, H, W, C)`` uint8 frames of ``path`` as decoded, or None when it is not kept
        (or the file changed since)."""
        try:
            found = self.index.get(_key(path))
        except OSError:
            return None
        if found is None:
            return None
        offset, shape = found
        return self.buffer[offset:offset + int(np.prod(shape))].view(shape)


_STORES: dict[tuple, DecodedVideos] = {}  # by (files, budget): the stages of a run share one


def decoded_videos(paths: Sequence[str | os.PathLike], budget_bytes: int, backend: str = "auto") -> DecodedVideos:
    """``paths`` decoded whole, in the order given while they fit in ``budget_bytes``, in one
    shared buffer; the same object for the same files and budget within a process.

    Files that do not open or decode are left out (the dataset reads them, and skips and
    counts them, as it would without this); so are the files past the budget.
    """
    keys = []
    for path in paths:
        try:
            keys.append((path, _key(path)))
        except OSError:
            continue  # a missing file: the dataset's own checks report it
    store_key = (tuple(k for _, k in keys), int(budget_bytes))
    if store_key in _STORES:
        return _STORES[store_key]
    plan, total = [], 0  # sizes from the headers, so the buffer is made once, at its size
    for path, key in keys:
        try:
            with open_video(path, backend) as video:
                info = video.info
        except (VideoError, OSError, ValueError, RuntimeError):
            continue
        shape = (info.num_frames, info.height, info.width, 3)
        size = int(np.prod(shape))
        if total + size > budget_bytes:
            break
        plan.append((path, key, total, shape))
        total += size
    buffer = torch.empty(total, dtype=torch.uint8).share_memory_()
    index = {}
    for path, key, offset, shape in plan:
        try:
            with open_video(path, backend) as video:
                if hasattr(video, "check_complete"):
                    video.check_complete()
                frames = video.read(np.arange(shape[0]))
        except (VideoError, OSError, ValueError, RuntimeError) as err:
            log.debug("not kept in memory: %s (%s)", path, err)
            continue
        if tuple(frames.shape) != shape:
            continue  # the header misstated the file: read from the file as before
        buffer[offset:offset + frames.numel()] = frames.reshape(-1)
        index[key] = (offset, shape)
    store = _STORES[store_key] = DecodedVideos(buffer, index)
    return store


def release_decoded() -> int:
    """Forget every store :func:`decoded_videos` made in this process; returns the bytes they
    held. A store's buffer is freed once no dataset refers to it any more: call this when the
    stages that read the training videos are done (the test stage reads its own files)."""
    held = sum(store.nbytes for store in _STORES.values())
    _STORES.clear()
    return held
