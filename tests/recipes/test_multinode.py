"""Two ``torchrun`` "nodes" on this machine (``--nnodes 2``, one process each, rendezvous on
localhost, gloo) train a tiny recipe to the same weights as one node with two processes; a
node killed mid-run and the job started again resumes exactly (docs/reliability.md)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
RECIPE = ["-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu", "stages=ventral,joint,finetune",
          "log_every=1", "joint.optim.epochs=2"]
STAGES = ("ventral", "joint", "finetune")

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # what the torchrun command runs


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    # one thread per process on both layouts: torchrun sets it only for --nproc_per_node > 1, and the
    # thread count changes a matmul's rounding
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def _nodes(run: Path, cwd: Path, kill_node0_at: str | None = None, rdzv: str = "static") -> list[int]:
    torchrun, port = TORCHRUN, _port()
    procs = []
    for node in (0, 1):
        if rdzv == "static":
            where = ["--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port)]
        else:
            where = ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", run.name]
        killed = [str(REPO / "tests" / "killpoint.py"), kill_node0_at] if kill_node0_at and node == 0 else []
        env = _env()
        procs.append(subprocess.Popen([*torchrun, "--nnodes", "2", "--nproc_per_node", "1", *where, *killed, *RECIPE,
                                       f"run_dir={run}"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(cwd / f"{run.name}.node{node}.log", "a")))
    return [p.wait(timeout=400) for p in procs]


def _same(a: Path, b: Path) -> bool:
    for stage in STAGES:
        x, y = load_file(str(a / stage / "model.safetensors")), load_file(str(b / stage / "model.safetensors"))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def test_two_nodes_train_like_one_node_with_two_processes_and_a_killed_node_resumes_exactly(tmp_path):
    single = subprocess.run([*TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_port()),
                             *RECIPE, f"run_dir={tmp_path / 'single'}"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-3000:]
    for rdzv in ("static", "c10d"):  # c10d numbers the nodes in the order they join
        assert _nodes(tmp_path / f"two_{rdzv}", tmp_path, rdzv=rdzv) == [0, 0]
        assert _same(tmp_path / "single", tmp_path / f"two_{rdzv}"), rdzv
    killed = tmp_path / "killed"
    codes = _nodes(killed, tmp_path, kill_node0_at="unit-complete@3")  # rank 0 dies in its 3rd checkpoint (joint)
    assert codes[0] != 0 and codes[1] != 0, codes
    assert _nodes(killed, tmp_path) == [0, 0]  # the job started again: same command on both nodes
    assert "resumed at" in (tmp_path / "killed.node0.log").read_text()
    assert _same(tmp_path / "single", killed)
