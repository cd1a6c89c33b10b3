"""What a run writes as it goes: ``config.json``, ``metrics.jsonl`` (and TensorBoard events),
``broken_files.json``; only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from visualpath.atomic import atomic
from visualpath.errors import Refused
from visualpath.rundir.files import append_line, check_links, read_json

if TYPE_CHECKING:
    from visualpath.runtime import Runtime

__all__ = ["RunLog", "git_revision"]


def git_revision(path: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _after(line: str, stage: str, step: int) -> bool:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return False
    return (isinstance(record, dict) and record.get("stage") == stage and isinstance(record.get("step", 0), int)
            and record.get("step", 0) > step)


class RunLog:
    """A run directory: ``config.json``, ``metrics.jsonl`` and per-stage checkpoints.

    Only rank 0 writes. With ``tensorboard=True`` the numeric metrics also go to TensorBoard
    event files in ``root/tensorboard`` (tag ``stage/name``, at the record's ``step``); this
    needs the ``tensorboard`` package (``pip install tensorboard``) and says so otherwise.
    """

    def __init__(self, root: str | Path, runtime: Runtime, tensorboard: bool = False) -> None:
        self.root, self.runtime = Path(root), runtime
        self._writer = None
        if runtime.main:
            self.root.mkdir(parents=True, exist_ok=True)
            check_links(self.root)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as err:
                    raise Refused(f"tensorboard=true needs the tensorboard package (pip install tensorboard): "
                                     f"{err}") from None
                self._writer = SummaryWriter(str(self.root / "tensorboard"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        if self.runtime.main:
            payload = {"config": config, "git_revision": git_revision(), "world_size": self.runtime.world,
                       "device": str(self.runtime.device), "torch": torch.__version__}
            atomic(self.root / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))

    def metrics(self, stage: str, **values: Any) -> None:
        if self.runtime.main:
            record = {"stage": stage, "time": time.time(), **values}
            append_line(self.root / "metrics.jsonl", json.dumps(record))
            if self._writer is not None:
                step = int(values.get("step", 0))
                for name, value in values.items():
                    if name not in ("step", "epoch") and isinstance(value, (int, float)):
                        self._writer.add_scalar(f"{stage}/{name}", value, step)
                self._writer.flush()

    def trim_metrics(self, stage: str, step: int) -> None:
        """Drop ``stage``'s records past ``step`` (logged after the checkpoint a run resumes
        from, and logged again as it continues): one record per step."""
        path = self.root / "metrics.jsonl"
        if not self.runtime.main or not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if not _after(line, stage, step)]
        if len(kept) != len(lines):
            atomic(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in kept)))

    def broken_files(self, stage: str, files: Mapping[str, str], short: Mapping[str, str] | None = None) -> None:
        """``broken_files.json``: each stage's unreadable files and why, each file once, and
        under ``short`` the videos it used that are shorter than a clip (decision R13)."""
        if not self.runtime.main:
            return
        path = self.root / "broken_files.json"
        listed = read_json(path, "the unreadable files of each stage") if path.is_file() else {}
        short = dict(short or {})
        if not files and not short and stage not in listed:
            return
        listed[stage] = {"count": len(files), "files": dict(sorted(files.items()))}
        if short:
            listed[stage]["short"] = {"count": len(short), "files": dict(sorted(short.items()))}
        atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(listed, indent=2)))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage
