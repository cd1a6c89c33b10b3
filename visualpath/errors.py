"""The one error type a command turns into a one-line refusal.

Every entry point (the recipes, ``python -m analysis`` and its subcommands, export,
precompute, the benchmarks) catches :class:`Refused` and prints its message as one line,
``error: ...``, with no traceback. A library raises it (or a subclass: a bad graph, a bad
setting, untrusted code, damaged weights, a busy run directory) for anything that is the
caller's input rather than a defect of the code: the message names the file, field or value
and says what to do. It is a ``ValueError``, so code that caught ``ValueError`` before still
catches it.
"""

from __future__ import annotations

import errno

__all__ = ["Refused", "SpecError", "one_line", "shown", "no_space", "exit_if_disk_full"]


class Refused(ValueError):
    """A request refused before (or instead of) compute; the message is the whole story."""


class SpecError(Refused):
    """A graph description that cannot be read: the message names the field."""


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (a library's multi-line message joined with ``; ``), any
    other control character escaped (:func:`shown`): names in it may come from files."""
    text = str(err).strip() or type(err).__name__
    return shown("; ".join(line.strip() for line in text.splitlines() if line.strip()))


def shown(text: object) -> str:
    """``text`` safe to print: control characters (terminal escapes, newlines) as Python
    escapes, so a name read from a file cannot redraw the terminal or split a message."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


_FULL = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")


def no_space(err: BaseException) -> str | None:
    """The one line for a write that found the disk full -- ``ENOSPC`` or ``EDQUOT``, or a
    library's error that says so (safetensors, matplotlib), directly or as the cause of
    another -- else None. Every command prints it as ``error: ...`` (exit 1); what it was
    writing is left whole or not at all."""
    seen: set[int] = set()
    found: BaseException | None = err
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        code = getattr(found, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT) or any(mark in str(found) for mark in _FULL):
            name = getattr(found, "filename", None)
            where = f" while writing {shown(name)}" if name else ""
            return f"no space left on the device{where}"
        found = found.__cause__ or found.__context__
    return None


def exit_if_disk_full(err: BaseException, then: str = "run the same command again") -> int:
    """A command's answer to ``err`` when it is a full disk (:func:`no_space`): the one line
    ``error: no space left ...: free some space and <then>`` on stderr, and exit status 1.
    Any other error is raised again, as it was."""
    import sys

    full = no_space(err)
    if full is None:
        raise err
    print(f"error: {full}: free some space and {then}", file=sys.stderr)
    return 1
