"""Submit a recipe to a cluster through submitit, as MAE's and VideoMAE's launchers do (decision R10).

    python -m recipes.submit bimm_k400 --cluster slurm --nodes 8 --gpus-per-node 8 \\
        --partition gpu --time 4320 -- data.root=/data/k400
    python -m recipes.submit bimm_ucf101 --cluster local -- --variant tiny device=cpu   # on this machine
    python -m recipes.submit ablations --table 7e --cluster slurm --gpus-per-node 8 -- data.root=/data/ucf101

Everything after ``--`` is the recipe's own command line. The job runs ``python -m
recipes.RECIPE ARGS`` in every task (one task per GPU; the tasks find each other through
submitit's ``TorchDistributedEnvironment``, the variables ``torchrun`` would set). Its logs,
the pickled submission and ``jobs.txt`` (one line per job id, with the command) are in
``RUN_DIR/submitit/``. Before its time is up or when it is preempted, SLURM sends submitit's
signal (``--signal=USR2@SECONDS``): training stops at the next step boundary with a
checkpoint (decision R9), then submitit's checkpoint hook requeues the same command, which
resumes exactly where it stopped. ``ablations --table T`` submits Table 7's rows as one job
array, a job per row (:class:`TableRowJob`). Needs ``pip install -e '.[cluster]'``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = ["RecipeJob", "TableRowJob", "submit", "submit_table", "main"]

CLUSTERS = ("slurm", "local", "debug")


class RecipeJob:
    """One recipe command as a submitit job. ``checkpoint`` (submitit's hook on its preemption
    signal) hands back the same command: the recipe resumes from its run directory."""

    def __init__(self, recipe: str, argv: list[str]) -> None:
        self.recipe, self.argv = recipe, list(argv)

    def __call__(self) -> int:
        module = importlib.import_module(f"recipes.{self.recipe}")
        return _in_job(lambda: module.main(self.argv))

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(RecipeJob(self.recipe, self.argv))

    def __repr__(self) -> str:
        return f"python -m recipes.{self.recipe} {shlex.join(self.argv)}"


def _in_job(work):
    """Run ``work()`` in a submitit task: the distributed environment exported for torchrun's
    readers, and a preempted run (exit 75, its checkpoint written, decision R9) handed to
    submitit's own handler, which calls the job's ``checkpoint()`` and requeues it."""
    import submitit

    from visualpath.preemption import EXIT_PREEMPTED, Preempted

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not in a job (called directly): run as is
        env = None
    if env is not None and env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    try:
        return work()
    except (SystemExit, Preempted) as stop:
        if env is not None and (isinstance(stop, Preempted) or stop.code == EXIT_PREEMPTED):
            os.kill(os.getpid(), env._usr_sig())  # submitit's handler runs at once and exits
            time.sleep(5)  # (a rank other than 0 returns from it)
        raise


class TableRowJob:
    """One row of a Table 7 ablation (``recipes.ablations``) as a job of a job array: the row's
    configuration is derived in the job exactly as ``python -m recipes.ablations`` derives it,
    and trains in the row's own run directory (``RUN_DIR/table7/<row>``)."""

    def __init__(self, table: str, index: int, argv: list[str]) -> None:
        self.table, self.index, self.argv = table, index, list(argv)

    def config(self):
        from recipes import ablations, bimm_ucf101
        from recipes.cli import paper_if_data
        from visualpath.config import parse_cli

        _, base = parse_cli(paper_if_data(list(self.argv), bimm_ucf101.VARIANTS), bimm_ucf101.VARIANTS,
                            "recipes.ablations --table T", ablations.__doc__)
        row, cfg, note = ablations.rows(self.table, base)[self.index]
        if cfg is None:
            raise SystemExit(f"error: Table {self.table}, row {row.label!r}: {note}")
        return row, cfg

    def __call__(self) -> dict:
        from recipes.pipeline import run

        row, cfg = self.config()
        return _in_job(lambda: {"label": row.label, "run_dir": cfg.run_dir, "top1": run(cfg).get("top1")})

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TableRowJob(self.table, self.index, self.argv))

    def __repr__(self) -> str:
        return f"Table {self.table} row {self.index}: python -m recipes.ablations --table {self.table} " \
               f"{shlex.join(self.argv)}"


def run_dir_of(recipe: str, argv: list[str]) -> Path:
    """The run directory the recipe will use with ``argv`` (parsed as the recipe parses it,
    so a bad command line is refused here, before anything is submitted)."""
    from recipes import cli

    module = importlib.import_module(f"recipes.{recipe}")
    argv = cli.paper_if_data(list(argv), module.VARIANTS, getattr(module, "DATA_KEYS", ("data.root",)))
    argv, _, named = cli.trust_args(argv)
    cfg = cli.parse(argv, module.VARIANTS, f"recipes.{recipe}", module.__doc__ or "")
    return Path(cfg.run_dir)


def _executor(cluster: str, folder: Path, *, nodes: int, gpus_per_node: int, tasks_per_node: int | None,
              partition: str | None, time_min: int, signal_delay_s: int, requeues: int, name: str):
    import submitit

    if cluster not in CLUSTERS:
        raise SystemExit(f"error: --cluster must be one of {CLUSTERS}, got {cluster!r}")
    tasks = tasks_per_node or max(gpus_per_node, 1)
    if cluster == "local":  # one node; its own timeout signal stands in for SLURM's
        if nodes != 1:
            raise SystemExit(f"error: --cluster local runs on this machine: --nodes must be 1, got {nodes}")
        executor = submitit.LocalExecutor(folder=str(folder / "%j"), max_num_timeout=requeues)
        executor.update_parameters(timeout_min=time_min, tasks_per_node=tasks, signal_delay_s=signal_delay_s)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster, slurm_max_num_timeout=requeues)
    params = dict(nodes=nodes, tasks_per_node=tasks, timeout_min=time_min, name=name)
    if cluster == "slurm":
        params.update(gpus_per_node=gpus_per_node, slurm_signal_delay_s=signal_delay_s)
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def _record(folder: Path, jobs) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "jobs.txt", "a") as f:
        for job, what in jobs:
            f.write(f"{job.job_id}\t{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{what!r}\n")


def submit(recipe: str, argv: list[str], *, cluster: str = "slurm", nodes: int = 1, gpus_per_node: int = 1,
           tasks_per_node: int | None = None, partition: str | None = None, time_min: int = 60,
           signal_delay_s: int = 120, requeues: int = 3, folder: str | Path | None = None):
    """Submit ``python -m recipes.RECIPE ARGV``; returns the submitit job. ``requeues``: how
    many times a job that reached its time limit is requeued (preemptions do not count)."""
    folder = Path(folder) if folder is not None else run_dir_of(recipe, argv) / "submitit"
    executor = _executor(cluster, folder, nodes=nodes, gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node,
                         partition=partition, time_min=time_min, signal_delay_s=signal_delay_s, requeues=requeues,
                         name=f"visualpath-{recipe}")
    work = RecipeJob(recipe, argv)
    job = executor.submit(work)
    _record(folder, [(job, work)])
    return job


def submit_table(table: str, argv: list[str], **options) -> list:
    """Submit every row of Table ``table`` (``recipes.ablations``) as one job array, each row a
    job in its own run directory; returns the jobs. Every row is checked before any is
    submitted. ``python -m recipes.ablations --table T ARGV`` afterwards prints the table
    from the finished rows without training them again."""
    from recipes import ablations, bimm_ucf101
    from recipes.cli import paper_if_data
    from visualpath.config import parse_cli

    if table not in ablations.TABLES:
        raise SystemExit(f"error: unknown table {table!r}; tables: {', '.join(ablations.TABLES)}")
    _, base = parse_cli(paper_if_data(list(argv), bimm_ucf101.VARIANTS), bimm_ucf101.VARIANTS,
                        "recipes.ablations --table T", ablations.__doc__)
    listed = ablations.rows(table, base)
    blocked = [(row.label, note) for row, cfg, note in listed if cfg is None]
    if blocked:
        raise SystemExit(f"error: Table {table}, row {blocked[0][0]!r}: {blocked[0][1]}")
    folder = Path(options.pop("folder", None) or Path(base.run_dir) / "table7" / "submitit")
    executor = _executor(options.pop("cluster", "slurm"), folder, name=f"visualpath-table{table}",
                         **{k: options.get(k, v) for k, v in _DEFAULTS.items()})
    works = [TableRowJob(table, i, argv) for i in range(len(listed))]
    with executor.batch():
        jobs = [executor.submit(w) for w in works]
    _record(folder, list(zip(jobs, works)))
    return jobs


_DEFAULTS = dict(nodes=1, gpus_per_node=1, tasks_per_node=None, partition=None, time_min=60, signal_delay_s=120,
                 requeues=3)


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
    parser.add_argument("--table", default=None,
                        help="with the recipe ablations: every row of this Table 7 part as one job array")
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
    options = dict(cluster=args.cluster, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                   tasks_per_node=args.tasks_per_node, partition=args.partition, time_min=args.time,
                   signal_delay_s=args.signal_delay, requeues=args.requeues)
    if args.recipe == "ablations":
        if not args.table:
            print("error: recipes.submit ablations needs --table (7a ... 7f, x1): one job per row", file=sys.stderr)
            return 2
        jobs = submit_table(args.table, recipe_argv, **options)
        print(f"submitted Table {args.table} as {len(jobs)} jobs: {', '.join(j.job_id for j in jobs)} "
              f"(logs: {Path(jobs[0].paths.folder).parent})")
    else:
        jobs = [submit(args.recipe, recipe_argv, **options)]
        print(f"submitted job {jobs[0].job_id}: {RecipeJob(args.recipe, recipe_argv)!r} (logs: {jobs[0].paths.folder})")
    if args.wait:
        for job in jobs:
            print(f"job {job.job_id} finished: {job.result()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
