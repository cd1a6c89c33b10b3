"""What data may name: registered area modules and registered graph builders (decision T3).

A run's ``pathway.json``, a spec file and a ``--config`` file are someone else's data. A name
they hold is resolved only to something registered, and nothing is imported to find out:

- **an area** (``"type": "mylab.areas:V3"``) only from a module registered as holding areas
  (or a submodule of one): this package's ``areas``, and every module an installed
  distribution declares in the entry-point group ``visualpath.areas``::

      [project.entry-points."visualpath.areas"]
      mylab = "mylab.areas"

- **a graph builder** (``pathway: mylab.graphs:build`` in a config file, or a run's
  ``config.json`` read through ``--config RUN``) only if it is registered: this package's own
  builders, and every entry of the group ``visualpath.graphs`` (``"mylab.graphs:build"``
  registers that function, ``"mylab.graphs"`` every function defined in that module).

Code a run carries and files named by path stay under the trust rule of
:mod:`visualpath.trust`; names the reader types on their own command line, or passes in
Python, are the reader's choice and need no registration. ``--trust-code`` (``trust_code=True``)
lifts the rule for one call.
"""

from __future__ import annotations

import functools

__all__ = ["AREA_GROUP", "GRAPH_GROUP", "area_module", "graph_builder", "registered_areas", "registered_graphs"]

AREA_GROUP = "visualpath.areas"
GRAPH_GROUP = "visualpath.graphs"

# this package's own (also declared as entry points in pyproject.toml; listed here so a
# checkout used without installing its metadata keeps them)
_OWN_AREA_MODULES = ("areas", "visualpath")
_OWN_GRAPHS = ("areas.bimm:paper_pathway", "areas.beyond:with_v3", "areas.beyond:with_cross_layer",
               "areas.beyond:with_feedback", "areas.beyond:with_signed_mt")


@functools.lru_cache(maxsize=None)
def _declared(group: str) -> tuple[str, ...]:
    """The values of an entry-point group, from the installed distributions' metadata (read,
    never imported)."""
    import importlib.metadata

    try:
        points = importlib.metadata.entry_points(group=group)
    except Exception:  # a broken distribution's metadata must not stop the check; it registers nothing
        return ()
    values = {p.value.split("[")[0].strip() for p in points if isinstance(p.value, str)}  # "mod:fn [extra]"
    return tuple(sorted(v for v in values if v))


def registered_areas() -> tuple[str, ...]:
    """Modules whose areas (and their submodules' areas) data may name."""
    return tuple(sorted({*_OWN_AREA_MODULES, *(v.partition(":")[0].strip() for v in _declared(AREA_GROUP))}))


def registered_graphs() -> tuple[str, ...]:
    """Graph builders data may name: ``module:function``, or a ``module`` for all its functions."""
    return tuple(sorted({*_OWN_GRAPHS, *_declared(GRAPH_GROUP)}))


def area_module(module: str) -> bool:
    """Whether data may name an area of ``module`` (registered, or inside a registered package)."""
    return any(module == m or module.startswith(m + ".") for m in registered_areas())


def graph_builder(ref: str) -> bool:
    """Whether data may name ``ref`` (``module:function``) as a graph builder."""
    module = ref.rpartition(":")[0]
    return any(ref == g or (":" not in g and module == g) for g in registered_graphs())
