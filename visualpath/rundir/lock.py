"""One writer per run directory: an exclusive ``flock`` held for the life of a run, and a
command that ends before it trained leaves the folder as it found it."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

from visualpath.atomic import atomic_write
from visualpath.errors import Refused
from visualpath.rundir.files import CURRENT, check_links

__all__ = ["RunLock", "RunDirBusy", "FolderAsFound"]

log = logging.getLogger(__name__)


class RunDirBusy(Refused):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory for the life of a run (``run_dir/.lock``).

    The kernel drops the lock when its holder exits in any way, so a lock file left by a dead
    process never blocks; the file names the holder's PID for the message another run gets.
    Use as a context manager; without ``fcntl`` (not POSIX) it does nothing.

    A command that ends in any exception before a checkpoint of it was selected (a refusal, a
    stop before training, Ctrl-C, a full disk) leaves the folder as it found it
    (:class:`FolderAsFound`), the lock file included.
    """

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / ".lock"
        self._fd: int | None = None
        self._found: FolderAsFound | None = None

    def __enter__(self) -> RunLock:
        self._found = FolderAsFound(self.path.parent)
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
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        except OSError:  # e.g. a full disk: nothing of this command stays
            self.__exit__(OSError, None, None)
            raise
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is not None and self._found is not None:
            self._found.restore()  # while the lock is held: no other writer sees the folder half restored
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


class FolderAsFound:
    """What a run directory held when a command started, to put back if the command ends
    before training anything: files and folders it added are removed (the directory itself,
    and the parents it needed, if they were not there), top-level files it rewrote
    (``config.json``, ``pathway.json``, ...) get their bytes back. A command that selected a
    checkpoint keeps everything: what it trained is never thrown away (decision R13).
    """

    KEEP_BYTES = 64 * 2**20  # top-level files up to this much in all are kept to be put back

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.first_new = None  # the topmost folder that does not exist yet
        for folder in (self.root, *self.root.parents):
            if folder.exists() or folder.is_symlink():
                break
            self.first_new = folder
        self.names = set(os.listdir(self.root)) if self.first_new is None and self.root.is_dir() else set()
        self.files: dict[str, bytes] = {}
        budget = self.KEEP_BYTES
        for name in sorted(self.names):
            path = self.root / name
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= budget:
                self.files[name] = path.read_bytes()
                budget -= len(self.files[name])
        self.selected = self._selected()

    def _selected(self) -> dict[str, str]:
        """Each stage's selected checkpoint unit (its ``current`` link)."""
        if not self.root.is_dir():
            return {}
        out = {}
        for entry in os.scandir(self.root):
            link = Path(entry.path, CURRENT)
            if entry.is_dir(follow_symlinks=False) and link.is_symlink():
                out[entry.name] = os.readlink(link)
        return out

    def restore(self) -> None:
        """Put the folder back, unless a checkpoint was selected since (then nothing changes)."""
        if self._selected() != self.selected:
            return
        try:
            if self.first_new is not None:
                shutil.rmtree(self.first_new, ignore_errors=True)
                return
            for name in set(os.listdir(self.root)) - self.names:
                path = self.root / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            for name, data in self.files.items():
                path = self.root / name
                if not path.is_file() or path.is_symlink() or path.read_bytes() != data:
                    atomic_write(path, data)
        except OSError as err:  # what could not be put back stays, and is said
            log.warning("could not put %s back as it was (%s)", self.root, err.strerror or err)
