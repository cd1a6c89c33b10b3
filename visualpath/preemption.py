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
write is atomic anyway). Data-loading worker processes ignore both signals, so that a signal
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

__all__ = ["EXIT_PREEMPTED", "Preempted", "PreemptionWatch", "ignore_in_workers", "SIGNALS"]

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

    def __init__(self, stage: str, step: int, signal_name: str, seconds: float) -> None:
        super().__init__(f"{stage} stopped at step {step} on {signal_name}: its checkpoint was written "
                         f"{seconds:.1f} s after the signal")
        self.stage, self.step, self.signal_name, self.seconds = stage, step, signal_name, seconds


class PreemptionWatch:
    """While open, notes SIGTERM / SIGUSR1 / SIGUSR2 instead of dying of them; :meth:`requested` tells
    every rank at once whether any was received (one small all-reduce at each metric record
    across processes). Handlers can only be set from the main thread: elsewhere the watch stays
    closed and the signals keep their default action."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.received: int | None = None
        self.at: float | None = None
        self.count = 0
        self._previous: dict[int, object] = {}

    def _note(self, signum: int, frame) -> None:
        self.count += 1
        if self.received is None:
            self.received, self.at = signum, time.monotonic()

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, logged: bool = True) -> bool:
        """Whether any process received a signal. Every rank must answer the same at the same
        step, so they all checkpoint together: across processes the ranks compare notes at
        metric records only (``logged``, every ``log_every`` steps), where the loop already
        waits for the device, so other steps gain no synchronisation."""
        if not self.runtime.distributed:
            return self.received is not None
        if not logged:
            return False
        code = torch.tensor([self.received or 0], device=self.runtime.device)
        dist.all_reduce(code, op=dist.ReduceOp.MAX)
        found = int(code.item())
        if found and self.received is None:  # another rank's signal: stop with it
            self.received, self.at = found, time.monotonic()
        return bool(found)

    def stopped(self, stage: str, step: int) -> Preempted:
        name = signal.Signals(self.received).name if self.received else "a signal"
        return Preempted(stage, step, name, time.monotonic() - (self.at or time.monotonic()))


def ignore_in_workers(worker_id: int | None = None) -> None:
    """A data-loading worker's ``worker_init_fn`` part: the scheduler's signals are for the
    main process, which stops the workers itself."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
