"""A user's own videos reach the recipes: VideoMAE's path-label lists, one folder per class,
and an unlabeled folder for pretraining; each checked before compute."""

import json
import os

import pytest

from recipes import bimm_ucf101, pipeline
from visualpath.data.formats import read_ucf101
from visualpath.data.synthetic import SyntheticSpec, generate


pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("own") / "ucf", SyntheticSpec(seed=5, groups=7, clips=1, frames=16,
                                                                          size=64))


def _main(*argv):
    return bimm_ucf101.main(["--variant", "tiny", "device=cpu", "data.image_root=frames", *argv])


def test_videomae_lists_train_every_stage(ucf, tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    for part, train in (("train", True), ("val", False)):
        records, classes = read_ucf101(ucf, 1, train=train)
        lines = [f"{r.path} {r.label}" for r in records]  # absolute: a relative entry stays inside data.root
        (root / f"{part}.csv").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    run = tmp_path / "run"
    assert _main(f"data.root={root}", "data.format=lists", f"run_dir={run}") == 0
    assert json.loads((run / "classes.json").read_text()) == classes
    assert json.loads((run / "results.json").read_text())["test_items"] == 20


def test_class_folders_train_every_stage(ucf, tmp_path):
    root = tmp_path / "mine"
    for part, train in (("train", True), ("val", False)):
        records, classes = read_ucf101(ucf, 1, train=train)
        for r in records:
            target = root / part / classes[r.label] / r.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(r.path, target)
    run = tmp_path / "run"
    assert _main(f"data.root={root}", "data.format=folders", f"run_dir={run}") == 0
    assert json.loads((run / "classes.json").read_text()) == sorted(classes)


def test_unlabeled_videos_pretrain_and_refuse_finetuning(ucf, tmp_path, capsys, monkeypatch):
    root = tmp_path / "clips"
    root.mkdir()
    for r in read_ucf101(ucf, 1, train=True)[0][:12]:
        os.symlink(r.path, root / r.path.name)
    run = tmp_path / "run"
    assert _main(f"data.root={root}", "data.format=unlabeled", f"run_dir={run}", "stages=ventral,joint") == 0
    assert (run / "joint" / "model.safetensors").is_file()
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(SystemExit):
        _main(f"data.root={root}", "data.format=unlabeled", f"run_dir={tmp_path / 'ft'}")
    assert "has no labels to finetune or test on" in capsys.readouterr().err


@pytest.mark.parametrize("write, message", [
    (lambda root: (root / "train.csv").write_text("a.avi\n"), "expected '<path> <integer label>'"),
    (lambda root: (root / "train.csv").write_text("a.avi 0\n"), "missing: val"),
])
def test_a_broken_list_is_refused_before_compute(write, message, tmp_path, capsys, monkeypatch):
    root = tmp_path / "mine"
    root.mkdir()
    write(root)
    if "val" not in message:
        (root / "val.csv").write_text("b.avi 0\n")
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(SystemExit):
        _main(f"data.root={root}", "data.format=lists")
    assert message in capsys.readouterr().err
