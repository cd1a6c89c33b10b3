"""Per-pixel side-map caches: maps an area reads, computed once, offline (V2's SAM contours).

An area may declare a precomputed per-pixel map (``Area.maps``): V2's "contour image" (BIMM
section 3.2: the boundaries of all SAM masks of a frame), or optical flow, depth, saliency.
Computing such maps is far too slow for training (SAM ViT-H takes seconds per frame), so
``python -m recipes.precompute_maps`` computes them once over a dataset and writes one
compact file per video beside the data:

``<cache root>/<video path relative to the data root>.npz`` holding ``frames`` (the cached
frame indices, int32), ``shape`` (H, W) and either ``bits`` (binary maps, bit-packed with
``numpy.packbits``) or ``values`` (uint8 maps), zip-compressed. Files are written to a
temporary name and renamed, so an interrupted job never leaves a half-written file and a
resumed one skips what exists.

With ``every=K`` only every K-th frame is cached; :meth:`MapCache.load` then answers each
wanted frame with the nearest cached one. The data pipeline crops, flips and resizes a map
with its clip (binary maps keep thin lines when shrunk, uint8 maps are resized bilinearly).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from visualpath.data.decode import Video
from visualpath.atomic import file_mode

__all__ = ["MapCache", "ContourCache", "masks_to_contour", "VIDEO_EXTENSIONS", "IMAGE_FILE_EXTENSIONS",
           "find_videos", "find_images", "map_video", "map_image", "contour_video"]

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v")
IMAGE_FILE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def masks_to_contour(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the boundaries of binary masks, ``(H, W)`` bool.

    A mask's boundary is its pixels with a 4-neighbour outside the mask (image borders do
    not count as boundaries).
    """
    from scipy import ndimage as ndi  # here: scipy.ndimage is 0.3 s of every command's start

    contour = np.zeros(shape, dtype=bool)
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        interior = ndi.binary_erosion(mask, border_value=1)
        contour |= mask & ~interior
    return contour


class MapCache:
    """One side map of a dataset's videos, one ``.npz`` per video.

    Args:
        root: cache folder (e.g. ``<data root>/contours``).
        data_root: the folder video paths are taken relative to.
        name: the map's name, as areas declare it (``"contour"``), for messages.
    """

    def __init__(self, root: str | os.PathLike, data_root: str | os.PathLike, name: str = "contour") -> None:
        self.root, self.data_root, self.name = Path(root), Path(data_root), name

    def path_for(self, video: str | os.PathLike) -> Path:
        relative = Path(video).resolve().relative_to(self.data_root.resolve())
        return self.root / relative.with_suffix(relative.suffix + ".npz")

    def has(self, video: str | os.PathLike) -> bool:
        return self.path_for(video).is_file()

    def save(self, video: str | os.PathLike, frames: Sequence[int], maps: np.ndarray) -> Path:
        """Write ``(K, H, W)`` maps of frames ``frames`` atomically: bool maps bit-packed,
        uint8 maps as they are."""
        maps = np.asarray(maps)
        if maps.dtype not in (np.uint8, np.bool_):
            raise ValueError(f"{self.name} maps must be bool (a binary map) or uint8 (values 0-255), got "
                             f"{maps.dtype}; scale a float map to 0-255 and cast it to uint8 first")
        if maps.ndim != 3 or len(frames) != maps.shape[0]:
            raise ValueError(f"expected (K, H, W) maps for {len(frames)} frames, got {maps.shape}")
        data = {"bits": np.packbits(maps, axis=None)} if maps.dtype == bool else {"values": maps}
        path = self.path_for(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, frames=np.asarray(frames, dtype=np.int32),
                                    shape=np.asarray(maps.shape[1:], dtype=np.int32), **data)
            os.chmod(tmp, file_mode())  # readable as any other file, not mkstemp's 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def read(self, video: str | os.PathLike, indices: Sequence[int]) -> tuple[torch.Tensor, bool] | None:
        """``(len(indices), H, W)`` maps for the wanted frames and whether they are binary:
        bool maps for a binary cache, uint8 otherwise. Each wanted frame takes the nearest
        cached frame. None when the video has no cache file."""
        path = self.path_for(video)
        if not path.is_file():
            return None
        with np.load(path) as data:
            frames, (H, W) = data["frames"], data["shape"]
            if "bits" in data:
                maps = np.unpackbits(data["bits"], count=len(frames) * H * W).reshape(len(frames), H, W).astype(bool)
            else:
                maps = data["values"]
        nearest = np.abs(np.asarray(indices)[:, None] - frames[None, :]).argmin(1)
        return torch.from_numpy(np.ascontiguousarray(maps[nearest])), maps.dtype == bool

    def load(self, video: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor | None:
        """``(len(indices), H, W)`` uint8 maps for the wanted frames (255 = set, for a binary
        cache). Returns None when the video has no cache file."""
        found = self.read(video, indices)
        if found is None:
            return None
        maps, binary = found
        return maps.to(torch.uint8) * 255 if binary else maps


class ContourCache(MapCache):
    """V2's contour cache: the :class:`MapCache` of the ``"contour"`` map."""

    def __init__(self, root: str | os.PathLike, data_root: str | os.PathLike) -> None:
        super().__init__(root, data_root, name="contour")


def find_videos(data_root: str | os.PathLike, exclude: str | os.PathLike | None = None,
                extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Path]:
    """Every video file under ``data_root`` (sorted), skipping the ``exclude`` folder."""
    data_root = Path(data_root)
    skip = Path(exclude).resolve() if exclude else None
    found = []
    for dirpath, dirnames, filenames in os.walk(data_root):
        if skip is not None and Path(dirpath).resolve() == skip:
            dirnames[:] = []
            continue
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(extensions)]
    return found


def find_images(data_root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every image file under ``data_root`` (sorted; an ImageNet layout's ``train/`` and
    ``val/`` alike), skipping the ``exclude`` folder."""
    return find_videos(data_root, exclude, IMAGE_FILE_EXTENSIONS)


def map_image(path: str | os.PathLike, compute: Callable[[np.ndarray], np.ndarray]) -> tuple[list[int], np.ndarray]:
    """A side map of one image, cached as frame 0: ``([0], (1, H, W) map)``."""
    from PIL import Image

    from visualpath.data.decode import VideoError

    try:
        with Image.open(path) as img:
            frame = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise VideoError(f"{path}: cannot decode image ({err})") from None
    return [0], np.asarray(compute(frame))[None]


def map_video(path: str | os.PathLike, compute: Callable[[np.ndarray], np.ndarray],
              every: int = 1) -> tuple[list[int], np.ndarray]:
    """Compute a side map of every ``every``-th frame; returns (frame indices, ``(K, H, W)`` maps).

    Args:
        compute: an ``(H, W, 3)`` uint8 frame -> its ``(H, W)`` map (bool or uint8).
    """
    with Video(path) as video:
        indices = list(range(0, video.info.num_frames, every))
        frames = video.read(indices).numpy()
    return indices, np.stack([np.asarray(compute(frame)) for frame in frames])


def contour_video(path: str | os.PathLike, generate: Callable[[np.ndarray], list[dict]],
                  every: int = 1) -> tuple[list[int], np.ndarray]:
    """Run a mask generator on every ``every``-th frame; returns (frame indices, contour maps).

    Args:
        generate: SAM's ``SamAutomaticMaskGenerator.generate`` or anything with its contract
            (an ``(H, W, 3)`` uint8 image in, a list of ``{"segmentation": (H, W) bool}`` out).
    """
    return map_video(path, lambda frame: masks_to_contour((m["segmentation"] for m in generate(frame)),
                                                          frame.shape[:2]), every)
