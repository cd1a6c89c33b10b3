"""Run a module as ``python -m`` would, ending the process at a named point of its checkpoint
writes, as SIGKILL would (nothing else runs):

    python tests/killpoint.py POINT[@K] -m MODULE ARGS...

``POINT`` is one of :data:`visualpath.rundir.checkpoint.FAULT_POINTS`; ``@K`` kills the K-th time it is
reached (default 1). Works under ``torchrun`` too (``torchrun ... tests/killpoint.py ...``).
The fault tests use it instead of a switch in the library."""

import os
import runpy
import sys


def main() -> None:
    point, _, times = sys.argv[1].partition("@")
    if sys.argv[2] != "-m":
        raise SystemExit("usage: python tests/killpoint.py POINT[@K] -m MODULE ARGS...")
    module = sys.argv[3]
    sys.path[0] = os.getcwd()  # as ``python -m`` has it (this file's folder is not on the path)
    from visualpath.rundir import checkpoint

    if point not in checkpoint.FAULT_POINTS:
        raise SystemExit(f"{point!r} is not one of {checkpoint.FAULT_POINTS}")
    reached = {"n": 0}

    def hook(at: str) -> None:
        if at == point:
            reached["n"] += 1
            if reached["n"] == int(times or 1):
                os._exit(137)

    checkpoint.fault_hook = hook
    sys.argv = [module, *sys.argv[4:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
