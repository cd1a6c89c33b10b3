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
