"""Every row of the paper's Table 7 as a config diff of :mod:`recipes.bimm_ucf101`.

    python -m recipes.ablations --table 7e                 # demo scale, built-in set
    python -m recipes.ablations --table 7c data.root=/data/ucf
    python -m recipes.ablations --table all --variant tiny

Each row is a full run (pretraining, finetuning, 5x3 test) in ``<run_dir>/table7/<row>``;
rows equal to the default configuration (the paper's gray entries) share one run, and a
finished row is not trained again (runs resume). The table prints in the paper's format,
row x top-1, with the paper's figure beside ours.

At paper scale every row pretrains 800 joint epochs on UCF101 (appendix B.2: "the ablation
studies are conducted with 800 epochs of pretraining on UCF101"), except the VideoMAE
baseline, whose 90.7 the paper quotes at 1600 epochs. The default rows initialise the dorsal
branch from a ventral branch pretrained on ImageNet (``data.image_root``), Table 7a's gray
entry.

Tables:

- 7a initialisation of the dorsal branch: none, from the ventral branch pretrained on
  frames of the video set ("UCF101 Init") or on ImageNet ("IN-1K Init": ``data.image_root``;
  at demo scale the built-in shape images stand in for it).
- 7b without the ventral branch: the VideoMAE baseline, BIMM's dorsal branch alone, BIMM.
- 7c prediction targets: V1, V1-V2, V1-V2-V4&MT (the others' loss weights set to 0 in the
  joint stage only; the ventral stage is the default one).
- 7d where the decoders read: blocks 12; 4-8-12; 6-9-12; 2-4-12, as the areas' own keys
  (``pathway.V1.blocks=4 pathway.V2.blocks=4 pathway.V4.blocks=4 pathway.MT.blocks=4``). For an
  encoder of depth ``D`` other than 12 the boundaries scale by ``D / 12`` (rounded, kept
  distinct where the paper's are), so the demo's 4 blocks give (4, 0, 0), (1, 2, 1), (2, 1, 1),
  (1, 1, 2). The "12" row is :func:`areas.bimm.read_at_last_block`: it shares the default's
  first blocks (1-4; decision D14), so that it differs from the default only in where the
  decoders read.
- 7e weight sharing between the branches: ``pathway.share=none``, partial (V1 and V2), ``all``.
- 7f video mask ratio: 0.5, 0.75, 0.9, 0.95 (the image mask stays 0.75).

Beyond the paper (its limitation section's open questions; no paper figures but the default's):

- x1 graph features: the paper's graph; + V3 (dynamic form, :func:`areas.beyond.with_v3`);
  + cross-layer (MT's decoder also reads V1); + feedback (a top-down link MT -> V1 in the
  dorsal stream); signed MT (the signed frame difference). Besides top-1 it prints the
  frozen-feature linear probe of every area of every row (``python -m analysis``'s).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import attrs
from rich.console import Console
from rich.table import Table

from recipes import bimm_ucf101
from recipes.checks import check
from recipes.cli import paper_if_data
from recipes.config import Config
from recipes.pipeline import run
from visualpath.config import apply_overrides, parse_cli

__all__ = ["TABLES", "rows", "run_table", "main"]

DEFAULT = "default"


PAPER_EPOCHS = 800  # appendix B.2: Table 7's joint pretraining on UCF101


@attrs.frozen
class Row:
    """One row: its label in the paper, the paper's top-1, the overrides that make it, and
    the joint epochs the paper ran it for at paper scale."""

    label: str
    paper: float | None
    overrides: tuple[str, ...] = ()
    epochs: int = PAPER_EPOCHS
    short: str = ""  # a column header for tables that print rows as columns


_ALL_STAGES = "stages=ventral,joint,finetune,test"


def _readouts(boundaries: str) -> tuple[str, ...]:
    """Table 7d's row "B1-B2-12" as the graph's own keys: each area's blocks, the paper's
    boundaries scaled to the encoder's depth when the row is resolved (:func:`scaled_split`)."""
    return tuple(f"pathway.{area}.blocks=<{boundaries}:{i}>" for area, i in (("V1", 0), ("V2", 1), ("V4", 2), ("MT", 2)))
_NO_VENTRAL = "stages=joint,finetune,test"

TABLES: dict[str, tuple[str, str, tuple[Row, ...]]] = {
    "7a": ("Initialization", "Initialization of dorsal branch", (
        Row("No Init", 90.9, (_NO_VENTRAL, "model.dorsal_init=none")),
        Row("UCF101 Init", 91.2, ("data.image_root=frames",)),
        Row("IN-1K Init", 92.5, ("data.image_root=<images>",)),
    )),
    "7b": ("Method", "Pretrain without ventral branch", (
        Row("Baseline", 90.7, (_NO_VENTRAL, "model.streams=dorsal", "model.targets=RGB"), epochs=1600),
        Row("BIMM-Dorsal", 91.0, (_NO_VENTRAL, "model.streams=dorsal")),
        Row("BIMM", 92.5),
    )),
    "7c": ("Prediction target", "Ablation of prediction target", (
        Row("V1", 89.3, ("model.targets=V1",)),
        Row("V1-V2", 90.2, ("model.targets=V1-V2",)),
        Row("V1-V2-V4&MT", 92.5),
    )),
    "7d": ("Separation", "Separation of intermediate blocks", (
        Row("12", 91.0, ("pathway=areas.bimm:read_at_last_block",)),
        Row("4-8-12", 91.7, _readouts("4-8-12")),
        Row("6-9-12", 91.3, _readouts("6-9-12")),
        Row("2-4-12", 92.5),
    )),
    "7e": ("Sharing strategy", "Partial weight sharing", (
        Row("No sharing", 91.0, ("pathway.share=none",)),
        Row("Partial Sharing", 92.5),
        Row("All Sharing", 91.3, ("pathway.share=all",)),
    )),
    "7f": ("Mask ratio", "Mask ratio", (
        Row("0.5", 91.7, ("pathway.dorsal.mask.ratio=0.5",)),
        Row("0.75", 91.9, ("pathway.dorsal.mask.ratio=0.75",)),
        Row("0.9", 92.5),
        Row("0.95", 91.5, ("pathway.dorsal.mask.ratio=0.95",)),
    )),
    "x1": ("Graph", "Beyond the paper: V3, cross-layer, feedback, signed MT", (
        Row("BIMM (paper's graph)", 92.5, short="paper"),
        Row("+ V3 (dynamic form)", None, ("pathway=areas.beyond:with_v3",), short="+V3"),
        Row("+ cross-layer (MT reads V1)", None, ("pathway.dorsal.MT.decoder.reads=V1",), short="+cross-layer"),
        Row("+ feedback (MT to V1)", None, ("pathway.dorsal.feedback=MT>V1",), short="+feedback"),
        Row("signed MT", None, ("pathway.dorsal.MT.signed=true",), short="signed MT"),
    )),
}
PROBED = ("x1",)  # tables that also print every row's frozen-feature probe per area


def scaled_split(boundaries: tuple[int, ...], depth: int) -> tuple[int, int, int]:
    """Table 7d's decoder blocks (of a 12-block ViT) for an encoder of ``depth`` blocks."""
    b1, b2 = (boundaries + (12, 12))[:2]
    if depth == 12:
        s1, s2 = b1, b2
    else:
        s1 = min(max(1, round(b1 * depth / 12)), depth)
        s2 = min(max(s1, round(b2 * depth / 12)), depth)
        if b2 > b1:
            s2 = max(s2, s1 + 1)
        if b2 < 12:
            s2 = min(s2, depth - 1)
            s1 = min(s1, s2 - 1) if b2 > b1 else s1
    return (s1, s2 - s1, depth - s2)


def _resolve(text: str, base: Config) -> str:
    key, value = text.split("=", 1)
    if value == "<images>":
        value = base.data.image_root if base.data.image_root not in (None, "frames") else \
            ("builtin" if base.data.root is None else "")
        if not value:
            raise ValueError("the IN-1K Init row needs data.image_root (an ImageNet-layout folder)")
    match = re.fullmatch(r"<([\d-]+):(\d)>", value)  # one area's blocks of a Table 7d row
    if match:
        split = scaled_split(tuple(int(b) for b in match.group(1).split("-")), base.model.encoder_depth)
        value = str(split[int(match.group(2))])
    return f"{key}={value}"


def at_paper_scale(base: Config) -> bool:
    """Whether ``base`` pretrains as the paper's UCF101 recipe does (not the demo or tiny)."""
    return base.joint.optim == bimm_ucf101.config().joint.optim


def ablation_base(base: Config) -> Config:
    """The configuration every row edits: at paper scale, 800 joint epochs and the ventral
    stage on ImageNet when ``data.image_root`` names it (the gray entries)."""
    if not at_paper_scale(base):
        return base
    return attrs.evolve(base, joint=attrs.evolve(base.joint, optim=attrs.evolve(base.joint.optim,
                                                                                epochs=PAPER_EPOCHS)))


def rows(table: str, base: Config) -> list[tuple[Row, Config | None, str]]:
    """``(row, config, note)`` for each row of ``table``; config is None when it cannot run."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)} or all")
    root = Path(base.run_dir) / "table7"
    paper_scale = at_paper_scale(base)
    base = ablation_base(base)
    out = []
    for row in TABLES[table][2]:
        try:
            overrides = [_resolve(o, base) for o in row.overrides]
        except ValueError as err:
            out.append((row, None, str(err)))
            continue
        if paper_scale and row.epochs != PAPER_EPOCHS:
            overrides.append(f"joint.optim.epochs={row.epochs}")
        graph_edits = tuple(o for o in overrides if o.startswith("pathway."))
        plain = [o for o in overrides if not o.startswith("pathway.")]
        cfg = apply_overrides(base, plain) if plain else base
        if graph_edits:
            cfg = attrs.evolve(cfg, pathway_overrides=cfg.pathway_overrides + graph_edits)
        same = cfg == base
        slug = DEFAULT if same else f"{table}-" + re.sub(r"[^A-Za-z0-9]+", "-", row.label).strip("-").lower()
        cfg = attrs.evolve(cfg, run_dir=str(root / slug), name=f"Table {table}: {row.label}")
        try:
            check(cfg)
        except ValueError as err:  # e.g. no data.image_root at paper scale: the row says what it needs
            out.append((row, None, str(err)))
            continue
        out.append((row, cfg, " ".join(overrides) or "default"))
    return out


def run_table(table: str, base: Config, console: Console | None = None) -> list[dict]:
    """Run every row of ``table`` (each resumes if done); returns the rows' results."""
    console = console or Console()
    results = []
    for row, cfg, note in rows(table, base):
        if cfg is None:
            results.append({"label": row.label, "paper": row.paper, "top1": None, "note": note})
            continue
        console.rule(f"Table {table}: {row.label} ({note})")
        out = run(cfg)
        result = {"label": row.label, "short": row.short or row.label, "paper": row.paper, "top1": out.get("top1"),
                  "note": note, "run_dir": cfg.run_dir}
        if table in PROBED:
            result["probes"] = probe_row(cfg)
        results.append(result)
    console.print(format_table(table, results))
    if table in PROBED:
        console.print(format_probes(table, results))
    return results


def probe_row(cfg: Config) -> dict[str, float]:
    """``{"stream.area": linear-probe top-1}`` of a finished row's pretrained encoder."""
    from analysis.report import analyse_run

    report = analyse_run(cfg.run_dir, stage="joint", figures=False, progress=False)
    return {f"{r['stream']}.{r['area']}": r["probe_top1"] for r in report["rows"]}


def format_probes(table: str, results: list[dict]) -> Table:
    """Frozen-feature linear probe (top-1 %) of every area (rows) under every graph (columns);
    "-" where a graph has no such area."""
    keys = list(dict.fromkeys(k for r in results for k in (r.get("probes") or {})))
    t = Table(title=f"Table {table}: frozen-feature linear probe per area, top-1 (%)")
    t.add_column("stream.area")
    for r in results:
        t.add_column(r.get("short") or r["label"], justify="right")
    for k in keys:
        t.add_row(k, *(f"{100 * r['probes'][k]:.1f}" if k in (r.get("probes") or {}) else "-" for r in results))
    return t


def format_table(table: str, results: list[dict]) -> Table:
    """The paper's layout: the varied setting, then Acc(%): ours and the paper's."""
    header, caption, _ = TABLES[table]
    t = Table(title=f"Table {table}: {caption}")
    t.add_column(header)
    t.add_column("Acc(%) ours", justify="right")
    t.add_column("Acc(%) paper", justify="right")
    t.add_column("config diff")
    for r in results:
        ours = f"{100 * r['top1']:.1f}" if r["top1"] is not None else "-"
        t.add_row(r["label"], ours, f"{r['paper']:.1f}" if r["paper"] is not None else "-", r["note"])
    return t


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tables = []
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--table" and i + 1 < len(argv):
            tables.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--table="):
            tables.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    if not tables and not any(a in ("-h", "--help") for a in rest):
        print(f"error: --table is required ({', '.join(TABLES)} or all)", file=sys.stderr)
        return 2
    if "all" in tables:
        tables = list(TABLES)
    for t in tables:
        if t not in TABLES:
            print(f"error: unknown table {t!r}; tables: {', '.join(TABLES)} or all", file=sys.stderr)
            return 2
    rest = paper_if_data(rest, bimm_ucf101.VARIANTS)
    _, base = parse_cli(rest, bimm_ucf101.VARIANTS, "recipes.ablations --table T", __doc__)
    if base.pathway is not None or base.pathway_overrides:
        print("error: Table 7's rows are edits of the paper's graph (its model.* and pathway.* keys); pathway= and "
              "pathway.* overrides are for recipes.bimm_ucf101 and the other recipes", file=sys.stderr)
        return 2
    blocked = [(t, row.label, note) for t in tables for row, cfg, note in rows(t, base) if cfg is None]
    if blocked:  # every row's config is checked before any compute
        for t, label, note in blocked:
            print(f"error: Table {t}, row {label!r}: {note}", file=sys.stderr)
        return 2
    for t in tables:
        run_table(t, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
