"""On a CUDA device: a BIMM training step runs in bf16 with fused AdamW and no host syncs.

Opt-in: ``python -m pytest -m gpu`` (skipped without CUDA).
"""

import pytest
import torch

from tests.conftest import tiny_pathway
from visualpath.engine import OptimSpec, Runtime, build_optimizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_a_joint_step_makes_no_host_device_sync():
    device = torch.device("cuda")
    model = tiny_pathway().build().to(device).train()
    runtime = Runtime(device=device)
    optimizer = build_optimizer(model, OptimSpec(epochs=1, batch_size=2, base_lr=1e-3), runtime)
    assert optimizer.defaults["fused"]
    batch = {"video": torch.randint(0, 256, (2, 3, 4, 64, 64), dtype=torch.uint8, device=device)}
    for _ in range(2):  # the first step builds cached tables and spectra
        with torch.autocast("cuda", dtype=runtime.autocast_dtype):
            loss = model(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=runtime.autocast_dtype):
            out = model(batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss).item()


def test_the_benchmark_reports_flops_and_mfu_on_the_gpu():
    from benchmarks.step import main

    result = main(["--size", "tiny", "--frames", "8", "--res", "112", "--batch", "4", "--repeats", "2",
                   "--warmup", "1"])
    assert result["rows"]["ours-bimm"]["tflop_per_step"] > 0
    assert result["rows"]["ours-bimm"]["peak_mib"] > 0
