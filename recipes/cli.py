"""The command line of every recipe, ``python -m recipes.NAME [--variant V] [key=value ...]
[pathway.KEY=VALUE ...]``: real data selects the paper's settings, ``--trust-code`` and the
graph a command line names (decision T1), and every refusal as one line (exit 2) before
compute."""


from __future__ import annotations

import sys
from pathlib import Path

import attrs

from recipes import _signals
from recipes.config import VARIANT_NOTES, Config
from recipes.graph import graph_help, split_graph_args
from recipes.pipeline import run
from recipes.resume import interrupted_at
from visualpath.config import parse_cli
from visualpath.errors import Refused, no_space, one_line, shown
from visualpath.preemption import EXIT_PREEMPTED, Preempted, PreemptionWatch
from visualpath.rundir import CheckpointWriteError
from visualpath.trust import graph_code, trusting


def paper_if_data(argv: list[str], recipe_variants: dict, data_keys: tuple[str, ...] = ("data.root",)) -> list[str]:
    """``argv`` with ``--data-root``-style spellings normalised and, when it names one of
    ``data_keys`` but no ``--variant``, ``--variant paper`` in front: real data gets the
    paper's settings, the built-in sets the demo's."""
    def flat(name: str) -> str:
        return name.replace("-", "_").replace(".", "_")

    wanted = {flat(k): k for k in data_keys}
    out = []
    for a in argv:  # --data-root, --data_root, data_root= ... -> the config's own key
        dashes = "--" if a.startswith("--") else ""
        name, eq, value = a[len(dashes):].partition("=")
        is_key = (dashes or eq) and flat(name) in wanted  # a bare word is a value, not a key
        out.append(f"{dashes}{wanted[flat(name)]}{eq}{value}" if is_key else a)
    named = any(a.startswith(("--" + k, k + "=")) for a in out for k in data_keys)
    if named and "paper" in recipe_variants and not any(a.startswith("--variant") for a in out):
        out = ["--variant", "paper", *out]
    return out


RECIPE_OPTIONS = (
    ("--data-root DIR", "the same as data.root=DIR: the dataset in its official layout; without --variant it "
                        "selects the paper variant"),
    ("--trust-code", "run the code a run or graph names even if it is neither installed nor trusted by you "
                     "(never remembered; docs/reliability.md#security)"),
    ("pathway.KEY=VALUE", "set a field of the graph (graph keys, at the end)"),
)


def parse(argv: list[str], recipe_variants: dict, module: str, doc: str) -> Config:
    """The command line's config: ``[--variant V] [key=value ...] [pathway.KEY=VALUE ...]``;
    ``--help`` also lists the graph's streams, areas and keys."""
    try:
        argv, graph = split_graph_args(argv)
    except ValueError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None

    def with_graph(cfg: Config) -> Config:
        return attrs.evolve(cfg, pathway_overrides=cfg.pathway_overrides + graph)

    _, cfg = parse_cli(argv, recipe_variants, module, doc, help_extra=lambda c: graph_help(with_graph(c)),
                       options=RECIPE_OPTIONS, variant_notes=VARIANT_NOTES)
    problem = config_file_run_dir(argv, cfg)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return with_graph(cfg)


def config_file_run_dir(argv: list[str], cfg: Config) -> str | None:
    """Why ``cfg.run_dir`` may not be used when a ``--config`` file set it (None if it may): a
    file someone else wrote chooses where this run writes only inside the current folder
    (decision T1); anywhere else takes ``run_dir=`` on the command line."""
    if _run_dir_on_line(argv) or not any(a == "--config" or a.startswith("--config=") for a in argv):
        return None
    here = Path.cwd().resolve()
    path = (here / cfg.run_dir).resolve()  # through any link on the way: where the writes would land
    if Path(cfg.run_dir).is_absolute() or ".." in Path(cfg.run_dir).parts or not path.is_relative_to(here):
        return (f"the --config file sets run_dir={shown(cfg.run_dir)!r}, outside the current folder"
                + (f" (it leads to {shown(path)})" if not Path(cfg.run_dir).is_absolute() else "")
                + ": a config file chooses only a folder inside it; give run_dir= on the command line to write there")
    return None


FLAG_OPTIONS = ("--help", "-h", "--print-config", "--trust-code")  # the options that take no value


def _run_dir_on_line(argv: list[str]) -> bool:
    """Whether the command line itself sets ``run_dir`` (``run_dir=D``, ``--run-dir D``,
    ``--run_dir=D``), read as the parser reads it: the value of another option
    (``--config run_dir.yaml``, ``--name run_dir=x``) is not a setting."""
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, _ = a.lstrip("-").partition("=")
        if key.replace("-", "_") == "run_dir" and (eq or a.startswith("--")):
            return True
        if a.startswith("-") and not eq and a not in FLAG_OPTIONS:
            i += 1  # its value follows
        i += 1
    return False


def trust_args(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    """``argv`` without its ``--trust-code`` (also ``trust_code=true``), whether it was
    given, and the graphs the command line itself names (``pathway=REF``): the code the
    reader chose. A ``--config`` file's ``pathway`` is not among them (decision T1)."""
    rest, trust_code, named, i = [], False, [], 0
    while i < len(argv):
        a = argv[i]
        bare = a[2:] if a.startswith("--") else a
        key, eq, value = bare.partition("=")
        if key.replace("-", "_") == "trust_code":
            if eq and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                print(f"error: trust_code takes true or false, got {value!r}", file=sys.stderr)
                raise SystemExit(2)
            trust_code = (value.lower() in ("true", "1", "yes")) if eq else True
            i += 1
            continue
        if key == "pathway":  # its code, as what the value says (a run's folder or a .json names none)
            if eq:
                named += graph_code(value)
            elif a.startswith("--") and i + 1 < len(argv):
                named += graph_code(argv[i + 1])
        rest.append(a)
        i += 1
    return rest, trust_code, named


def main(module: str, doc: str, recipe_variants: dict, argv: list[str] | None = None,
         data_keys: tuple[str, ...] = ("data.root",)) -> int:
    """``python -m recipes.NAME``: given real data (``data_keys``) and no ``--variant``, the
    paper's settings. Every refusal is one line (``error: ...``, exit 2) before compute; a
    run stopped by Ctrl-C says where it stopped (exit 130); one stopped by a scheduler's
    SIGTERM or SIGUSR1 checkpoints at the next step and says so (exit 75, decision R9)."""
    argv = paper_if_data(list(sys.argv[1:] if argv is None else argv), recipe_variants, data_keys)
    argv, trust_code, named = trust_args(argv)
    early = (_signals.NOTED["signum"], _signals.NOTED["at"]) if _signals.NOTED["signum"] is not None else None
    try:
        return _command(argv, trust_code, named, early, module, doc, recipe_variants)
    finally:
        _signals.ended()  # as python -m recipes.NAME: a signal after the last word is not a death at exit


def _command(argv, trust_code, named, early, module, doc, recipe_variants) -> int:
    with trusting(trust_code, named, command=True), PreemptionWatch(noted=early):  # a signal at any moment is noted
        if _signals.restore_interrupt():  # Ctrl-C while the command was starting
            print("interrupted while the command was starting: nothing was started", file=sys.stderr)
            raise SystemExit(130)
        cfg = parse(argv, recipe_variants, module, doc)
        try:
            run(cfg, trust_code=trust_code)
        except CheckpointWriteError as err:  # e.g. the disk is full: the previous checkpoint is kept
            again = "; free some space and run the same command again" if no_space(err) else ""
            print(f"error: {err.strerror or err}{again}", file=sys.stderr)
            raise SystemExit(1) from None
        except Refused as err:  # untrusted code, damaged weights, a busy run directory, ...: one line
            sys.stderr.write(f"error: {one_line(err)}\n")  # one write: processes of one job share the stream
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print(f"interrupted: {interrupted_at(cfg)}; the same command resumes from there", file=sys.stderr)
            raise SystemExit(130) from None
        except Preempted as stop:  # a scheduler's SIGTERM / SIGUSR1: checkpointed at a step boundary (R9)
            print(f"preempted: {stop}; the same command resumes from there (exit {EXIT_PREEMPTED})", file=sys.stderr)
            raise SystemExit(EXIT_PREEMPTED) from None
        except Exception as err:  # a full disk outside a checkpoint: config, metrics, figures, results (R13)
            full = no_space(err)
            if full is None:
                raise
            print(f"error: {full}: free some space and run the same command again; {interrupted_at(cfg)}",
                  file=sys.stderr)
            raise SystemExit(1) from None
    return 0


def entry(name: str, doc: str, recipe_variants: dict[str, Config], data_keys: tuple[str, ...] = ("data.root",)):
    """A recipe's ``main(argv=None)`` for ``python -m recipes.<name>``."""
    def recipe_main(argv: list[str] | None = None) -> int:
        return main(f"recipes.{name}", doc, recipe_variants, argv, data_keys)
    return recipe_main
