"""Run by test_ddp.py under torchrun: a few DDP steps with gloo, then compare ranks."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.visualpath.test_engine import Images, _model, _step  # noqa: E402
from visualpath.engine import OptimSpec, RunLog, build_optimizer, fit, make_loader, setup, teardown  # noqa: E402


def main(out: Path) -> None:
    runtime = setup("cpu", seed=0)
    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts them)
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    spec = OptimSpec(epochs=2, batch_size=3, base_lr=1e-2, clip_grad=1.0)
    loader = make_loader(Images(), spec.batch_size, runtime, shuffle=True, seed=1)
    optimizer = build_optimizer(model, spec, runtime)
    state = fit("ddp", ddp, _step, loader, optimizer, spec, runtime, RunLog(out, runtime), log_every=2)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(runtime.world)]
    dist.all_gather(gathered, flat)
    seen = torch.tensor([len(list(loader.sampler))])
    if runtime.main:
        (out / f"result.json").write_text(json.dumps({
            "world": runtime.world, "steps": state.step,
            "identical": all(torch.equal(gathered[0], g) for g in gathered[1:]),
            "changed": bool((flat != torch.cat([p.detach().flatten() for p in _model().parameters()])).any()),
            "per_rank": int(seen),
        }))
    teardown(runtime, ddp, model, optimizer)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
