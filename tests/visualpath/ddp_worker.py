"""Run by test_ddp.py under torchrun: a few DDP steps with gloo, then compare ranks.

``worker.py OUT [resume]``; with ``KILL_RANK=r`` and ``KILL_AT=k`` rank ``r`` dies (as SIGKILL)
in its ``k``-th training step; with ``SIGNAL_RANK=r`` (or ``all``) and ``SIGNAL_AT=k`` rank ``r``
sends itself SIGTERM in its ``k``-th step, as a scheduler would, and each rank writes
``preempted.rank<R>.json`` (the step it stopped at, the seconds from the signal to exit)."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.visualpath.test_engine import Images, _model, _step  # noqa: E402
from visualpath.engine import (  # noqa: E402
    EXIT_PREEMPTED,
    OptimSpec,
    Preempted,
    RunLog,
    build_optimizer,
    fit,
    make_loader,
    setup,
    teardown,
)


def main(out: Path, resume: bool = False) -> None:
    runtime = setup("cpu", seed=0)
    calls = {"n": 0}
    signalled = {"at": None}

    def step(model, batch):
        calls["n"] += 1
        if str(runtime.rank) == os.environ.get("KILL_RANK") and calls["n"] == int(os.environ.get("KILL_AT", 0)):
            os._exit(137)
        if os.environ.get("SIGNAL_RANK") in ("all", str(runtime.rank)) and calls["n"] == int(os.environ["SIGNAL_AT"]):
            signalled["at"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
        return _step(model, batch)

    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    spec = OptimSpec(epochs=2, batch_size=3, base_lr=1e-2, clip_grad=1.0)
    loader = make_loader(Images(), spec.batch_size, runtime, shuffle=True, seed=1)
    optimizer = build_optimizer(model, spec, runtime)
    try:
        state = fit("ddp", ddp, step, loader, optimizer, spec, runtime, RunLog(out, runtime), log_every=2,
                    resume=resume, checkpoint_every=1)
    except Preempted as stop:
        teardown(runtime, ddp, model, optimizer)
        since = time.monotonic() - (signalled["at"] or time.monotonic()) if signalled["at"] else stop.seconds
        (out / f"preempted.rank{runtime.rank}.json").write_text(json.dumps({"step": stop.step,
                                                                           "exit_seconds": since}))
        sys.exit(EXIT_PREEMPTED)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(runtime.world)]
    dist.all_gather(gathered, flat)
    seen = torch.tensor([len(list(loader.sampler))])
    if runtime.main:
        (out / "result.json").write_text(json.dumps({
            "world": runtime.world, "steps": state.step,
            "identical": all(torch.equal(gathered[0], g) for g in gathered[1:]),
            "changed": bool((flat != torch.cat([p.detach().flatten() for p in _model().parameters()])).any()),
            "per_rank": int(seen),
        }))
        torch.save(flat, out / "final.pt")
    teardown(runtime, ddp, model, optimizer)


if __name__ == "__main__":
    main(Path(sys.argv[1]), resume=len(sys.argv) > 2 and sys.argv[2] == "resume")
