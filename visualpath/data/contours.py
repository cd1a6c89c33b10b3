"""The V2 contour cache: SAM masks turned into contour maps, computed once, offline.

BIMM (section 3.2) segments every frame with the Segment Anything Model and joins all mask
boundaries into a "contour image". SAM is far too slow to run inside training (seconds per
frame for ViT-H), so ``python -m recipes.precompute_contours`` runs it once over a dataset
and writes one compact file per video beside the data:

``<cache root>/<video path relative to the data root>.npz`` holding ``frames`` (the cached
frame indices, int32), ``shape`` (H, W) and ``bits`` (the binary maps, bit-packed with
``numpy.packbits`` and zip-compressed). Files are written to a temporary name and renamed,
so an interrupted job never leaves a half-written file and a resumed one skips what exists.

With ``every=K`` only every K-th frame is cached; :meth:`ContourCache.load` then answers each
wanted frame with the nearest cached one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from visualpath.data.decode import Video

__all__ = ["ContourCache", "masks_to_contour", "VIDEO_EXTENSIONS", "find_videos", "contour_video"]

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v")


def masks_to_contour(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the boundaries of binary masks, ``(H, W)`` bool.

    A mask's boundary is its pixels with a 4-neighbour outside the mask (image borders do
    not count as boundaries).
    """
    contour = np.zeros(shape, dtype=bool)
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        interior = ndi.binary_erosion(mask, border_value=1)
        contour |= mask & ~interior
    return contour


class ContourCache:
    """Contour maps of a dataset's videos, one ``.npz`` per video.

    Args:
        root: cache folder (e.g. ``<data root>/contours``).
        data_root: the folder video paths are taken relative to.
    """

    def __init__(self, root: str | os.PathLike, data_root: str | os.PathLike) -> None:
        self.root, self.data_root = Path(root), Path(data_root)

    def path_for(self, video: str | os.PathLike) -> Path:
        relative = Path(video).resolve().relative_to(self.data_root.resolve())
        return self.root / relative.with_suffix(relative.suffix + ".npz")

    def has(self, video: str | os.PathLike) -> bool:
        return self.path_for(video).is_file()

    def save(self, video: str | os.PathLike, frames: Sequence[int], maps: np.ndarray) -> Path:
        """Write ``(K, H, W)`` bool maps of frames ``frames`` atomically."""
        maps = np.asarray(maps, dtype=bool)
        if maps.ndim != 3 or len(frames) != maps.shape[0]:
            raise ValueError(f"expected (K, H, W) maps for {len(frames)} frames, got {maps.shape}")
        path = self.path_for(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(
                    f, frames=np.asarray(frames, dtype=np.int32),
                    shape=np.asarray(maps.shape[1:], dtype=np.int32), bits=np.packbits(maps, axis=None),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load(self, video: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor | None:
        """``(len(indices), H, W)`` uint8 maps (255 = contour) for the wanted frames.

        Each wanted frame takes the nearest cached frame. Returns None when the video has no
        cache file.
        """
        path = self.path_for(video)
        if not path.is_file():
            return None
        with np.load(path) as data:
            frames, (H, W) = data["frames"], data["shape"]
            maps = np.unpackbits(data["bits"], count=len(frames) * H * W).reshape(len(frames), H, W)
        nearest = np.abs(np.asarray(indices)[:, None] - frames[None, :]).argmin(1)
        return torch.from_numpy(maps[nearest] * np.uint8(255))


def find_videos(data_root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every video file under ``data_root`` (sorted), skipping the ``exclude`` folder."""
    data_root = Path(data_root)
    skip = Path(exclude).resolve() if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(data_root):
        if skip is not None and Path(dirpath).resolve() == skip:
            dirnames[:] = []
            continue
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(VIDEO_EXTENSIONS)]
    return found


def contour_video(path: str | os.PathLike, generate: Callable[[np.ndarray], list[dict]],
                  every: int = 1) -> tuple[list[int], np.ndarray]:
    """Run a mask generator on every ``every``-th frame; returns (frame indices, maps).

    Args:
        generate: SAM's ``SamAutomaticMaskGenerator.generate`` or anything with its contract
            (an ``(H, W, 3)`` uint8 image in, a list of ``{"segmentation": (H, W) bool}`` out).
    """
    with Video(path) as video:
        indices = list(range(0, video.info.num_frames, every))
        frames = video.read(indices).numpy()
    maps = np.stack([
        masks_to_contour((m["segmentation"] for m in generate(frame)), frame.shape[:2]) for frame in frames
    ])
    return indices, maps
