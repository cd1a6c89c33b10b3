"""AVA v2.2 in its official formats, and a small generated set in the same formats.

``root/``::

    annotations/ava_train_v2.2.csv        video_id,timestamp,x1,y1,x2,y2,action_id,person_id
    annotations/ava_val_v2.2.csv          (boxes normalised to [0, 1], one row per action)
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt   the 60 evaluation classes
    annotations/ava_val_predicted_boxes.csv   video_id,timestamp,x1,y1,x2,y2,action_id,score
    frame_lists/train.csv, frame_lists/val.csv   "original_video_id video_id frame_id path labels"
    frames/<video_id>/<video_id>_000001.jpg ...  (30 fps, frame 1 at second 900)

A sample is one key frame: the clip of ``frames`` frames at ``stride`` centred on it
(SlowFast's convention: key frame index ``(timestamp - 900) * 30``, clamped at the video's
ends), its person boxes (ground truth for training; detected boxes scoring at least the
threshold for testing) and, for each box, a multi-hot vector over the evaluation classes.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from visualpath.data.formats import DatasetFormatError

__all__ = ["AVA", "read_action_list", "read_boxes", "read_frame_list", "write_ava_like", "FPS", "FIRST_SECOND"]

FPS = 30
FIRST_SECOND = 900


def _rows(path: Path, what: str, delimiter: str = ",", header: bool = False) -> list[list[str]]:
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing: expected {what}")
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=delimiter) if r and any(c.strip() for c in r)]
    return rows[1:] if header else rows


def read_action_list(path: str | os.PathLike) -> dict[int, str]:
    """``{action_id: name}`` from AVA's ``.pbtxt`` label map."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing: expected AVA's label map (ava_action_list_v2.2_for_"
                                 "activitynet_2019.pbtxt: 'label { name: \"...\" label_id: N }' entries)")
    text = path.read_text()
    entries = re.findall(r'name:\s*"([^"]*)"\s*\n?\s*(?:label_)?id:\s*(\d+)', text)
    if not entries:
        raise DatasetFormatError(f"{path} has no 'name: \"...\" label_id: N' entries: not an AVA label map")
    return {int(i): name for name, i in entries}


def read_boxes(path: str | os.PathLike, scored: bool = False) -> dict[tuple[str, int], list[tuple]]:
    """``{(video_id, timestamp): [(box, action_id, person_or_score), ...]}`` from an AVA CSV.

    Args:
        scored: the file is a detection file whose last column is a confidence score.
    """
    path = Path(path)
    out: dict[tuple[str, int], list[tuple]] = defaultdict(list)
    what = ("AVA detections: video_id,timestamp,x1,y1,x2,y2,action_id,score" if scored else
            "AVA annotations: video_id,timestamp,x1,y1,x2,y2,action_id,person_id")
    for line, row in enumerate(_rows(path, what), start=1):
        try:
            video, second = row[0], int(float(row[1]))
            box = tuple(float(v) for v in row[2:6])
            if len(box) != 4:
                raise IndexError
            action = int(row[6]) if len(row) > 6 and row[6].strip() not in ("", "-1") else -1
            last = float(row[7]) if len(row) > 7 and row[7].strip() else (1.0 if scored else -1)
        except (ValueError, IndexError):
            raise DatasetFormatError(f"{path}, line {line}: {','.join(row)!r} is not a row of {what}") from None
        if not all(0.0 <= v <= 1.0 for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetFormatError(f"{path}, line {line}: box {box} is not x1<x2, y1<y2 in [0, 1]")
        out[(video, second)].append((box, action, last))
    return dict(out)


def read_frame_list(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{video_id: [frame paths in order]}`` from a frame list (space-separated, header)."""
    path = Path(path)
    videos: dict[str, list[tuple[int, str]]] = defaultdict(list)
    what = "an AVA frame list: 'original_video_id video_id frame_id path labels' with a header line"
    for line, row in enumerate(_rows(path, what, delimiter=" ", header=True), start=2):
        if len(row) < 4:
            raise DatasetFormatError(f"{path}, line {line}: {' '.join(row)!r} is not a row of {what}")
        videos[row[0]].append((int(row[2]), row[3]))
    return {v: [p for _, p in sorted(frames)] for v, frames in videos.items()}


class AVA(Dataset):
    """Key-frame samples of AVA (see the module docstring).

    Frames are resized keeping their aspect ratio so that the short side is ``short_side``
    (appendix A.2, following SlowFast: AVA's 450x360 frames become 320x256). Training clips are
    then cropped to ``size`` x ``size`` at a random place and flipped at random (boxes follow;
    a box the crop cuts off entirely is dropped with its labels); test clips keep the whole
    resized frame, each side rounded to a multiple of ``multiple`` (the patch), so 320x256
    stays 320x256.

    Items: ``video`` ``(3, frames, H, W)`` uint8, ``boxes`` ``(n, 4)`` in pixels of that
    clip, ``labels`` ``(n, C)`` multi-hot over the evaluation classes (all zero for detected
    boxes), ``scores`` ``(n,)``, and ``key`` the (video, timestamp) index.

    Args:
        root: the folder holding ``annotations/``, ``frame_lists/`` and ``frames/``.
        split: ``"train"`` (ground-truth boxes) or ``"val"`` (detected boxes).
        size: the training crop side (224 in the paper).
        threshold: minimum detector confidence of the test boxes (0.8 in the paper).
        short_side: the resized frames' short side (256 in the paper).
        multiple: test frames' sides are rounded to a multiple of this (the ViT's patch).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", frames: int = 16, stride: int = 4,
                 size: int = 224, threshold: float = 0.8, train: bool | None = None, seed: int = 0,
                 short_side: int = 256, multiple: int = 16) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if short_side < size:
            raise ValueError(f"short_side ({short_side}) must be at least the crop size ({size})")
        root = Path(root)
        self.root, self.frames, self.stride, self.size, self.seed, self.epoch = root, frames, stride, size, seed, 0
        self.short_side, self.multiple = short_side, multiple
        self.train = split == "train" if train is None else train
        ann = root / "annotations"
        self.actions = read_action_list(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
        self.class_ids = sorted(self.actions)
        self.index_of = {a: i for i, a in enumerate(self.class_ids)}
        self.ground_truth = read_boxes(ann / f"ava_{split}_v2.2.csv")
        self.videos = read_frame_list(root / "frame_lists" / f"{split}.csv")
        if split == "train":
            self.boxes = {k: [(b, 1.0) for b in dict.fromkeys(r[0] for r in rows)] for k, rows in self.ground_truth.items()}
        else:
            detected = read_boxes(ann / "ava_val_predicted_boxes.csv", scored=True)
            self.boxes = {k: [(b, s) for b, _, s in rows if s >= threshold] for k, rows in detected.items()}
            self.boxes = {k: v for k, v in self.boxes.items() if v}
        absent = sorted({v for v, _ in self.boxes if v not in self.videos})
        if absent:
            raise DatasetFormatError(f"{root / 'frame_lists' / (split + '.csv')} lists no frames of video "
                                     f"{absent[0]} ({len(absent)} videos in all)")
        self.keys = sorted(self.boxes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keys)

    def clip_indices(self, n_frames: int, second: int) -> np.ndarray:
        """Frame indices (0-based) of the clip centred on a key frame, clamped to the video."""
        centre = (second - FIRST_SECOND) * FPS
        offsets = (np.arange(self.frames) - self.frames // 2) * self.stride
        return np.clip(centre + offsets, 0, n_frames - 1)

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """``(W, H)`` of a frame resized to the short side, keeping its aspect ratio; test
        frames round each side to a multiple of ``multiple``."""
        scale = self.short_side / min(width, height)
        w, h = round(width * scale), round(height * scale)
        if not self.train:
            w, h = (max(self.multiple, round(x / self.multiple) * self.multiple) for x in (w, h))
        return w, h

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        video, second = key = self.keys[index]
        paths = self.videos[video]
        frames = []
        for i in self.clip_indices(len(paths), second):
            path = self.root / "frames" / paths[int(i)]
            try:
                with Image.open(path) as img:
                    image = img.convert("RGB")
                    image = image.resize(self.resized(*image.size), Image.BILINEAR)
            except OSError as err:
                raise DatasetFormatError(f"{path} is not a readable frame ({err})") from None
            frames.append(np.asarray(image))
        clip = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).contiguous()  # (3, T, H, W)
        H, W = clip.shape[-2:]
        normalised = torch.tensor([b for b, _ in self.boxes[key]], dtype=torch.float32).reshape(-1, 4)
        boxes = normalised * torch.tensor([W, H, W, H])
        scores = torch.tensor([s for _, s in self.boxes[key]], dtype=torch.float32)
        labels = torch.zeros(len(boxes), len(self.class_ids))
        if self.train:
            for i, (b, _) in enumerate(self.boxes[key]):
                for box, action, _ in self.ground_truth.get(key, []):
                    if box == b and action in self.index_of:
                        labels[i, self.index_of[action]] = 1
            rng = np.random.default_rng([self.seed, self.epoch, index])
            clip, boxes, keep = self._crop(clip, boxes, rng)
            labels, scores = labels[keep], scores[keep]
            if rng.random() < 0.5:  # random flip
                clip = clip.flip(-1)
                boxes = torch.stack([self.size - boxes[:, 2], boxes[:, 1], self.size - boxes[:, 0], boxes[:, 3]], 1)
        return {"video": clip, "boxes": boxes, "labels": labels, "scores": scores, "key": key}

    def _crop(self, clip: Tensor, boxes: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """A random ``size`` x ``size`` crop that keeps at least one box when one of a few
        draws does; boxes are shifted and clipped, those cut off entirely dropped."""
        H, W = clip.shape[-2:]
        for attempt in range(10):
            top, left = int(rng.integers(0, H - self.size + 1)), int(rng.integers(0, W - self.size + 1))
            shifted = boxes - torch.tensor([left, top, left, top], dtype=torch.float32)
            clipped = shifted.clamp(0, self.size)
            keep = (clipped[:, 2] - clipped[:, 0] > 1) & (clipped[:, 3] - clipped[:, 1] > 1)
            if keep.any() or len(boxes) == 0:
                break
        return clip[..., top:top + self.size, left:left + self.size], clipped[keep], keep


def write_ava_like(root: str | os.PathLike, videos: int = 6, seconds: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A small set in AVA's formats: a grey scene with one or two people (tall rectangles)
    per key frame, each doing one of three actions: standing still (AVA id 12, "stand"),
    walking to the right (14, "walk") or waving an arm (17, "carry/hold" stands in for a
    visible arm motion). Videos ``v0..`` go to train, the last third to val, whose detection
    file holds the true boxes at 0.9 and one distractor at 0.3."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    actions = {12: "stand", 14: "walk", 17: "carry/hold (an object)", 80: "watch (a person)"}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "frame_lists").mkdir(exist_ok=True)
    entries = "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n  label_type: PERSON_MOVEMENT\n}}\n'
                      for i, n in actions.items())
    (root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(entries)
    n_frames = (seconds + 2) * FPS
    rows = {"train": [], "val": []}
    lists = {"train": [], "val": []}
    detections = []
    for v in range(videos):
        split = "val" if v >= videos - max(1, videos // 3) else "train"
        vid = f"v{v:03d}"
        (root / "frames" / vid).mkdir(parents=True, exist_ok=True)
        people = []
        for p in range(int(rng.integers(1, 3))):
            action = int(rng.choice([12, 14, 17]))
            x = float(rng.uniform(0.1, 0.45)) + 0.4 * p
            people.append((p, action, x))
        base = rng.normal(110, 8, size=(size, size, 3))
        for f in range(n_frames):
            image = base.copy()
            for p, action, x in people:
                shift = 0.0015 * f if action == 14 else 0.0
                x0 = int((x + shift) % 0.85 * size)
                w, y0, h = size // 8, size // 4, size // 2
                image[y0:y0 + h, x0:x0 + w] = (200, 80, 60) if p == 0 else (60, 90, 200)
                if action == 17:  # a waving arm
                    arm = y0 + int((np.sin(f / 3) + 1) * h / 4)
                    image[arm:arm + 3, x0 + w:min(size, x0 + 2 * w)] = (240, 240, 240)
            name = f"{vid}/{vid}_{f + 1:06d}.jpg"
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "frames" / name, quality=90)
            lists[split].append(f"{vid} {v} {f} {name} \"\"")
        for second in range(FIRST_SECOND + 1, FIRST_SECOND + 1 + seconds):
            f = (second - FIRST_SECOND) * FPS
            for p, action, x in people:
                shift = 0.0015 * f if action == 14 else 0.0
                x0 = ((x + shift) % 0.85 * size) / size
                box = (round(x0, 3), 0.25, round(min(1.0, x0 + 0.125 + 0.125 * (action == 17)), 3), 0.75)
                rows[split].append(f"{vid},{second},{box[0]},{box[1]},{box[2]},{box[3]},{action},{p}")
                if rng.random() < 0.3:  # some people also watch someone
                    rows[split].append(f"{vid},{second},{box[0]},{box[1]},{box[2]},{box[3]},80,{p}")
                if split == "val":
                    detections.append(f"{vid},{second},{box[0]},{box[1]},{box[2]},{box[3]},,0.9")
            if split == "val":
                detections.append(f"{vid},{second},0.0,0.0,0.1,0.2,,0.3")
    for split in ("train", "val"):
        (root / "annotations" / f"ava_{split}_v2.2.csv").write_text("\n".join(rows[split]) + "\n")
        (root / "frame_lists" / f"{split}.csv").write_text(
            "original_vido_id video_id frame_id path labels\n" + "\n".join(lists[split]) + "\n")
    (root / "annotations" / "ava_val_predicted_boxes.csv").write_text("\n".join(detections) + "\n")
    return root
