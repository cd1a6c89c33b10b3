"""A scheduler's signal from the first moment of ``python -m recipes.NAME``: noted, not fatal.

Importing torch takes seconds; a SIGTERM, SIGUSR1 or SIGUSR2 (or Ctrl-C) in that time would
otherwise kill the command with nothing said. ``recipes/__init__.py`` installs these handlers
when a recipe runs as ``__main__`` (only then: importing ``recipes`` from Python changes no
handler), using the standard library alone; :func:`recipes.cli.main` takes what they noted
into the command's :class:`visualpath.preemption.PreemptionWatch` (decision R9).
"""

from __future__ import annotations

import signal
import time

NOTED: dict[str, float | int | None] = {"signum": None, "at": None, "interrupt": None}


def _note(signum, frame) -> None:
    if NOTED["signum"] is None:
        NOTED["signum"], NOTED["at"] = signum, time.monotonic()


def _interrupt(signum, frame) -> None:
    NOTED["interrupt"] = time.monotonic()


def install() -> None:
    for name in ("SIGTERM", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), _note)
    signal.signal(signal.SIGINT, _interrupt)


def restore_interrupt() -> bool:
    """Ctrl-C back to Python's own (``KeyboardInterrupt``); whether one came before."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return NOTED["interrupt"] is not None
