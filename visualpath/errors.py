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

__all__ = ["Refused", "SpecError", "one_line", "shown"]


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
