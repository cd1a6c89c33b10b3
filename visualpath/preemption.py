"""Stopping cleanly when a scheduler asks: SIGTERM, SIGUSR1 or SIGUSR2 (decision R9).

A cluster scheduler (SLURM) sends SIGTERM to every task of a job before it stops it, or the
signal a job asked for with ``--signal`` (SIGUSR1 by convention) before its time is up or it
is preempted and requeued (submitit's jobs ask for SIGUSR2); ``torchrun`` forwards SIGTERM
to its workers. :func:`fit
<visualpath.engine.fit>` listens for both while it trains: the handler only notes the signal,
every rank stops at the same optimiser step (the next one alone, the next metric record
across processes), a checkpoint is
written there, and :class:`Preempted` carries the stop to the command, which says where it
stopped and exits with :data:`EXIT_PREEMPTED`. The same command resumes exactly (decision R1).

A second signal during the checkpoint changes nothing (the handler is still ours, and the
write is atomic anyway). A recipe's command opens one watch for its whole length
(``recipes.cli.main``), so a signal that arrives outside a training step (while the command
starts, during a stage's last checkpoint, between stages, while testing) is noted too, and
the command stops at the next safe point: before anything is written, between two stages,
or at the test's next batch (:func:`stop_if_requested`). Data-loading worker processes ignore both signals, so that a signal
sent to the whole process group does not kill a worker under the loader; the loader ends them
when the stage stops.
"""

from __future__ import annotations

import signal
import threading
import time

import torch
import torch.distributed as dist

from visualpath.runtime import Runtime

__all__ = ["EXIT_PREEMPTED", "Preempted", "PreemptionWatch", "ignore_in_workers", "stop_if_requested", "SIGNALS"]

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped on request, to be run again


class Preempted(Exception):
    """A stage stopped on a scheduler's signal, after writing its checkpoint.

    Attributes:
        stage: the stage that stopped.
        step: the optimiser step its checkpoint holds.
        signal_name: ``"SIGTERM"``, ``"SIGUSR1"`` or ``"SIGUSR2"`` (the first one this process received; on
            a rank that received none, the name another rank reported).
        seconds: from the signal (on this process) to the checkpoint written.
    """

    def __init__(self, stage: str, step: int, signal_name: str, seconds: float, message: str | None = None) -> None:
        super().__init__(message or f"{stage} stopped at step {step} on {signal_name}: its checkpoint was written "
                                    f"{seconds:.1f} s after the signal")
        self.stage, self.step, self.signal_name, self.seconds = stage, step, signal_name, seconds

    @classmethod
    def outside(cls, where: str, signal_name: str, started: bool = True) -> Preempted:
        """A stop at a safe point outside a training step: every checkpoint is as it was
        (``started=False``: the command had written and trained nothing yet)."""
        kept = "every finished stage's checkpoint is kept" if started else "nothing was started"
        return cls("", 0, signal_name, 0.0, message=f"stopped {where} on {signal_name}; {kept}")


class PreemptionWatch:
    """While open, notes SIGTERM / SIGUSR1 / SIGUSR2 instead of dying of them; :meth:`requested` tells
    every rank at once whether any was received (one small all-reduce at each metric record
    across processes). Watches nest: the outermost installs the handlers and starts with
    nothing received, an inner one (a stage's, inside a command's) shares what it noted, so
    a signal that arrives between two stages is not lost. Handlers can only be set from the
    main thread: elsewhere the watch stays closed and the signals keep their default action."""

    _open = 0  # watches open in this process
    _received: int | None = None
    _at: float | None = None
    _previous: dict[int, object] = {}

    def __init__(self, runtime: Runtime | None = None, noted: tuple[int, float] | None = None) -> None:
        """``noted``: a signal (number, ``time.monotonic()``) received before this watch
        opened, which the outermost watch takes as its own."""
        self.runtime = runtime
        self.noted = noted
        self._installed = False

    @classmethod
    def _note(cls, signum: int, frame) -> None:
        if cls._received is None:
            cls._received, cls._at = signum, time.monotonic()

    @property
    def received(self) -> int | None:
        return PreemptionWatch._received

    def __enter__(self) -> PreemptionWatch:
        cls = PreemptionWatch
        if cls._open == 0 and threading.current_thread() is threading.main_thread():
            cls._received, cls._at = None, None
            cls._previous = {sig: signal.signal(sig, cls._note) for sig in SIGNALS}
            self._installed = True
            if self.noted is not None and cls._received is None:  # read after ours are in place: none is lost
                cls._received, cls._at = self.noted
        cls._open += 1
        return self

    def __exit__(self, *exc) -> None:
        cls = PreemptionWatch
        cls._open -= 1
        if self._installed:
            for sig, handler in cls._previous.items():
                signal.signal(sig, handler)
            cls._previous = {}

    def requested(self, logged: bool = True) -> bool:
        """Whether any process received a signal. Every rank must answer the same at the same
        step, so they all checkpoint together: across processes the ranks compare notes at
        metric records only (``logged``, every ``log_every`` steps), where the loop already
        waits for the device, so other steps gain no synchronisation."""
        cls = PreemptionWatch
        if self.runtime is None or not self.runtime.distributed:
            return cls._received is not None
        if not logged:
            return False
        code = torch.tensor([cls._received or 0], device=self.runtime.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        found = int(code.item())
        if found and cls._received is None:  # another rank's signal: stop with it
            cls._received, cls._at = found, time.monotonic()
        return bool(found)

    def stopped(self, stage: str, step: int) -> Preempted:
        return Preempted(stage, step, self._name(), time.monotonic() - (PreemptionWatch._at or time.monotonic()))

    def _name(self) -> str:
        return signal.Signals(PreemptionWatch._received).name if PreemptionWatch._received else "a signal"


def stop_if_requested(runtime: Runtime | None, where: str, started: bool = True) -> None:
    """Raise :class:`Preempted` at a safe point outside a training step (``where`` says
    which: ``"before anything was written"``, ``"after the ventral stage"``, ``"during the
    test"``) when any process received a scheduler's signal; every rank answers the same."""
    if PreemptionWatch._open == 0:  # no command is listening: signals keep their default action
        return
    watch = PreemptionWatch(runtime)
    if watch.requested(logged=True):
        raise Preempted.outside(where, watch._name(), started)


def ignore_in_workers(worker_id: int | None = None) -> None:
    """A data-loading worker's ``worker_init_fn`` part: the scheduler's signals are for the
    main process, which stops the workers itself."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
