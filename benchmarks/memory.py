"""A command's wall time and peak memory, as a user timing it on a laptop would read them.

    python -m benchmarks.memory -- python -m recipes.bimm_ucf101

Two peaks, because a run is several processes (the main one and its data loader's workers)
that share memory:

- ``peak_rss_mib``: the largest resident set of any one process of the command (the
  high-water mark ``VmHWM`` of each, read while it runs), what ``/usr/bin/time -f %M`` means
  to print; pages shared between processes count in each that touches them. (``wait4``'s
  ``ru_maxrss`` is not used where ``/proc`` exists: it also counts the pages the child
  held between ``fork`` and ``exec``, copies of a large parent's);
- ``peak_tree_mib``: the largest sum over the command's process tree of each process's
  proportional set size (``Pss`` in ``/proc/PID/smaps_rollup``: a page shared by n processes
  counts 1/n in each): the memory the whole command holds
  at once, sampled every 5 s: reading it walks each process's page tables (about 20 ms for
  one process of the demo, under a lock that process's allocations wait for), so sampling
  it often slows the command it measures. Linux only (``None`` elsewhere); a peak shorter
  than the sampling interval can be missed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["run_measured", "tree_memory_mib"]


def _children() -> dict[int, list[int]]:
    """Each live process's children, from ``/proc/*/stat``."""
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _field_kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:  # gone meanwhile
        pass
    return 0


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def tree_memory_mib(pid: int, pss: bool = True) -> tuple[float | None, float] | None:
    """``(summed Pss, largest VmHWM)`` of ``pid`` and every descendant, in MiB (Pss None
    when not asked: reading it walks each process's page tables, about 20 ms for a 1 GiB
    process, under a lock its allocations wait for); None where /proc has no ``smaps_rollup``."""
    if not Path(f"/proc/{pid}/smaps_rollup").exists():
        return None
    procs = _tree(pid)
    hwm = max(_field_kib(f"/proc/{p}/status", "VmHWM:") for p in procs)
    total = sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in procs) / 1024 if pss else None
    return total, hwm / 1024


def run_measured(cmd: list[str], *, interval: float = 0.5, pss_every: float = 5.0, **popen) -> dict:
    """Run ``cmd`` to its end (``popen``: ``subprocess.Popen``'s keywords) and return its
    ``returncode``, ``wall_s``, ``peak_rss_mib`` and ``peak_tree_mib`` (module docstring):
    high-water marks read every ``interval`` seconds, the tree's PSS every ``pss_every``
    (sampling it more often slows the command it measures)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    peak = {"tree": None, "one": None}
    done = threading.Event()

    def sample() -> None:
        last_pss = -float("inf")
        while not done.is_set():
            due = time.perf_counter() - last_pss >= pss_every
            now = tree_memory_mib(proc.pid, pss=due)
            if now is not None:
                if due:
                    last_pss = time.perf_counter()
                    peak["tree"] = max(peak["tree"] or 0.0, now[0])
                peak["one"] = max(peak["one"] or 0.0, now[1])
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if peak["one"] is None:  # no /proc: the kernel's figure, fork-time pages included
        peak["one"] = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return {"returncode": proc.returncode, "wall_s": wall, "peak_rss_mib": peak["one"],
            "peak_tree_mib": peak["tree"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between reads of the high-water marks")
    parser.add_argument("--pss-every", type=float, default=5.0, help="seconds between reads of the tree's PSS")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        parser.error("no command given (python -m benchmarks.memory -- CMD ...)")
    r = run_measured(cmd, interval=args.interval, pss_every=args.pss_every)
    tree = "-" if r["peak_tree_mib"] is None else f"{r['peak_tree_mib']:.0f} MiB"
    print(f"wall {r['wall_s']:.1f} s, peak RSS of one process {r['peak_rss_mib']:.0f} MiB, "
          f"peak of the process tree (summed PSS) {tree}, exit {r['returncode']}", file=sys.stderr)
    return r["returncode"]


if __name__ == "__main__":
    sys.exit(main())
