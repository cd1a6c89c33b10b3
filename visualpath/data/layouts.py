"""Where each dataset's files live under one ``data.root``, as their official releases unpack.

==========  ==================================================================================
format      expected under ``root``
==========  ==================================================================================
ucf101      ``UCF-101/<Class>/*.avi`` and ``ucfTrainTestlist/`` (classInd, train/test lists)
hmdb51      ``hmdb51_org/<class>/*.avi`` (or ``videos/``) and ``testTrainMulti_7030_splits/``
            (or ``splits/``) holding ``<class>_test_split<k>.txt``
kinetics    ``annotations/{train,validate}.csv`` (or ``val.csv``) and the videos in ``train/``
            and ``val/`` (or ``validate/``), each as ``<label>/<id>_<start>_<end>.mp4`` or flat
ssv2        ``labels/`` with ``labels.json``, ``train.json``, ``validation.json`` (the
            ``something-something-v2-`` prefix is optional) and the videos in
            ``20bn-something-something-v2/`` (or ``videos/``) as ``<id>.webm``
imagenet    ``train/<class>/*`` and ``val/<class>/*`` image folders
lists       your own videos, VideoMAE's lists: ``train.csv`` and ``val.csv`` (``.txt`` too), one
            ``path label`` per line (paths relative to ``root``); ``classes.txt`` (one name per
            line, in label order) is optional
folders     your own videos, one sub-folder per class: ``train/<class>/*`` and ``val/<class>/*``
unlabeled   your own videos without labels, anywhere under ``root``: pretraining only
==========  ==================================================================================

:func:`check_root` verifies the layout without reading any video, so a recipe rejects a
wrong ``data.root`` before any compute; :func:`video_split` returns the records of the
training or the evaluation part.
"""

from __future__ import annotations

import os
from pathlib import Path

from visualpath.data.formats import DatasetFormatError, VideoRecord, read_hmdb51, read_kinetics_csv, read_ssv2
from visualpath.data.contours import VIDEO_EXTENSIONS, find_videos
from visualpath.data.formats import read_path_label_list, read_ucf101

__all__ = ["VIDEO_FORMATS", "UNLABELED", "check_root", "video_split", "image_split"]

VIDEO_FORMATS = ("ucf101", "hmdb51", "kinetics", "ssv2", "lists", "folders", "unlabeled")
UNLABELED = "unlabeled"  # a format with no labels: pretraining stages only

_EXPECTED = {
    "ucf101": "UCF-101/ and ucfTrainTestlist/ (official layout)",
    "hmdb51": "hmdb51_org/ (or videos/) and testTrainMulti_7030_splits/ (or splits/)",
    "kinetics": "annotations/train.csv, annotations/validate.csv (or val.csv), train/ and val/ (or validate/)",
    "ssv2": "labels/labels.json, labels/train.json, labels/validation.json and 20bn-something-something-v2/ "
            "(or videos/)",
    "imagenet": "train/<class>/ and val/<class>/ image folders",
    "lists": "train.csv and val.csv (or .txt): 'path label' per line, VideoMAE's list format",
    "folders": "train/<class>/ and val/<class>/ video folders",
    "unlabeled": "video files (any folders)",
}


def _first(root: Path, *names: str) -> Path | None:
    return next((root / n for n in names if (root / n).exists()), None)


def _parts(fmt: str, root: Path) -> dict[str, Path | None]:
    if fmt == "ucf101":
        return {"videos": _first(root, "UCF-101"), "lists": _first(root, "ucfTrainTestlist")}
    if fmt == "hmdb51":
        return {"videos": _first(root, "hmdb51_org", "videos"),
                "lists": _first(root, "testTrainMulti_7030_splits", "splits")}
    if fmt == "kinetics":
        a = root / "annotations"
        return {"train_csv": _first(a, "train.csv"), "val_csv": _first(a, "validate.csv", "val.csv"),
                "train": _first(root, "train"), "val": _first(root, "val", "validate")}
    if fmt == "ssv2":
        labels = root / "labels"
        prefix = "something-something-v2-"
        return {"labels": _first(labels, "labels.json", prefix + "labels.json"),
                "train": _first(labels, "train.json", prefix + "train.json"),
                "val": _first(labels, "validation.json", prefix + "validation.json"),
                "videos": _first(root, "20bn-something-something-v2", "videos")}
    if fmt in ("imagenet", "folders"):
        return {"train": _first(root, "train"), "val": _first(root, "val")}
    if fmt == "lists":
        return {"train": _first(root, "train.csv", "train.txt"), "val": _first(root, "val.csv", "val.txt",
                                                                              "test.csv", "test.txt")}
    if fmt == UNLABELED:
        return {}
    raise ValueError(f"data.format must be one of {list(VIDEO_FORMATS) + ['imagenet']}, got {fmt!r}")


def check_root(fmt: str, root: str | os.PathLike, key: str = "data.root") -> None:
    """Raise ``ValueError`` naming ``key`` and the expected layout when ``root`` lacks a part."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{key}={str(root)!r} is not a folder; expected it to hold {_EXPECTED[fmt]}")
    missing = [name for name, path in _parts(fmt, root).items() if path is None]
    if missing:
        raise ValueError(f"{key}={str(root)!r} must hold {_EXPECTED[fmt]} ({fmt} layout); "
                         f"missing: {', '.join(missing)}")


def video_split(fmt: str, root: str | os.PathLike, train: bool, split: int = 1) -> tuple[list[VideoRecord], list[str]]:
    """Records and class names of the training (``train=True``) or evaluation part."""
    root = Path(root)
    check_root(fmt, root)
    p = _parts(fmt, root)
    if fmt == "ucf101":
        return read_ucf101(root, split, train=train)
    if fmt == "hmdb51":
        return read_hmdb51(p["videos"], p["lists"], split, train=train)
    if fmt == "kinetics":
        _, classes = read_kinetics_csv(p["train"], p["train_csv"])  # class order from the training CSV
        if train:
            return read_kinetics_csv(p["train"], p["train_csv"], classes)
        return read_kinetics_csv(p["val"], p["val_csv"], classes)
    if fmt == "ssv2":
        return read_ssv2(p["videos"], p["labels"], p["train"] if train else p["val"])
    if fmt == "lists":
        names = root / "classes.txt"
        classes = [c.strip() for c in names.read_text().splitlines() if c.strip()] if names.is_file() else None
        records, found = read_path_label_list(p["train"] if train else p["val"], root, classes)
        if classes is None:  # the names come from both lists, so that both parts agree
            other, other_found = read_path_label_list(p["val"] if train else p["train"], root)
            found = [str(i) for i in range(max(len(found), len(other_found)))]
        bad = [r for r in records if not 0 <= r.label < len(found)]
        if bad:
            raise DatasetFormatError(f"{p['train'] if train else p['val']}: label {bad[0].label} of {bad[0].path} is "
                                     f"outside the {len(found)} classes")
        return records, found
    if fmt == "folders":
        classes = sorted(d.name for d in p["train"].iterdir() if d.is_dir())
        if not classes:
            raise DatasetFormatError(f"{p['train']}: no class folders (expected train/<class>/<video>)")
        folder = p["train"] if train else p["val"]
        records = [VideoRecord(f, label) for label, c in enumerate(classes) if (folder / c).is_dir()
                   for f in find_videos(folder / c)]
        if not records:
            raise DatasetFormatError(f"{folder}: no videos in its class folders")
        return records, classes
    if fmt == UNLABELED:
        videos = find_videos(root)
        if not videos:
            raise DatasetFormatError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
        return [VideoRecord(v, 0) for v in videos], ["unlabeled"]
    raise DatasetFormatError(f"{fmt!r} is not a video format; video formats: {list(VIDEO_FORMATS)}")


def image_split(root: str | os.PathLike, train: bool) -> Path:
    """The ``train/`` or ``val/`` image folder of an ImageNet-layout root."""
    check_root("imagenet", root, key="data.image_root")
    return Path(root) / ("train" if train else "val")


def video_set(root: str | os.PathLike | None, fmt: str, split: int, train: bool, synthetic=None
              ) -> tuple[Path, list[VideoRecord], list[str]]:
    """``(root, records, classes)`` of a video set's training or evaluation part: the
    release at ``root`` in ``fmt``'s layout, or with ``root=None`` the built-in synthetic set
    (generated first if needed, with ``synthetic``, a
    :class:`~visualpath.data.synthetic.SyntheticSpec`; UCF101's layout)."""
    if root is None:
        from visualpath.data.synthetic import SyntheticSpec, ensure_synthetic

        root, fmt = ensure_synthetic(spec=synthetic or SyntheticSpec()), "ucf101"
    records, classes = video_split(fmt, root, train, split)
    return Path(root), records, classes
