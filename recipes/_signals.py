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
SCHEDULER = ("SIGTERM", "SIGUSR1", "SIGUSR2")
installed = False  # whether this process is a recipe's command (python -m recipes.NAME)


def _note(signum, frame) -> None:
    if NOTED["signum"] is None:
        NOTED["signum"], NOTED["at"] = signum, time.monotonic()


def _interrupt(signum, frame) -> None:
    NOTED["interrupt"] = time.monotonic()


def install() -> None:
    global installed
    for name in SCHEDULER:
        signal.signal(getattr(signal, name), _note)
    signal.signal(signal.SIGINT, _interrupt)
    installed = True


def ended() -> None:
    """The command has said its last word: a scheduler's signal from now on changes nothing.
    Ignored rather than noted, because Python gives noted signals back their default action
    (death) while the interpreter shuts down."""
    if installed:
        for name in SCHEDULER:
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def restore_interrupt() -> bool:
    """Ctrl-C back to Python's own (``KeyboardInterrupt``); whether one came before."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return NOTED["interrupt"] is not None
