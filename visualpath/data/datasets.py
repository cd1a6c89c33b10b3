"""Datasets of clips and images that survive broken files.

Every dataset returns a dict of tensors: ``video`` ``(C, T, H, W)`` uint8 (``(V, C, T, H, W)``
for ``V`` views or test crops) or ``image`` ``(C, H, W)`` uint8, ``label`` and ``index``
(int64), and ``skipped``: how many files this item's worker newly found unreadable while
producing it, so a training loop can total them across worker processes (each worker
remembers its own bad files, so a file can be counted once per worker).

A missing file is dropped when the dataset is built; a corrupt, truncated, empty or
undecodable one is skipped when met: one warning line naming it, a count
(``dataset.skipped``), and another sample in its place. A dataset with no readable file
raises an error that says what was expected and where. A video shorter than a clip is used,
its last frame repeated, and its item says so (``short``: ``[index, frames]``, ``""`` for
the others) for the training loop to report (decision R13).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from visualpath.data.decode import VideoError, open_video
from visualpath.data.formats import DatasetFormatError, VideoRecord
from visualpath.data.memory import DecodedVideos
from visualpath.data.sampling import multiview_clips, segment_clip, segment_views, strided_clip, three_crop_boxes
from visualpath.data.contours import ContourCache, MapCache
from visualpath.data.transforms import TrainTransform, crop, resize_map, resize_short

__all__ = ["VideoDataset", "ImageFolder", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


def _present(records: Sequence[VideoRecord], what: str) -> tuple[list[VideoRecord], list[str]]:
    """The listed records whose files exist, and the paths of those that do not (warned here,
    counted by the stage that reads the set: ``broken_files.json``, ``results.json``)."""
    kept = [r for r in records if r.path.is_file()]
    missing = [r.path for r in records if not r.path.is_file()]
    if not records:
        raise DatasetFormatError(f"{what}: the list of files is empty")
    if not kept:
        raise DatasetFormatError(
            f"{what}: none of the {len(records)} listed files exists (first expected at {records[0].path})"
        )
    for path in missing[:20]:
        log.warning("skipping missing file %s", path)
    if len(missing) > 20:
        log.warning("... and %d more missing files of %s", len(missing) - 20, what)
    return kept, [str(p) for p in missing]


class _Robust(Dataset):
    """Retry loop shared by the datasets: skip, count and replace unreadable files.

    Each item names the files it had to skip as ``broken``, a JSON list of ``[index, reason]``
    (``""`` when none), so the training loop, which sees every worker's items, can warn once
    per file and count distinct files across epochs, workers, resumes and ranks. Set
    ``warn=False`` when such a loop reports them (it does).
    """

    records: list[VideoRecord]
    max_retries: int = 20
    warn: bool = True

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0
        self.skipped = 0
        self._bad: dict[int, str] = {}

    def set_epoch(self, epoch: int) -> None:
        """Draw different random clips/crops each epoch (deterministic given seed and epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        raise TypeError(f"{type(self).__name__} must define _load")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        j, last, broken, found = index, None, [], 0
        tries = min(self.max_retries, len(self.records))
        for _ in range(tries):
            if j in self._bad:
                broken.append([j, self._bad[j]])
            else:
                try:
                    item = self._load(j, rng)
                except VideoError as err:
                    self._skip(j, err)
                    last, found = err, found + 1
                    broken.append([j, str(err)])
                else:
                    item.update(index=torch.tensor(j), skipped=torch.tensor(found),
                                broken=json.dumps(broken) if broken else "")
                    item.setdefault("short", "")
                    item.setdefault("label", torch.tensor(self.records[j].label))
                    return item
            j = self._replacement(rng)
        distinct = len({b[0] for b in broken})
        raise VideoError(
            f"{distinct} different files tried for item {index} could not be read (last: {last}); "
            f"check that the dataset's files are readable videos/images"
        )

    def _check_maps(self, name: str, what: str) -> None:
        """Every file has a cache entry for every side map (``self.maps``)."""
        for key, cache in getattr(self, "maps", {}).items():
            absent = [r.path for r in self.records if not cache.has(r.path)]
            if absent:
                raise DatasetFormatError(
                    f"{name}: the {key} cache at {cache.root} lacks {len(absent)} of {len(self.records)} "
                    f"{what} (first: {absent[0]}); finish it with python -m recipes.precompute_maps"
                )

    def _skip(self, j: int, err: Exception) -> None:
        self._bad[j] = str(err)
        self.skipped += 1
        if self.warn:
            log.warning("skipping unreadable file %s", err)

    def _replacement(self, rng: np.random.Generator) -> int:
        for _ in range(100):
            j = int(rng.integers(len(self.records)))
            if j not in self._bad:
                return j
        return int(rng.integers(len(self.records)))


class VideoDataset(_Robust):
    """Clips from a list of videos, for pretraining, finetuning or multi-view testing.

    Args:
        records: videos and labels (from :mod:`visualpath.data.formats`).
        classes: class names in label order.
        frames: frames per clip ``T``.
        stride: temporal stride ``tau`` for strided sampling.
        sampling: ``"strided"`` (pretraining, dense finetuning) or ``"segments"`` (SSv2).
        mode: ``"train"`` (random clip and ``transform``) or ``"test"`` (``clips`` x
            ``crops`` deterministic views of side ``size``).
        transform: training transform (e.g. :class:`TrainTransform`); None returns frames
            at their decoded size.
        views: augmented views per decoded video (repeated sampling); items then hold
            ``(views, C, T, H, W)``.
        size: test crop side.
        clips, crops: test views (UCF101 5 x 3, SSv2 2 x 3, HMDB51 10 x 3); crops is 1
            (centre) or 3.
        seed: base seed of the per-item random draws.
        as_images: return one frame per item as ``image`` ``(C, H, W)`` (frames of a video
            dataset as an image source, the paper's "UCF101 init").
        maps: side-map caches by map name (areas declare the maps they read); training items
            then carry each map ``M`` as ``M`` ``(T, H, W)`` uint8 (``(V, T, H, W)`` for views;
            ``image_M`` ``(H, W)`` with ``as_images``), cropped, flipped and resized with the
            clip. Every video must be in every cache.
        contours: V2's SAM contour cache, the same as ``maps={"contour": contours}``.
        backend: video decoder, ``"auto"``, ``"pyav"`` or ``"torchcodec"``.
        memory: videos already decoded whole (:func:`visualpath.data.memory.decoded_videos`);
            a kept video's frames are sliced from there, the others decoded from their file.
        name: how errors refer to the dataset.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        classes: Sequence[str],
        *,
        frames: int = 16,
        stride: int = 4,
        sampling: Literal["strided", "segments"] = "strided",
        mode: Literal["train", "test"] = "train",
        transform: TrainTransform | None = None,
        views: int = 1,
        size: int = 224,
        clips: int = 5,
        crops: int = 3,
        seed: int = 0,
        as_images: bool = False,
        contours: ContourCache | None = None,
        maps: Mapping[str, MapCache] | None = None,
        backend: str = "auto",
        memory: DecodedVideos | None = None,
        name: str = "video dataset",
    ) -> None:
        super().__init__(seed)
        if sampling not in ("strided", "segments"):
            raise ValueError(f"sampling must be 'strided' or 'segments', got {sampling!r}")
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {crops}")
        if min(frames, stride, views, clips, size) < 1:
            raise ValueError("frames, stride, views, clips and size must be >= 1")
        if as_images and frames != 1:
            raise ValueError("as_images takes one frame per item: set frames=1")
        if not classes:
            raise DatasetFormatError(f"{name}: the class list is empty")
        self.records, self.missing_files = _present(records, name)
        self.classes = list(classes)
        self.frames, self.stride, self.sampling, self.mode = frames, stride, sampling, mode
        self.transform, self.views, self.size, self.clips, self.crops = transform, views, size, clips, crops
        self.as_images = as_images
        self.name = name
        self.maps = dict(maps or {})
        if contours is not None:
            self.maps.setdefault("contour", contours)
        self.backend = backend
        self.memory = memory
        self._check_maps(name, "videos")

    def _indices(self, n: int, rng: np.random.Generator | None) -> np.ndarray:
        if self.sampling == "segments":
            return segment_clip(n, self.frames, rng)
        return strided_clip(n, self.frames, self.stride, rng)

    def _picks(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """The frame indices of each view of a video of ``n`` frames."""
        if self.mode == "train":
            return [self._indices(n, rng) for _ in range(self.views)]
        if self.sampling == "segments":
            return segment_views(n, self.frames, self.clips)  # SSv2: segment starts, middles, ...
        return multiview_clips(n, self.frames, self.stride, self.clips)

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        kept = self.memory.frames(self.records[index].path) if self.memory is not None else None
        if kept is not None:  # decoded once, whole (decision P3): the same frames as the file gives
            length = kept.shape[0]
            picks = self._picks(length, rng)
            wanted = np.unique(np.concatenate(picks))
            decoded = kept[torch.from_numpy(wanted)]
        else:
            with open_video(self.records[index].path, self.backend) as video:
                if hasattr(video, "check_complete"):
                    video.check_complete()  # a truncated file is broken even where its first frames decode
                length = video.info.num_frames
                picks = self._picks(length, rng)
                wanted = np.unique(np.concatenate(picks))
                decoded = video.read(wanted)  # (len(wanted), H, W, C), one pass over the file
        position = {int(f): i for i, f in enumerate(wanted)}
        maps = {}
        if self.mode == "train":
            for key, cache in self.maps.items():
                found, binary = cache.read(self.records[index].path, wanted)  # (len(wanted), h, w)
                maps[key] = resize_map(found if binary else found.to(torch.uint8), tuple(decoded.shape[1:3]))
        views = []
        for p in picks:
            rows = [position[int(f)] for f in p]
            clip = decoded[rows].permute(0, 3, 1, 2)  # (T, C, H, W)
            views += self._views(clip, {k: m[rows] for k, m in maps.items()} if maps else None, rng)
        video_out = torch.stack([v.permute(1, 0, 2, 3) for v, _ in views])  # (V, C, T, H, W)
        single = len(views) == 1 and self.mode == "train"
        map_out = {k: torch.stack([_uint8(m[k]) for _, m in views]) for k in maps}  # each (V, T, H, W)
        if self.as_images:
            images = video_out[:, :, 0]
            item = {"image": images[0] if single else images}
            item.update({f"image_{k}": m[0, 0] if single else m[:, 0] for k, m in map_out.items()})
            return item
        item = {"video": video_out[0] if single else video_out}
        item.update({k: m[0] if single else m for k, m in map_out.items()})
        if length < self.frames:  # its clips repeat the last frame: used, and reported (decision R13)
            item["short"] = json.dumps([index, length])
        return item

    def _views(self, clip: torch.Tensor, maps: dict[str, torch.Tensor] | None, rng: np.random.Generator):
        """(frames, maps) pairs for one decoded clip: one augmented view, or test crops."""
        if self.mode == "train":
            if self.transform is None:
                return [(clip, maps)]
            return [self.transform(clip, maps, rng)]
        clip, _ = resize_short(clip, None, self.size)
        H, W = clip.shape[-2:]
        boxes = three_crop_boxes(H, W, self.size)
        boxes = boxes if self.crops == 3 else [boxes[1]]
        return [crop(clip, None, box) for box in boxes]


def _uint8(m: torch.Tensor) -> torch.Tensor:
    """A side map as the batch carries it: uint8, binary maps as 0/255."""
    return m.to(torch.uint8) * 255 if m.dtype == torch.bool else m


class ImageFolder(_Robust):
    """Images in the ImageNet layout (``root/<class>/<image>``) for the ventral stream.

    Args:
        root: folder of class folders.
        transform: training transform applied to the image as a one-frame clip (MAE
            pretraining: ``TrainTransform(crop="resized", area=(0.2, 1.0))``); None keeps the
            decoded size.
        size: with ``transform=None`` and ``size`` set, images are resized and centre-cropped.
        seed: base seed of the per-item random draws.
        maps: side-map caches by map name (one cached frame per image, written by
            ``python -m recipes.precompute_maps`` over the image folder); items then carry
            each map ``M`` as ``image_M`` ``(H, W)`` uint8, cropped, flipped and resized with
            the image. Every image must be in every cache.
    """

    def __init__(self, root: str | Path, transform: TrainTransform | None = None, size: int | None = None,
                 seed: int = 0, maps: Mapping[str, MapCache] | None = None) -> None:
        super().__init__(seed)
        root = Path(root)
        if not root.is_dir():
            raise DatasetFormatError(f"image folder: expected a folder of class folders at {root}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise DatasetFormatError(f"image folder {root}: no class folders (expected {root}/<class>/<image>)")
        records = [
            VideoRecord(p, label)
            for label, cls in enumerate(self.classes)
            for p in sorted((root / cls).iterdir())
            if p.suffix in IMAGE_EXTENSIONS or p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not records:
            raise DatasetFormatError(f"image folder {root}: no images with extensions {IMAGE_EXTENSIONS}")
        self.records, self.missing_files = _present(records, f"image folder {root}")
        self.transform, self.size = transform, size
        self.maps = dict(maps or {})
        self._check_maps(f"image folder {root}", "images")

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        path = self.records[index].path
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise VideoError(f"{path}: cannot decode image ({err})") from None
        clip = torch.from_numpy(array.copy()).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        maps = {}
        for key, cache in self.maps.items():
            found, binary = cache.read(path, [0])  # (1, h, w)
            maps[key] = resize_map(found, tuple(clip.shape[-2:]))
        if self.transform is not None:
            clip, maps = self.transform(clip, maps or None, rng)
        elif self.size is not None:
            clip, maps = resize_short(clip, maps or None, self.size)
            H, W = clip.shape[-2:]
            clip, maps = crop(clip, maps, three_crop_boxes(H, W, self.size)[1])
        item = {"image": clip[0]}
        item.update({f"image_{k}": _uint8(m[0]) for k, m in (maps or {}).items()})
        return item

