"""Readers for the official list formats of the video datasets the paper uses.

Each reader returns ``(records, classes)``: a list of :class:`VideoRecord` (path, 0-based
label) and the class names in label order. Errors name the file and the expected format.

========  ===============================================================================
dataset   layout read
========  ===============================================================================
UCF101    ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``; ``ucfTrainTestlist/classInd.txt``
          (``"1 ApplyEyeMakeup"``), ``trainlist0{1,2,3}.txt`` (``"Class/file.avi 1"``,
          1-based labels), ``testlist0{1,2,3}.txt`` (``"Class/file.avi"``, no label). CRLF
          line endings and the ``HandStandPushups`` / ``HandstandPushups`` case mismatch of
          the official files are handled.
HMDB51    ``<video_root>/<class>/<name>.avi``; ``<split_root>/<class>_test_split{1,2,3}.txt``
          with ``"<name>.avi 1"`` lines (1 train, 2 test, 0 unused).
K400      the ActivityNet CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``) with
          files ``<root>/<label>/<id>_<start:06d>_<end:06d>.mp4`` or ``<root>/<id>_...mp4``;
          or the VideoMAE list format (``"path label"``, space or comma separated).
SSv2      ``labels.json`` (``{"Template text": "index"}``), ``train.json`` /
          ``validation.json`` (``[{"id", "template", ...}]``), ``<root>/<id>.webm``.
========  ===============================================================================
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from visualpath.errors import Refused

__all__ = [
    "VideoRecord",
    "read_ucf101",
    "read_hmdb51",
    "read_kinetics_csv",
    "read_path_label_list",
    "read_ssv2",
    "DatasetFormatError",
]

log = logging.getLogger(__name__)


class DatasetFormatError(Refused):
    """A split file, list or folder that is missing or not in the expected format (a
    :class:`~visualpath.errors.Refused`, so every command prints it in one line)."""


@dataclass(frozen=True)
class VideoRecord:
    """One video: its file and 0-based label (-1 when unlabelled)."""

    path: Path
    label: int


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DatasetFormatError(f"missing {what}: expected the file {path}")
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    return [line.strip() for line in text.splitlines() if line.strip()]


class _CaseInsensitive:
    """Resolve relative paths whose case differs from the disk (UCF101's HandstandPushups)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[Path, dict[str, str]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._dirs:
            try:
                self._dirs[folder] = {p.lower(): p for p in os.listdir(folder)}
            except OSError:
                self._dirs[folder] = {}
        return self._dirs[folder]

    def __call__(self, relative: str) -> Path:
        path = self.root / relative
        if path.exists():
            return path
        folder = self.root
        for part in Path(relative).parts:
            folder = folder / self._listing(folder).get(part.lower(), part)
        return folder


def read_ucf101(root: str | os.PathLike, split: int = 1, train: bool = True) -> tuple[list[VideoRecord], list[str]]:
    """UCF101's official split ``split`` (1-3), train or test part.

    Args:
        root: folder holding ``UCF-101/`` and ``ucfTrainTestlist/``.
    """
    root = Path(root)
    if split not in (1, 2, 3):
        raise DatasetFormatError(f"UCF101 split must be 1, 2 or 3, got {split}")
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    if not videos.is_dir():
        raise DatasetFormatError(f"UCF101: expected the video folder {videos} (UCF-101/<Class>/*.avi)")
    classes, index = [], {}
    for line in _lines(lists / "classInd.txt", "UCF101 class index ('1 ApplyEyeMakeup' per line)"):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetFormatError(f"{lists / 'classInd.txt'}: expected '<index> <ClassName>', got {line!r}")
        classes.append(parts[1])
        index[parts[1].lower()] = int(parts[0]) - 1
    if not classes:
        raise DatasetFormatError(f"{lists / 'classInd.txt'}: empty class list")
    name = f"{'trainlist' if train else 'testlist'}0{split}.txt"
    resolve = _CaseInsensitive(videos)
    records = []
    for line in _lines(lists / name, f"UCF101 {'train' if train else 'test'} list"):
        # '<Class>/<file> [label]': a file name may hold spaces, so the label is a trailing integer
        # after the file's extension, and everything before it is the path
        labelled = re.fullmatch(r"(.*\.\w+)\s+(\d+)", line.strip())
        parts = [labelled.group(1), labelled.group(2)] if labelled else [line.strip()]
        relative = parts[0].replace("\\", "/")
        if ".." in relative.split("/") or relative.startswith("/"):
            raise DatasetFormatError(f"{lists / name}: {relative!r} leads outside UCF-101/: a list names files "
                                     "inside the set's folder")
        folder = relative.split("/")[0].lower()
        if folder not in index:
            raise DatasetFormatError(f"{lists / name}: class folder of {relative!r} is not in classInd.txt")
        label = index[folder]
        if len(parts) > 1:
            if int(parts[1]) - 1 != label:
                raise DatasetFormatError(
                    f"{lists / name}: {relative!r} is listed with label {parts[1]} but its folder is class {label + 1}"
                )
        records.append(VideoRecord(resolve(relative), label))
    return records, classes


def read_hmdb51(video_root: str | os.PathLike, split_root: str | os.PathLike, split: int = 1,
                train: bool = True) -> tuple[list[VideoRecord], list[str]]:
    """HMDB51's official splits (``<class>_test_split<k>.txt``: 1 train, 2 test, 0 unused)."""
    video_root, split_root = Path(video_root), Path(split_root)
    if split not in (1, 2, 3):
        raise DatasetFormatError(f"HMDB51 split must be 1, 2 or 3, got {split}")
    if not split_root.is_dir():
        raise DatasetFormatError(f"HMDB51: expected the split folder {split_root} (<class>_test_split1.txt ...)")
    files = sorted(split_root.glob(f"*_test_split{split}.txt"))
    if not files:
        raise DatasetFormatError(f"HMDB51: no '<class>_test_split{split}.txt' files in {split_root}")
    classes = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    wanted = "1" if train else "2"
    records = []
    for label, (cls, f) in enumerate(zip(classes, files)):
        for line in _lines(f, "HMDB51 split file"):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetFormatError(f"{f}: expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[1] == wanted:
                records.append(VideoRecord(video_root / cls / parts[0], label))
    return records, classes


def read_kinetics_csv(root: str | os.PathLike, csv_file: str | os.PathLike,
                      classes: list[str] | None = None) -> tuple[list[VideoRecord], list[str]]:
    """Kinetics' CSV (``label,youtube_id,time_start,time_end,split``).

    Files are looked up as ``<root>/<label>/<id>_<start:06d>_<end:06d>.mp4`` (the ActivityNet
    downloader) or ``<root>/<id>_<start:06d>_<end:06d>.mp4`` (flat copies). Classes are the
    sorted labels of the CSV unless given (pass the training classes for the validation CSV).
    """
    root, csv_file = Path(root), Path(csv_file)
    if not csv_file.is_file():
        raise DatasetFormatError(f"missing Kinetics CSV: expected the file {csv_file}")
    with open(csv_file, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise DatasetFormatError(
            f"{csv_file}: expected a header 'label,youtube_id,time_start,time_end,split', "
            f"got {list(rows[0]) if rows else 'no rows'}"
        )
    classes = classes or sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for r in rows:
        if r["label"] not in index:
            raise DatasetFormatError(f"{csv_file}: label {r['label']!r} is not one of the {len(classes)} classes")
        stem = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        path = root / r["label"] / f"{stem}.mp4"
        if not path.exists():
            flat = root / f"{stem}.mp4"
            path = flat if flat.exists() else path
        records.append(VideoRecord(path, index[r["label"]]))
    return records, classes


def read_path_label_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None,
                         classes: list[str] | None = None) -> tuple[list[VideoRecord], list[str]]:
    """The VideoMAE list format: one ``"path label"`` per line (space or comma separated).

    Relative paths are joined to ``root``. Without ``classes`` the names are ``"0"``, ``"1"``...
    up to the largest label.
    """
    list_file = Path(list_file)
    base = Path(root) if root is not None else list_file.parent
    records = []
    for line in _lines(list_file, "video list ('path label' per line)"):
        parts = line.replace(",", " ").split()
        if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
            raise DatasetFormatError(f"{list_file}: expected '<path> <integer label>', got {line!r}")
        path = Path(" ".join(parts[:-1]))
        if ".." in path.parts:
            raise DatasetFormatError(f"{list_file}: {str(path)!r} steps out of a folder with '..': a list names "
                                     f"files inside {base} or by an absolute path")
        records.append(VideoRecord(path if path.is_absolute() else base / path, int(parts[-1])))
    if not records:
        raise DatasetFormatError(f"{list_file}: no videos listed")
    n = max(r.label for r in records) + 1
    return records, classes or [str(i) for i in range(n)]


def read_ssv2(root: str | os.PathLike, labels_json: str | os.PathLike,
              split_json: str | os.PathLike) -> tuple[list[VideoRecord], list[str]]:
    """Something-Something v2: template labels, JSON splits, ``<id>.webm`` files."""
    root, labels_json, split_json = Path(root), Path(labels_json), Path(split_json)
    for f, what in ((labels_json, "labels.json ({'Template': 'index'})"), (split_json, "split JSON ([{'id', 'template'}])")):
        if not f.is_file():
            raise DatasetFormatError(f"missing SSv2 {what}: expected the file {f}")
    labels = json.loads(labels_json.read_text())
    if not isinstance(labels, dict) or not labels:
        raise DatasetFormatError(f"{labels_json}: expected a non-empty object {{'Template text': 'index'}}")
    classes = [""] * len(labels)
    for text, i in labels.items():
        classes[int(i)] = text
    entries = json.loads(split_json.read_text())
    if not isinstance(entries, list):
        raise DatasetFormatError(f"{split_json}: expected a list of {{'id', 'template'}} objects")
    records = []
    for e in entries:
        if "id" not in e or "template" not in e:
            raise DatasetFormatError(f"{split_json}: entry {e!r} lacks 'id' or 'template'")
        template = e["template"].replace("[", "").replace("]", "")
        if template not in labels:
            raise DatasetFormatError(f"{split_json}: template {template!r} is not in {labels_json.name}")
        records.append(VideoRecord(root / f"{e['id']}.webm", int(labels[template])))
    return records, classes
