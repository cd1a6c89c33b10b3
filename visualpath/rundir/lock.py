"""One writer per run directory: an exclusive ``flock`` held for the life of a run."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from visualpath.errors import Refused
from visualpath.rundir.files import check_links

__all__ = ["RunLock", "RunDirBusy"]

log = logging.getLogger(__name__)


class RunDirBusy(Refused):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory for the life of a run (``run_dir/.lock``).

    The kernel drops the lock when its holder exits in any way, so a lock file left by a dead
    process never blocks; the file names the holder's PID for the message another run gets.
    Use as a context manager; without ``fcntl`` (not POSIX) it does nothing.
    """

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_links(self.path.parent)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as err:
            raise RunDirBusy(f"run_dir={str(self.path.parent)!r}: cannot open its lock file {self.path} "
                             f"({err.strerror}); choose a run_dir you can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)  # a filesystem without flock (some NFS or Lustre mounts): run unlocked, and say so
                log.warning("run_dir %s cannot be locked on this filesystem (%s): make sure one run at a time "
                            "writes it", self.path.parent, err.strerror)
                return self
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"PID {holder[0]}" if holder else "another process"
            raise RunDirBusy(f"run_dir={str(self.path.parent)!r} is in use by {who}; wait for that run to end or "
                             "choose another run_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
