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
==========  ==================================================================================

:func:`check_root` verifies the layout without reading any video, so a recipe rejects a
wrong ``data.root`` before any compute; :func:`video_split` returns the records of the
training or the evaluation part.
"""

from __future__ import annotations

import os
from pathlib import Path

from visualpath.data.formats import DatasetFormatError, VideoRecord, read_hmdb51, read_kinetics_csv, read_ssv2
from visualpath.data.formats import read_ucf101

__all__ = ["VIDEO_FORMATS", "check_root", "video_split", "image_split"]

VIDEO_FORMATS = ("ucf101", "hmdb51", "kinetics", "ssv2")

_EXPECTED = {
    "ucf101": "UCF-101/ and ucfTrainTestlist/ (official layout)",
    "hmdb51": "hmdb51_org/ (or videos/) and testTrainMulti_7030_splits/ (or splits/)",
    "kinetics": "annotations/train.csv, annotations/validate.csv (or val.csv), train/ and val/ (or validate/)",
    "ssv2": "labels/labels.json, labels/train.json, labels/validation.json and 20bn-something-something-v2/ "
            "(or videos/)",
    "imagenet": "train/<class>/ and val/<class>/ image folders",
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
    if fmt == "imagenet":
        return {"train": _first(root, "train"), "val": _first(root, "val")}
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
