"""Submit a recipe to a cluster through submitit, as MAE's and VideoMAE's launchers do (decision R10).

    python -m recipes.submit bimm_k400 --cluster slurm --nodes 8 --gpus-per-node 8 \\
        --partition gpu --time 4320 -- data.root=/data/k400
    python -m recipes.submit bimm_ucf101 --cluster local -- --variant tiny device=cpu   # on this machine

Everything after ``--`` is the recipe's own command line. The job runs ``python -m
recipes.RECIPE ARGS`` in every task (one task per GPU; the tasks find each other through
submitit's ``TorchDistributedEnvironment``, the variables ``torchrun`` would set). Its logs,
the pickled submission and ``jobs.txt`` (one line per job id, with the command) are in
``RUN_DIR/submitit/``. Before its time is up or when it is preempted, SLURM sends submitit's
signal (``--signal=USR2@SECONDS``): training stops at the next step boundary with a
checkpoint (decision R9), then submitit's checkpoint hook requeues the same command, which
resumes exactly where it stopped. Needs ``pip install -e '.[cluster]'``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = ["RecipeJob", "submit", "main"]

CLUSTERS = ("slurm", "local", "debug")


class RecipeJob:
    """One recipe command as a submitit job. ``checkpoint`` (submitit's hook on its preemption
    signal) hands back the same command: the recipe resumes from its run directory."""

    def __init__(self, recipe: str, argv: list[str]) -> None:
        self.recipe, self.argv = recipe, list(argv)

    def __call__(self) -> int:
        import submitit

        from visualpath.preemption import EXIT_PREEMPTED

        try:
            env = submitit.JobEnvironment()
        except RuntimeError:  # not in a job (called directly): run as is
            env = None
        if env is not None and env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        module = importlib.import_module(f"recipes.{self.recipe}")
        try:
            return module.main(self.argv)
        except SystemExit as stop:
            if stop.code == EXIT_PREEMPTED and env is not None:
                # The recipe stopped at a step boundary with its checkpoint; now let submitit's own
                # handler requeue the job (it calls checkpoint() below, then exits).
                os.kill(os.getpid(), env._usr_sig())
                time.sleep(5)  # the handler runs at once and exits; a rank other than 0 returns
            raise

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(RecipeJob(self.recipe, self.argv))

    def __repr__(self) -> str:
        return f"python -m recipes.{self.recipe} {shlex.join(self.argv)}"


def run_dir_of(recipe: str, argv: list[str]) -> Path:
    """The run directory the recipe will use with ``argv`` (parsed as the recipe parses it,
    so a bad command line is refused here, before anything is submitted)."""
    from recipes import pipeline

    module = importlib.import_module(f"recipes.{recipe}")
    argv = pipeline.paper_if_data(list(argv), module.VARIANTS, getattr(module, "DATA_KEYS", ("data.root",)))
    argv, _, named = pipeline.trust_args(argv)
    cfg = pipeline.parse(argv, module.VARIANTS, f"recipes.{recipe}", module.__doc__ or "")
    return Path(cfg.run_dir)


def submit(recipe: str, argv: list[str], *, cluster: str = "slurm", nodes: int = 1, gpus_per_node: int = 1,
           tasks_per_node: int | None = None, partition: str | None = None, time_min: int = 60,
           signal_delay_s: int = 120, requeues: int = 3, folder: str | Path | None = None):
    """Submit ``python -m recipes.RECIPE ARGV``; returns the submitit job. ``requeues``: how
    many times a job that reached its time limit is requeued (preemptions do not count)."""
    import submitit

    if cluster not in CLUSTERS:
        raise SystemExit(f"error: --cluster must be one of {CLUSTERS}, got {cluster!r}")
    run_dir = run_dir_of(recipe, argv)
    folder = Path(folder) if folder is not None else run_dir / "submitit"
    tasks = tasks_per_node or max(gpus_per_node, 1)
    if cluster == "local":  # one node; its own timeout signal stands in for SLURM's
        if nodes != 1:
            raise SystemExit(f"error: --cluster local runs on this machine: --nodes must be 1, got {nodes}")
        executor = submitit.LocalExecutor(folder=str(folder / "%j"), max_num_timeout=requeues)
        executor.update_parameters(timeout_min=time_min, tasks_per_node=tasks, signal_delay_s=signal_delay_s)
    else:
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster, slurm_max_num_timeout=requeues)
        params = dict(nodes=nodes, tasks_per_node=tasks, timeout_min=time_min, name=f"visualpath-{recipe}")
        if cluster == "slurm":
            params.update(gpus_per_node=gpus_per_node, slurm_signal_delay_s=signal_delay_s)
            if partition:
                params["slurm_partition"] = partition
        executor.update_parameters(**params)
    job = executor.submit(RecipeJob(recipe, argv))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "jobs.txt", "a") as f:
        f.write(f"{job.job_id}\t{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{RecipeJob(recipe, argv)!r}\n")
    return job


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m recipes.submit", description=__doc__.split("\n\n")[0],
                                     epilog="Everything after -- is the recipe's own command line.")
    parser.add_argument("recipe", help="a recipe module of recipes/, e.g. bimm_ucf101 or bimm_k400")
    parser.add_argument("--cluster", default="slurm", choices=CLUSTERS,
                        help="slurm; local (subprocesses on this machine, with requeue); debug (in this process)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1, help="one task (process) per GPU")
    parser.add_argument("--tasks-per-node", type=int, default=None, help="default: --gpus-per-node")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", type=int, default=60, help="minutes per job (requeued jobs go on)")
    parser.add_argument("--signal-delay", type=int, default=120,
                        help="seconds before the time limit at which SLURM signals the job to checkpoint")
    parser.add_argument("--requeues", type=int, default=3, help="times a job at its time limit is requeued")
    parser.add_argument("--wait", action="store_true", help="wait for the job to finish and print its result")
    args = parser.parse_args(own)
    try:
        importlib.import_module("submitit")
    except ImportError:
        print("error: submitting needs submitit: pip install -e '.[cluster]'", file=sys.stderr)
        return 2
    if not (Path(__file__).parent / f"{args.recipe}.py").is_file():
        print(f"error: no recipe {args.recipe!r} in recipes/", file=sys.stderr)
        return 2
    job = submit(args.recipe, recipe_argv, cluster=args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                 tasks_per_node=args.tasks_per_node, partition=args.partition, time_min=args.time,
                 signal_delay_s=args.signal_delay, requeues=args.requeues)
    print(f"submitted job {job.job_id}: {RecipeJob(args.recipe, recipe_argv)!r} (logs: {job.paths.folder})")
    if args.wait:
        print(f"job {job.job_id} finished: {job.result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
