"""Data names only what is registered (decision T3): an installed module a run, a spec or a
config file names is imported only when it is registered for what it is named as, and a
module name never means a file in the current folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

from recipes import bimm_ucf101
from recipes.graph import build_graph
from visualpath import registry, spec, trust
from visualpath.errors import SpecError
from visualpath.trust import CodeNotTrusted, trusting

TINY = bimm_ucf101.VARIANTS["tiny"]


def _from_config(ref: str):
    """``build_graph`` as a ``--config`` file's ``pathway:`` reaches it: a command line set the
    policy and did not name the graph."""
    with trusting(command=True):
        return build_graph(attrs.evolve(TINY, pathway=ref))


@pytest.mark.parametrize("ref, module", [("this:V1Gabor", "this"), ("idlelib.idle:X", "idlelib.idle"),
                                         ("os:system", None), ("torch.nn:Linear", None)])
def test_an_unregistered_installed_module_named_as_an_area_is_refused_before_import(ref, module):
    with pytest.raises(CodeNotTrusted, match="not registered as holding visualpath areas.*nothing was imported"):
        spec.area_class(ref, "type")
    if module is not None:
        assert module not in sys.modules  # `this` would have printed the Zen of Python, idlelib opened a window


@pytest.mark.parametrize("ref", ["V1Gabor", "areas:V1Gabor", "areas.v1_gabor:V1Gabor"])
def test_the_packages_own_areas_are_registered(ref):
    from areas import V1Gabor

    assert spec.area_class(ref, "type") is V1Gabor


@pytest.mark.parametrize("ref", ["pytest:main", "torch.utils.collect_env:main", "this:X", "areas.bimm:run_pathway"])
def test_an_unregistered_installed_function_named_by_a_config_is_not_called(ref):
    with pytest.raises(CodeNotTrusted, match="not registered as a visualpath graph builder"):
        _from_config(ref)
    assert "this" not in sys.modules


def test_a_registered_builder_named_by_a_config_builds_and_the_reader_may_name_any():
    assert "V3" in [a.name for s in _from_config("areas.beyond:with_v3").streams for a in s.areas]
    with pytest.raises(SpecError, match="top level"):
        _from_config("areas.beyond:os.system")
    # the flag lifts the registration rule for one call; a standard-library function is still no builder
    with trusting(trust_code=True, command=True), pytest.raises(SpecError, match="is not a graph builder"):
        build_graph(attrs.evolve(TINY, pathway="json:dumps"))


def _fake_installed_package(root: Path, monkeypatch, entry_points: str) -> None:
    """``mylab`` installed with its metadata declaring ``entry_points`` (an entry_points.txt)."""
    (root / "mylab").mkdir()
    (root / "mylab" / "__init__.py").write_text("")
    (root / "mylab" / "areas.py").write_text("from areas.v1_gabor import V1Gabor as LabV1\n")
    (root / "mylab" / "other.py").write_text("from areas.v1_gabor import V1Gabor as LabV1\n")
    (root / "mylab" / "graphs.py").write_text(textwrap.dedent("""
        from areas.bimm import paper_pathway

        def build(model):
            return paper_pathway(model)

        def unlisted(model):
            return paper_pathway(model)
    """))
    info = root / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "top_level.txt").write_text("mylab\n")
    monkeypatch.syspath_prepend(str(root))
    dirs = trust._install_dirs()
    monkeypatch.setattr(trust, "_install_dirs", lambda: (*dirs, root.resolve()))  # as if in site-packages
    registry._declared.cache_clear()
    for name in [n for n in sys.modules if n == "mylab" or n.startswith("mylab.")]:
        monkeypatch.delitem(sys.modules, name)


def test_an_installed_package_registers_its_areas_and_builders_by_entry_point(tmp_path, monkeypatch):
    _fake_installed_package(tmp_path, monkeypatch, textwrap.dedent("""
        [visualpath.areas]
        mylab = mylab.areas

        [visualpath.graphs]
        build = mylab.graphs:build
    """))
    try:
        assert trust.installed("mylab") and registry.area_module("mylab.areas")
        from areas import V1Gabor

        assert spec.area_class("mylab.areas:LabV1", "type") is V1Gabor
        with pytest.raises(CodeNotTrusted, match="'mylab.other'"):
            spec.area_class("mylab.other:LabV1", "type")
        assert "mylab.other" not in sys.modules
        assert _from_config("mylab.graphs:build").streams
        with pytest.raises(CodeNotTrusted, match="'mylab.graphs:unlisted'"):
            _from_config("mylab.graphs:unlisted")
    finally:
        registry._declared.cache_clear()


def test_a_module_name_never_means_a_file_in_the_current_folder(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (tmp_path / "colleague.py").write_text(payload + "def build():\n    raise SystemExit('built')\n")
    (tmp_path / "graph.py").write_text(payload)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` puts the current folder first
    with trusting(named=["colleague:build"]), pytest.raises(SpecError, match="current folder.*name it by its path \\('colleague.py:NAME'"):
        build_graph(attrs.evolve(TINY, pathway="colleague:build"))
    # a spec naming `graph.json:X` is not `./graph.py`, even under --trust-code
    stored = build_graph(TINY).to_dict()
    stored["streams"][0]["areas"][0]["type"] = "graph.json:X"
    (tmp_path / "graph.json").write_text(json.dumps(stored))
    with trusting(trust_code=True, command=True), pytest.raises(SpecError, match="current folder"):
        build_graph(attrs.evolve(TINY, pathway="graph.json"))
    assert not marker.exists()


@pytest.mark.e2e
def test_the_recipe_refuses_both_routes_in_one_line_and_remembers_nothing(tmp_path):
    """As a user types it: a config file naming ``pytest:main`` beside a planted ``conftest.py``,
    and a module name typed on the command line that only the current folder holds."""
    marker = tmp_path / "marker"
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    (tmp_path / "conftest.py").write_text(payload)
    (tmp_path / "colleague.py").write_text(payload + "def build():\n    pass\n")
    (tmp_path / "shared.yaml").write_text("pathway: 'pytest:main'\nrun_dir: r\n")
    store = tmp_path / "store.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VISUALPATH_TRUST_FILE"] = str(store)
    for argv in (["--config", "shared.yaml"], ["pathway=colleague:build", "run_dir=r2"]):
        done = subprocess.run([sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", *argv], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        err = done.stderr.strip()
        assert done.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err[-2000:]
        assert ("pytest:main" in err) if argv[0] == "--config" else ("current folder" in err), err
    assert not marker.exists() and not store.exists()
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
