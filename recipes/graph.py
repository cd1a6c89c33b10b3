"""Which graph a recipe trains: the paper's, or any pathway a user defines in Python.

    python -m recipes.bimm_ucf101                                    # the paper's graph (model.*)
    python -m recipes.bimm_ucf101 pathway=my_graph.py:build          # a builder in a plain file
    python -m recipes.bimm_ucf101 pathway=my_package.graphs:build    # ... in an importable module
    python -m recipes.bimm_ucf101 pathway=graph.json                 # a stored spec (Pathway.to_dict)
    python -m recipes.bimm_ucf101 pathway=runs/other                 # the graph another run trained
    python -m recipes.bimm_ucf101 pathway.dorsal.MT.normalize=false pathway.V1.wavelengths=4,8

A builder is a callable returning a :class:`~visualpath.Pathway`. One that takes an argument
receives the variant's :class:`~areas.bimm.ModelConfig`, whose ``encoder(depth)`` and
``decoder(depth)`` give the variant's scale, so one graph file runs at tiny, demo and paper
scale (decision G3). ``pathway.KEY=VALUE`` edits any field of any stream or area of the graph
(:func:`visualpath.overrides.apply_overrides`, decision G4); ``--help`` lists every key.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import attrs

from areas.bimm import paper_pathway, run_pathway
from visualpath import Pathway
from visualpath.rundir import read_spec
from visualpath.trust import chosen, trusting
from visualpath.overrides import apply_overrides, override_keys, override_notes
from visualpath.spec import SpecError, import_object

__all__ = ["build_graph", "ventral_graph", "split_graph_args", "graph_help", "GRAPH_PREFIX"]

GRAPH_PREFIX = "pathway."


def build_graph(cfg) -> Pathway:
    """The graph ``cfg`` names, with its ``pathway_overrides`` applied.

    Raises:
        ValueError: the builder or file cannot be found or does not give a Pathway, or an
            override names an unknown field (with the closest known one).
    """
    with trusting(named=chosen(cfg.pathway)):  # in Python the caller chose it; on a command line, only its own
        return _build_graph(cfg)


def _build_graph(cfg) -> Pathway:
    ref = cfg.pathway
    if ref is None:
        pathway = paper_pathway(cfg.model)
    elif Path(ref).is_dir():
        pathway = run_pathway(ref)
    elif ref.endswith(".json") and ":" not in ref:
        if not Path(ref).is_file():
            raise SpecError(f"pathway={ref!r}: no such file")
        try:
            pathway = read_spec(Path(ref))  # the classes it names are data: imported under the trust rule
        except SpecError as err:
            raise SpecError(f"pathway={ref!r}: {err}") from None
    else:
        if ":" not in ref:
            raise ValueError(f"pathway={ref!r}: expected FILE.py:FUNCTION, package.module:FUNCTION, a .json spec "
                             "or a run directory")
        if not ref.rpartition(":")[2].isidentifier():
            raise SpecError(f"pathway={ref!r}: a graph builder is named FILE.py:FUNCTION or package.module:FUNCTION, "
                            "a function at the top level of its file or module")
        # named on the reader's command line (their choice) or read from a config file (registered builders only)
        builder = import_object(ref, f"pathway={ref!r}", from_data=True, kind="graph")
        if not inspect.isfunction(builder) or builder.__module__.split(".")[0] in sys.stdlib_module_names:
            raise SpecError(f"pathway={ref!r} is not a graph builder: expected a Python function that returns a "
                            "visualpath.Pathway, defined in your file or package")
        pathway = builder(**_builder_arguments(builder, ref, cfg.model))
        if not isinstance(pathway, Pathway):
            raise ValueError(f"pathway={ref!r} returned {type(pathway).__name__}, not a visualpath.Pathway")
    if cfg.pathway_overrides:
        keys = [o.split("=", 1)[0].removeprefix(GRAPH_PREFIX) + "=" + o.split("=", 1)[1]
                if "=" in o else o for o in cfg.pathway_overrides]
        pathway = apply_overrides(pathway, keys)
    return pathway


def _builder_arguments(builder, ref: str, model) -> dict:
    """What a graph builder is called with, as its signature declares: ``model`` (the recipe's
    model settings, :class:`areas.bimm.ModelConfig`) when it has a parameter of that name,
    nothing otherwise; any other parameter must have a default."""
    params = inspect.signature(builder).parameters
    needed = [n for n, p in params.items() if n != "model" and p.default is inspect.Parameter.empty
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise SpecError(f"pathway={ref!r}: a graph builder is called with no argument or with model= (the recipe's "
                        f"model settings); its parameter {needed[0]!r} has no default")
    return {"model": model} if "model" in params else {}


def ventral_graph(cfg, graph: Pathway) -> Pathway | None:
    """What the ventral stage trains: the graph's image streams; for the paper's graph with
    Table 7c's fewer targets, the default targets' image streams ("during the joint training
    progress, we only calculate the loss from the V1 blocks": the ventral stage is unchanged).
    None for a graph without image streams."""
    from visualpath.rundir import stage_pathway

    if not any(s.modality == "image" for s in graph.streams):
        return None
    if cfg.pathway is None and cfg.model.targets in ("V1", "V1-V2"):
        default = attrs.evolve(cfg, model=attrs.evolve(cfg.model, targets=attrs.fields(type(cfg.model)).targets.default))
        graph = build_graph(default)
    return stage_pathway(graph, "ventral")


def split_graph_args(argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """``argv`` without its ``pathway.KEY=VALUE`` (or ``--pathway.KEY VALUE``) items, and
    those items as ``pathway.KEY=VALUE``."""
    rest, graph, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        bare = a[2:] if a.startswith("--") else a
        if bare.startswith(GRAPH_PREFIX):
            if "=" in bare:
                graph.append(bare)
            elif a.startswith("--") and i + 1 < len(argv):
                graph.append(f"{bare}={argv[i + 1]}")
                i += 1
            else:
                raise ValueError(f"{a} needs a value (pathway.KEY=VALUE)")
        else:
            rest.append(a)
        i += 1
    return rest, tuple(graph)


def graph_help(cfg) -> str:
    """The ``--help`` section listing the graph's streams, areas and every override key."""
    try:
        pathway = build_graph(cfg)
    except (ValueError, SpecError) as err:
        return f"graph: cannot be built ({err})"
    lines = ["graph (" + (cfg.pathway or "the paper's, from model.*") + "):"]
    for s in pathway.streams:
        areas = " -> ".join(f"{a.name} ({type(a).__name__}, {a.blocks} block{'' if a.blocks == 1 else 's'})"
                            for a in s.areas)
        lines.append(f"  {s.name} [{s.modality}]: {areas}")
    lines.append(f"  share: {pathway.share}")
    lines.append("graph keys (pathway.KEY=VALUE; type = value; what it is). AREA.FIELD sets the field in every stream "
                 "that has AREA; STREAM.AREA.FIELD (e.g. pathway.dorsal.V1.cells) sets it in that stream only, and is "
                 "listed where the streams differ:")
    notes = override_notes(pathway)
    keys = override_keys(pathway)
    streams = [s.name for s in pathway.streams]  # in the graph's order
    for key, value in keys.items():
        head, *rest = key.split(".")
        if head in streams and len(rest) >= 2:  # STREAM.AREA.FIELD: shown when it differs from AREA.FIELD's value
            if keys.get(".".join(rest)) == value and all(
                    keys.get(f"{other}.{'.'.join(rest)}", value) == value for other in streams):
                continue
        kind, note = notes.get(key, ("", ""))
        per_stream = {other: keys[f"{other}.{key}"] for other in streams if f"{other}.{key}" in keys}
        if head not in streams and key != "share" and len(set(map(repr, per_stream.values()))) > 1:
            value = "differs by stream: " + ", ".join(f"{other} {v!r}" for other, v in per_stream.items())
        if key == "share" and isinstance(value, (list, tuple)):
            value = ",".join(value)  # as it is typed: pathway.share=V1,V2
        lines.append(f"  {GRAPH_PREFIX}{key}: {kind or type(value).__name__} = {value!r}" + (f"  # {note}" if note else ""))
    return "\n".join(lines)
