"""What counts as installed code: decided by where Python would find a module, not its name."""

import subprocess
import sys

import pytest


@pytest.mark.e2e
def test_a_standard_library_name_in_the_current_folder_is_not_trusted(tmp_path):
    """``tabnanny.py`` beside the command shadows the standard library's: it is the folder's
    code, refused like any other; the payload never runs."""
    marker = tmp_path / "marker"
    (tmp_path / "tabnanny.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    code = ("import sys; sys.path.insert(0, ''); from visualpath import usercode, trust\n"
            "assert not trust.installed('tabnanny') and trust.installed('json') and trust.installed('areas')\n"
            "try:\n    usercode.import_module('tabnanny', 'test')\nexcept usercode.CodeError as err:\n"
            "    assert 'current folder' in str(err), err\n    sys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr[-2000:]
    assert not marker.exists()


def test_a_programs_entry_point_is_never_a_graphs_module():
    from visualpath import usercode

    with pytest.raises(usercode.CodeError, match="entry point"):
        usercode.import_module("venv.__main__", "test")


@pytest.mark.parametrize("ref", ["sys:exit", "code:interact", "pdb:set_trace"])
def test_a_standard_library_callable_is_not_a_graph_builder(ref):
    import attrs

    from recipes import bimm_ucf101
    from recipes.graph import build_graph
    from visualpath.errors import SpecError

    with pytest.raises(SpecError, match="is not a graph builder"):
        build_graph(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], pathway=ref))


@pytest.mark.parametrize("listed", [True, False])
def test_an_editable_projects_module_is_installed_only_if_the_project_provides_its_name(tmp_path, monkeypatch,
                                                                                       listed):
    """``pip install -e`` puts a project folder on ``sys.path``: its modules are installed
    code when the editable distribution declares them (``top_level.txt``); another module
    that happens to sit in that folder is not."""
    import json

    from visualpath import trust

    project, site = tmp_path / "labproject", tmp_path / "site"
    project.mkdir()
    site.mkdir()
    (project / "labtools.py").write_text("X = 1\n")
    (project / "scratch.py").write_text("X = 2\n")
    info = site / "labproject-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labproject\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("labtools\n" if listed else "")
    (info / "RECORD").write_text("__editable__.labproject-0.1.pth,,\n")
    (info / "direct_url.json").write_text(json.dumps({"url": project.as_uri(), "dir_info": {"editable": True}}))
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(site))
    trust._editable_projects.cache_clear()
    try:
        assert trust.installed("labtools") is listed
        assert not trust.installed("scratch")
    finally:
        monkeypatch.undo()
        trust._editable_projects.cache_clear()
