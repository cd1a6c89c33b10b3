"""benchmarks.memory: a command's peak memory, one process's and the whole process tree's."""

import sys
import textwrap

import pytest

from benchmarks.memory import run_measured

# a parent holding 160 MiB and a child holding 100 MiB, alive at the same time for 2 s
pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    held = b"p" * (160 << 20)
    child = subprocess.Popen([sys.executable, "-c", "import time; x = b'c' * (100 << 20); time.sleep(2.5)"])
    time.sleep(2.0)
    child.wait()
    sys.exit(3)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the process tree is read from /proc")
def test_one_process_peak_and_the_tree_peak():
    r = run_measured([sys.executable, "-c", PARENT], interval=0.2, pss_every=0.2)
    assert r["returncode"] == 3  # the command's own exit status
    assert r["wall_s"] >= 2.0
    # the largest single process: the parent (160 MiB + an interpreter), not parent + child
    assert 160 <= r["peak_rss_mib"] < 240
    # both at once: at least 260 MiB
    assert r["peak_tree_mib"] >= 260
