"""A graph file runs like a script: the modules beside it import, from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

AREA = textwrap.dedent('''
    import attrs
    from visualpath import Area


    @attrs.frozen(kw_only=True)
    class V3Contrast(Area):
        name: str = "V3"
        blocks: int = 1

        def target_dim(self, layout):
            return layout.tube * layout.patch ** 2

        def target(self, inp):
            from areas import normalize_tokens

            return normalize_tokens(inp.layout.patchify(inp.pixels.std(1, keepdim=True)))
''')

GRAPH = textwrap.dedent('''
    from areas import V1Gabor, V2Contour, V4Color
    from areas_mine import V3Contrast  # a sibling module, not installed
    from visualpath import Pathway, RandomMask, Stream


    def build(model):
        dec = model.decoder(depth=1)
        areas = [V1Gabor(blocks=1, decoder=dec), V2Contour(blocks=1, decoder=dec), V3Contrast(blocks=1, decoder=dec),
                 V4Color(blocks=1, decoder=dec)]
        return Pathway(encoder=model.encoder(depth=4), streams=[Stream("ventral", "image", areas,
                                                                       mask=RandomMask(0.75))])
''')


def _lab(root: Path) -> Path:
    (root / "mygraph").mkdir(parents=True)
    (root / "mygraph" / "areas_mine.py").write_text(AREA)
    (root / "mygraph" / "graph.py").write_text(GRAPH)
    (root / "third").mkdir()
    return root


@pytest.mark.e2e
def test_a_graph_importing_its_sibling_builds_from_the_parent_and_a_third_folder(tmp_path):
    root = _lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VISUALPATH_TRUST_FILE"] = str(tmp_path / "store.json")
    for cwd, ref in ((root, "mygraph/graph.py:build"), (root / "third", "../mygraph/graph.py:build")):
        done = subprocess.run([sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", f"pathway={ref}",
                               "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "V3 (V3Contrast, 1 block)" in done.stdout, done.stdout[-3000:]
    assert not any("mygraph" in p for p in sys.path)


def test_the_sibling_is_carried_and_the_folder_leaves_the_import_path(tmp_path, monkeypatch):
    import attrs

    from recipes import bimm_ucf101
    from recipes.graph import build_graph
    from visualpath.trust import trusting

    root = _lab(tmp_path)
    monkeypatch.chdir(root / "third")
    before = list(sys.path)
    try:
        with trusting(named=["../mygraph/graph.py:build"]):
            graph = build_graph(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], pathway="../mygraph/graph.py:build"))
        v3 = [a for a in graph.streams[0].areas if a.name == "V3"][0]
        assert type(v3).__module__ == "areas_mine" and sys.path == before
    finally:
        sys.modules.pop("areas_mine", None)


@pytest.mark.e2e
def test_editing_the_area_file_between_two_commands_says_what_changed_in_one_line(tmp_path):
    """The author trains, edits their area, and runs the same command again: one line saying
    the file changed since the run was made and what to do; restoring it resumes."""
    root = _lab(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["VISUALPATH_TRUST_FILE"] = str(tmp_path / "store.json")
    argv = [sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", "pathway=mygraph/graph.py:build",
            "stages=ventral", "data.image_root=frames", "run_dir=run"]
    first = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    area = root / "mygraph" / "areas_mine.py"
    original = area.read_text()
    area.write_text(original.replace("inp.pixels.std(1, keepdim=True)", "inp.pixels.mean(1, keepdim=True)"))
    again = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    err = again.stderr.strip()
    assert again.returncode == 2 and len(err.splitlines()) == 1, err[-3000:]
    assert "'areas_mine' changed since this run was written" in err and "restore the file" in err
    assert "another run_dir" in err
    area.write_text(original)
    assert subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=600).returncode == 0


def test_a_builder_gets_the_model_settings_only_when_its_signature_asks():
    """``model=`` when the builder has a parameter of that name, nothing otherwise; a parameter
    without a default that is not ``model`` is refused before the builder is called."""
    from recipes.graph import _builder_arguments

    settings = object()

    def bare():
        pass

    def scaled(model):
        pass

    def keyword(depth=4, model=None):
        pass

    def positional(m):
        pass

    assert _builder_arguments(bare, "g.py:bare", settings) == {}
    assert _builder_arguments(scaled, "g.py:scaled", settings) == {"model": settings}
    assert _builder_arguments(keyword, "g.py:keyword", settings) == {"model": settings}
    with pytest.raises(ValueError, match=r"g.py:positional.*its parameter 'm' has no default"):
        _builder_arguments(positional, "g.py:positional", settings)
