"""``--help`` documents every key a user can set: each config field and graph key with its
type and one line, every option, each variant's purpose and cost; ``python -m analysis --help``
names its subcommands."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import recipes
from visualpath.config import attribute_docs, field_notes, flat_fields

RECIPES = sorted(m.name for m in pkgutil.iter_modules(recipes.__path__)
                 if isinstance(getattr(importlib.import_module(f"recipes.{m.name}"), "VARIANTS", None), dict))
USER_GRAPH = Path(__file__).parents[1] / "fixtures" / "v3_sobel.py"


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_config_field_of_every_recipe_has_a_description(recipe):
    variants = importlib.import_module(f"recipes.{recipe}").VARIANTS
    for name, cfg in variants.items():
        notes = field_notes(cfg)
        missing = [key for key in flat_fields(cfg) if not notes.get(key)]
        assert not missing, f"recipes.{recipe} --variant {name}: no description for {missing}"


def test_every_graph_key_has_a_type_and_a_description():
    from recipes import bimm_ucf101
    from recipes.graph import build_graph
    from visualpath.overrides import override_keys, override_notes

    for variant in ("demo", "paper"):
        pathway = build_graph(bimm_ucf101.VARIANTS[variant])
        notes = override_notes(pathway)
        assert set(notes) == set(override_keys(pathway))
        bare = [key for key, (kind, note) in notes.items() if not kind or not note]
        assert not bare, bare


def test_a_user_areas_fields_are_typed_in_the_graph_keys():
    """A user's area that documents nothing still shows each field's type."""
    from recipes import bimm_ucf101
    from recipes.graph import build_graph

    from visualpath.overrides import override_notes

    cfg = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], pathway=f"{USER_GRAPH}:build")
    notes = override_notes(build_graph(cfg))
    assert notes["ventral.V3.cells"][0] == "int" and notes["V3.decoder.width"] == (
        "int", "decoder token width (VideoMAE-B uses 384)")


def test_descriptions_come_from_the_attributes_section_of_the_docstrings():
    @attrs.frozen
    class Base:
        """A base.

        Attributes:
            a: the first value.
            b: a value whose description
                runs over two lines (e.g. this one).
            c (int): with its type, as Google's style allows.
        """

        a: int = 1
        b: int = 2
        c: int = 3
        d: int = 4  # a comment is code's, not --help's

    @attrs.frozen
    class Derived(Base):
        """A subclass.

        Args:
            a: the subclass's word wins.
        """

        a: int = 5

    assert attribute_docs(Base) == {"a": "the first value", "b": "a value whose description runs over two lines "
                                    "(e.g. this one)", "c": "with its type, as Google's style allows"}
    assert attribute_docs(Derived) == {**attribute_docs(Base), "a": "the subclass's word wins"}


@pytest.mark.e2e
def test_the_recipe_help_lists_every_option_variant_and_key():
    done = subprocess.run([sys.executable, "-m", "recipes.bimm_ucf101", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    for option in ("--data-root DIR", "--trust-code", "--config FILE", "--print-config", "--variant V",
                   "pathway.KEY=VALUE"):
        assert f"\n  {option}" in text, option
    for variant in ("demo", "paper", "tiny"):
        line = next(line for line in text.splitlines() if line.startswith(f"  {variant} "))
        assert len(line.split(None, 1)[1]) > 20, line  # what it is for
    keys = [line for line in text.splitlines() if line.startswith("  ") and ": " in line and " = " in line]
    assert len(keys) > 150 and all("  # " in line for line in keys), [k for k in keys if "  # " not in k][:5]
    names = [line.split(":")[0].strip() for line in keys]
    assert len(names) == len(set(names)), "a setting listed twice"


@pytest.mark.e2e
def test_the_analysis_help_names_its_subcommands():
    done = subprocess.run([sys.executable, "-m", "analysis", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "analysis extract" in done.stdout and "analysis predict" in done.stdout
