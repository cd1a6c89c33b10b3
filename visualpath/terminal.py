"""The console a person watches: rich on a terminal, one plain message per line in a log.

Redirected to a file (a batch job, ``nohup``, ``2>log``), rich would wrap every message at 80
columns and squeeze tables until their headers are cut; a log wants each message on one line,
whole, so that ``grep`` finds it with what it names. Progress bars draw only on a terminal.
"""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["console", "LOG_WIDTH"]

LOG_WIDTH = 200  # a table in a log file is laid out at its natural width, up to this many columns


def console(stderr: bool = False, quiet: bool = False) -> Console:
    """A rich console on standard output (or error): rich's own on a terminal; otherwise no
    hard wraps (``soft_wrap``), tables up to :data:`LOG_WIDTH` columns, no colour codes."""
    stream = sys.stderr if stderr else sys.stdout
    if getattr(stream, "isatty", lambda: False)():
        return Console(stderr=stderr, quiet=quiet)
    return Console(stderr=stderr, quiet=quiet, soft_wrap=True, width=LOG_WIDTH, no_color=True,
                   force_terminal=False)
