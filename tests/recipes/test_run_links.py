"""Nothing is written or read through a link planted in a shared run (docs/reliability.md#security).

A run directory is an archive a colleague sends (a tarball carries symbolic links): a link
named like one of the run's files, pointing out of it, must not make a consumer write, lock
or read there. One tiny run of the paper's graph (no code needed), copied per test with the
link planted, opened by the commands users run from another folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.recipes.test_run_artefact import CONSUMERS, TINY, _refused, _run
from visualpath.rundir import LinkedRun, check_links


pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("links")
    done = _run("-m", "recipes.bimm_ucf101", *TINY, f"run_dir={root / 'run'}", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    from recipes import bimm_ucf101, stages

    _, records, _ = stages.video_records(bimm_ucf101.VARIANTS["tiny"], train=False)
    return root / "run", Path(records[0].path)


# a link planted in the run (relative path) -> the consumer that would write or read through it
PLANTED = {
    ".lock": "resume",  # truncated and rewritten with "PID time" by the lock
    "results.json": "resume",
    "classes.json": "resume",
    "metrics.jsonl": "resume",  # appended to
    "analysis": "analysis",  # a folder: results.json and figures written into it
    "analysis/results.json": "analysis",
    "joint/model.safetensors": "analysis",  # weights read from outside, their hash looked up there
}


@pytest.mark.parametrize("link", list(PLANTED))
def test_a_planted_link_is_refused_in_one_line_and_nothing_goes_through_it(paper_run, tmp_path, link):
    run_src, video = paper_run
    run = tmp_path / "run"
    shutil.copytree(run_src, run, symlinks=True)
    victim = tmp_path / "victim"
    if link == "analysis":
        victim.mkdir()
        (victim / "results.json").write_text("precious")
    else:
        victim.write_text("precious")
    planted = run / link
    planted.parent.mkdir(exist_ok=True)
    if planted.is_dir() and not planted.is_symlink():
        shutil.rmtree(planted)
    elif planted.exists() or planted.is_symlink():
        planted.unlink()
    planted.symlink_to(victim)
    before = {p: p.read_bytes() for p in ([victim / "results.json"] if victim.is_dir() else [victim])}
    done = _run(*CONSUMERS[PLANTED[link]](run, video, tmp_path), cwd=tmp_path)
    _refused(done, link, "symbolic link", str(victim))
    assert {p: p.read_bytes() for p in before} == before
    if victim.is_dir():
        assert sorted(os.listdir(victim)) == ["results.json"]


def test_the_links_a_run_makes_itself_pass_and_any_other_is_named(paper_run, tmp_path):
    run_src, _ = paper_run
    run = tmp_path / "run"
    shutil.copytree(run_src, run, symlinks=True)
    own = [p for p in run.rglob("*") if p.is_symlink()]
    assert {p.name for p in own} >= {"current", "model.safetensors", "state.pt"}  # a stage's checkpoint selection
    assert check_links(run) == run.resolve()
    # the same names pointing elsewhere are not the run's own
    for name, target in (("current", "../../elsewhere"), ("current", "/tmp"), ("state.pt", "../finetune/state.pt")):
        stage = run / "joint"
        (stage / name).unlink()
        (stage / name).symlink_to(target)
        with pytest.raises(LinkedRun, match=f"joint/{name} is a symbolic link"):
            check_links(run)
        (stage / name).unlink()
        shutil.copy2(run_src / "joint" / name, stage / name, follow_symlinks=False)
    check_links(run)
    deep = run / "code" / "deep"
    deep.mkdir(parents=True)
    (deep / "x\x1b[2Jy").symlink_to(tmp_path)
    with pytest.raises(LinkedRun) as err:
        check_links(run)
    assert "\x1b" not in str(err.value) and "x\\x1b[2Jy" in str(err.value)  # a terminal escape is shown, not sent


def test_a_run_folder_named_on_the_command_line_is_read_as_a_run_not_imported(paper_run, tmp_path):
    """``pathway=colleague`` where ``colleague/`` is a colleague's run with an ``__init__.py``
    planted and its graph naming ``colleague:V1Gabor``: the folder is a run (data), so the
    module of the same name is not the reader's naming: never imported, never trusted."""
    import json

    from tests.recipes.test_run_artefact import PAYLOAD

    run_src, _ = paper_run
    run = tmp_path / "colleague"
    shutil.copytree(run_src, run, symlinks=True)
    marker = tmp_path / "marker"
    (run / "__init__.py").write_text(PAYLOAD.format(marker=str(marker)))
    spec = json.loads((run / "pathway.json").read_text())
    for stream in spec["streams"]:
        for area in stream["areas"]:
            if area["name"] == "V1":
                area["type"] = "colleague:V1Gabor"
    (run / "pathway.json").write_text(json.dumps(spec))
    store = tmp_path / "reader.json"
    for extra in (["--help"], [f"run_dir={tmp_path / 'mine'}"]):
        done = _run("-m", "recipes.bimm_ucf101", *TINY, "pathway=colleague", *extra, cwd=tmp_path, store=store)
        if extra != ["--help"]:
            _refused(done, "'colleague'", "current folder")  # a module name never means ./colleague (T3)
        assert not marker.exists()
        assert not store.exists() or "colleague" not in store.read_text()
