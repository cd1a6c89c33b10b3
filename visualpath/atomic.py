"""Files written whole or not at all, readable by colleagues on shared storage, and the one
SHA-256 helper every record of a file's content uses (checkpoints, carried code)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["file_mode", "atomic", "atomic_write", "sha256"]


def file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under this process's umask (``mkstemp``
    makes 0600, which colleagues on shared storage cannot read)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place: a
    kill at any instant leaves the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (:func:`atomic`)."""
    raw = data.encode() if isinstance(data, str) else data
    atomic(Path(path), lambda tmp: Path(tmp).write_bytes(raw))


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
