"""A run's files read back as someone else's input: JSON checked to be what it should hold,
and the rule that nothing is read or written through a link the run did not make itself."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from visualpath.errors import Refused, shown

__all__ = ["CURRENT", "LinkedRun", "append_line", "check_links", "metrics_records", "read_json", "run_config"]

CURRENT = "current"  # a stage's link to its selected checkpoint unit (:mod:`visualpath.rundir.checkpoint`)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def read_json(path: str | Path, what: str, kind: type = dict) -> Any:
    """The JSON document ``path`` holds, which must be ``kind`` (an object by default).

    Raises:
        Refused: in one line naming the file: unreadable, not JSON (where), nested too deeply,
            or another kind of value; ``what`` says what the file should be.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise Refused(f"{shown(path)} cannot be read as text ({getattr(err, 'strerror', None) or err}): "
                      f"it should hold {what}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise Refused(f"{shown(path)} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): "
                      f"it should hold {what}") from None
    except RecursionError:
        raise Refused(f"{shown(path)} is nested too deeply to be {what}") from None
    if not isinstance(value, kind):
        raise Refused(f"{shown(path)} holds {_kind(value)}, not {_kind(kind())}: it should hold {what}")
    return value


def run_config(run_dir: str | Path) -> dict:
    """The settings a run was started with (``config.json``'s ``"config"`` object; ``{}`` when
    the run has no config.json), its sections checked to be objects."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return {}
    saved = read_json(path, 'a run\'s settings, {"config": {...}}')
    config = saved.get("config")
    if not isinstance(config, dict):
        raise Refused(f"{shown(path)} has no \"config\" object (it holds {_kind(config)}): not a run's settings")
    for section, value in config.items():
        if section in ("model", "data", "ventral", "joint", "finetune", "test") and not isinstance(value, dict):
            raise Refused(f"{shown(path)}: config.{section} is {_kind(value)}, not an object")
    return config


def metrics_records(path: str | Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one JSON object per line (blank lines skipped).

    Raises:
        Refused: naming the file and the line that is not a JSON object.
    """
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise Refused(f"{shown(path)} cannot be read as text ({getattr(err, 'strerror', None) or err})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise Refused(f"{shown(path)}, line {number}: not a JSON record ({getattr(err, 'msg', 'nested too deeply')})"
                          ) from None
        if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
            raise Refused(f"{shown(path)}, line {number}: not a metrics record (a JSON object with a \"stage\")")
        records.append(record)
    return records


class LinkedRun(Refused):
    """A run directory holding a symbolic link it did not make: a write through it would
    land outside the run (a shared run is an archive, and archives carry links)."""


_UNIT = re.compile(r"ckpt-[A-Za-z0-9_.-]+")


def _own_link(rel: tuple[str, ...], target: str) -> bool:
    """The links a run makes itself, all inside one stage folder: ``STAGE/current`` -> a
    checkpoint unit beside it, ``STAGE/NAME`` -> ``current/NAME`` (and their temporaries,
    ``.current.link``, ``.NAME.link``, while a checkpoint is selected)."""
    if len(rel) != 2:
        return False
    name = rel[1]
    if name.startswith(".") and name.endswith(".link"):
        name = name[1:-len(".link")]
    if name == CURRENT:
        return _UNIT.fullmatch(target) is not None
    return "/" not in name and name not in ("", ".", "..") and target == f"{CURRENT}/{name}"


def check_links(root: str | Path) -> Path:
    """Refuse a run directory that holds a symbolic link other than the run's own
    (:func:`_own_link`), naming the first; returns ``root`` resolved (a run directory reached
    through a link of the reader's own, such as ``runs -> /scratch/runs``, is followed once,
    here). Every consumer that writes into a run checks this first, so no write follows a link
    planted in a shared run out of it."""
    root = Path(root)
    if not root.exists():
        return root.absolute()
    root = root.resolve()
    for folder, dirs, files in os.walk(root):  # links to folders are listed, never entered
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            if not _own_link(path.relative_to(root).parts, target):
                raise LinkedRun(f"{shown(path)} is a symbolic link (to {shown(target)}): a run's files and folders "
                                "are never links but for a stage's checkpoint selection, and a write through it would "
                                "leave the run; remove the link, or open a copy of the run made without links")
    return root


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``, whole or not at all (a full disk leaves the
    file as it was), never through a symbolic link (the file is created if missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    size = os.fstat(fd).st_size
    try:
        data = (line + "\n").encode()
        while data:
            data = data[os.write(fd, data):]
    except BaseException:
        os.ftruncate(fd, size)  # no half line for a reader to trip on
        raise
    finally:
        os.close(fd)
