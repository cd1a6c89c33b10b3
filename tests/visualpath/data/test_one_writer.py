"""Every process of a job asks for the built-in set; one generates it, the others wait and
use it (a fresh machine's first ``torchrun``, or nodes sharing a cache)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


REPO = Path(__file__).resolve().parents[3]

ASK = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from visualpath.data.synthetic import SyntheticSpec, ensure_synthetic
root = ensure_synthetic(sys.argv[1], SyntheticSpec(groups=7, clips=1, frames=8, size=32))
print(len(list(root.rglob("*.avi"))))
"""


def test_processes_asking_for_the_set_at_once_generate_it_once(tmp_path):
    root = tmp_path / "set"
    procs = [subprocess.Popen([sys.executable, "-c", ASK, str(root)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1 and int(outs[0][0]) > 0  # each saw the whole set
    generated = sum(err.count("generating the built-in synthetic action set") for _, err in outs)
    assert generated == 1, [err for _, err in outs]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".set.") and p.is_dir()]  # no half-written copy
