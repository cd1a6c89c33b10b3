"""Every refusal is one line before compute; one writer per run directory; resume is never
silent or wrong."""

import json
import os

import attrs
import pytest

from recipes import bimm_ucf101, pipeline
from visualpath.rundir import RunLock


def _main(*argv):
    return bimm_ucf101.main(["--variant", "tiny", "device=cpu", *argv])


def _refused(capsys, monkeypatch, *argv) -> str:
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(SystemExit) as exit_info:
        _main(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_a_second_run_in_a_busy_run_directory_is_refused_naming_the_holder(tmp_path, capsys, monkeypatch):
    with RunLock(tmp_path / "run"):
        err = _refused(capsys, monkeypatch, f"run_dir={tmp_path / 'run'}", "stages=ventral")
    assert f"is in use by PID {os.getpid()}" in err


@pytest.mark.e2e
def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    code = ("import os, sys; from visualpath.rundir import RunLock; "
            f"lock = RunLock({str(run)!r}).__enter__(); os._exit(9)")  # dies holding the lock
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (run / ".lock").is_file()
    with RunLock(run):  # the kernel released it with the process
        pass


@pytest.mark.parametrize("argv, message", [
    (("joint.optim.min_lr=10",), "min_lr (10) must be below the peak rate"),
    (("test.clips=0",), "clips must be an integer >= 1"),
    (("test.crops=5",), "crops must be one of [1, 3]"),
    (("test.batch_size=0",), "batch_size must be an integer >= 1"),
    (("joint.optim.base_lr=1e3",), "base_lr must be at most 1"),
    (("joint.optim.base_lr=inf",), "base_lr must be a finite number > 0"),
    (("finetune.smoothing=2",), "smoothing must be a number in [0, 1)"),
    (("finetune.mixup=-1",), "mixup must be a finite number >= 0"),
    (("finetune.drop_path=1.5",), "drop_path must be a number in [0, 1)"),
    (("log_every=0",), "log_every must be an integer >= 1"),
    (("data.workers=-1",), "workers must be an integer >= 0"),
    (("seed=-1",), "seed must be an integer from 0 to 4294967295"),
    (("seed=99999999999999999999",), "seed must be an integer from 0 to 4294967295"),
    (("finetune.randaugment=randm7",), "expected 'rand' then sections"),
    (("finetune.randaugment=rand-m7-n4-mstd0.5-incl",), "its section 'incl' is not one of"),
    (("finetune.crop_area=1.5,0.2",), "crop_area must be two numbers low,high with 0 < low <= high <= 1"),
    (("finetune.crop_area=-1,0.5",), "crop_area must be two numbers"),
    (("finetune.crop_area=0,0",), "crop_area must be two numbers"),
    (("finetune.repeated=0",), "repeated must be an integer >= 1"),
    (("finetune.repeated=-2",), "repeated must be an integer >= 1"),
    (("finetune.erase=2",), "erase must be a probability in [0, 1]"),
    (("finetune.erase=-1",), "erase must be a probability in [0, 1]"),
    (("ventral.optim.milestones=-5",), "milestones must be epochs >= 0"),
    (("run_dir=",), "run_dir must name a folder"),
    (("stages=ventral,ventral",), "stages names a stage twice"),
    (("data.synthetic_size=8", "data.size=48"), "data.synthetic_size=8 is less than half the crop"),
    (("data.synthetic_groups=0",), "synthetic_groups must be an integer >= 1"),
    (("device=cuda:7",), "device=cuda:7: this machine has"),
    (("device=tpu",), "device must be auto, cpu, mps, cuda or cuda:N"),
    (("data.size=100000",), "data.size=100000 with data.frames=4 needs at least"),
    (("data.frames=100000",), "GiB for a joint batch (8 decoded clips"),  # was: silent until killed
    (("data.frames=100000", "stages=ventral,finetune,test"), "GiB for a finetune batch"),
    (("ventral.optim.batch_size=100000",), "ventral.optim.batch_size=100000 (x 1 accumulation) needs more than the "
                                           "50 training videos each of 1 process(es) gets"),
    (("joint.optim.batch_size=26", "joint.optim.accum_steps=2"), "joint.optim.batch_size=26 (x 2 accumulation)"),
    (("finetune.optim.batch_size=51",), "finetune.optim.batch_size=51 (x 1 accumulation) needs more than the 50 "
                                        "training videos each of 1 process(es) gets: no full step; lower it to at "
                                        "most 50"),
])
def test_values_that_pass_the_types_but_cannot_work_are_refused(argv, message, capsys, monkeypatch):
    assert message in _refused(capsys, monkeypatch, *argv)


def test_an_unwritable_run_directory_is_refused(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _refused(capsys, monkeypatch, f"run_dir={blocker / 'run'}")
    assert "cannot be written" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        assert "cannot be written" in _refused(capsys, monkeypatch, f"run_dir={locked / 'run'}")


def test_a_refusal_after_the_writability_check_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    run = tmp_path / "new" / "run"
    _refused(capsys, monkeypatch, f"run_dir={run}", "pathway.V9.blocks=1")  # refused once the graph is built
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []



@pytest.mark.parametrize("existing", [False, True])
def test_a_refusal_once_the_run_directory_is_locked_leaves_the_folder_as_it_found_it(existing, tmp_path, capsys,
                                                                                       monkeypatch):
    """A stage that refuses (here: the first one, before training) after the lock, config.json
    and pathway.json were written: the folder is put back, its rewritten files included."""
    from visualpath.errors import Refused

    run = tmp_path / "new" / "run"
    if existing:
        run.mkdir(parents=True)
        (run / "config.json").write_text('{"config": {}, "note": "as it was"}')
        (run / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()} if existing else None

    def refuse(*args, **kwargs):
        raise Refused("a stage refused its input")

    monkeypatch.setattr(pipeline, "run_ventral", refuse)
    with pytest.raises(SystemExit) as exit_info:
        _main(f"run_dir={run}")
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == "error: a stage refused its input"
    if existing:
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # no .lock, no pathway.json
    else:
        assert list(tmp_path.iterdir()) == []


def test_a_command_that_selected_a_checkpoint_keeps_everything_it_wrote(tmp_path):
    from visualpath.rundir.lock import FolderAsFound

    run = tmp_path / "run"
    (run / "joint" / "ckpt-1").mkdir(parents=True)
    (run / "joint" / "current").symlink_to("ckpt-1")
    found = FolderAsFound(run)
    (run / "joint" / "ckpt-2").mkdir()
    (run / "joint" / "current").unlink()
    (run / "joint" / "current").symlink_to("ckpt-2")  # a checkpoint of this command was selected
    (run / "config.json").write_text("{}")
    found.restore()
    assert (run / "config.json").is_file() and (run / "joint" / "ckpt-2").is_dir()
    (run / "joint" / "current").unlink()
    (run / "joint" / "current").symlink_to("ckpt-1")  # as it was: what was added goes
    found.restore()
    assert not (run / "config.json").exists() and sorted(p.name for p in (run / "joint").iterdir()) == [
        "ckpt-1", "ckpt-2", "current"]  # inside a stage folder nothing is touched

@pytest.fixture(scope="module")
def half_joint(tmp_path_factory):
    """A tiny run whose joint stage was killed after its first checkpoint."""
    from recipes import stages

    run = tmp_path_factory.mktemp("half") / "run"
    real = stages.fit

    def stop(stage, *args, **kwargs):
        if stage == "joint":
            real(stage, *args, **kwargs, checkpoint_every=1, stop_after=1)
            raise KeyboardInterrupt
        return real(stage, *args, **kwargs)

    stages.fit = stop
    try:
        with pytest.raises(SystemExit) as exit_info:  # Ctrl-C: one line saying where it stopped, exit 130
            _main(f"run_dir={run}", "joint.optim.epochs=2")
    finally:
        stages.fit = real
    assert exit_info.value.code == 130
    return run


@pytest.mark.e2e
def test_ctrl_c_says_where_the_run_stopped_in_one_line(half_joint, capsys):
    from recipes.resume import interrupted_at

    cfg = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(half_joint))
    where = interrupted_at(cfg)
    assert "joint at step 1 of" in where and "ventral at step" in where and "\n" not in where


@pytest.mark.e2e
def test_finetuning_after_an_unfinished_joint_stage_is_refused(half_joint, capsys, monkeypatch):
    err = _refused(capsys, monkeypatch, f"run_dir={half_joint}", "joint.optim.epochs=2", "stages=finetune,test")
    assert "the joint stage stopped at step 1 of" in err


@pytest.mark.e2e
def test_checkpoints_without_their_config_are_refused(half_joint, tmp_path, capsys, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(half_joint, copy, symlinks=True)
    (copy / "config.json").unlink()
    err = _refused(capsys, monkeypatch, f"run_dir={copy}", "joint.optim.epochs=2")
    assert "config.json is missing beside the checkpoints of ventral, joint" in err


def test_an_init_checkpoint_that_does_not_fit_is_refused_before_compute(tmp_path, capsys, monkeypatch):
    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    hf = VideoMAEModel(VideoMAEConfig(image_size=48, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=64,
                                      num_hidden_layers=4, num_attention_heads=2, intermediate_size=128))
    torch.save(hf.state_dict(), tmp_path / "wide.pth")  # width 64; the tiny model is 32 wide
    err = _refused(capsys, monkeypatch, f"init={tmp_path / 'wide.pth'}", "stages=joint,finetune,test")
    assert "does not fit the dorsal stream" in err and "64" in err


@pytest.mark.e2e
def test_a_zero_byte_first_test_video_does_not_stop_the_run(tmp_path):
    from visualpath.data.formats import read_ucf101
    from visualpath.data.synthetic import SyntheticSpec, generate

    root = generate(tmp_path / "ucf", SyntheticSpec(seed=4, groups=7, clips=1, frames=16, size=64))
    first_test = read_ucf101(root, 1, train=False)[0][0].path
    first_test.write_bytes(b"")  # what a failed copy leaves
    run = tmp_path / "run"
    assert _main(f"run_dir={run}", f"data.root={root}", "data.image_root=frames") == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test_items"] == 19 and (run / "reconstruction_dorsal.png").is_file()  # the 19 readable


@pytest.mark.e2e
def test_listed_files_that_are_missing_are_counted_by_every_stage_that_reads_them(tmp_path):
    """A file the lists name and the disk lacks: warned, and counted once per stage in
    broken_files.json and results.json (training stages' *_skipped, the test's test_skipped)."""
    from visualpath.data.formats import read_ucf101
    from visualpath.data.synthetic import SyntheticSpec, generate
    from visualpath.engine import MISSING

    root = generate(tmp_path / "ucf", SyntheticSpec(seed=4, groups=7, clips=1, frames=16, size=64))
    gone_train = read_ucf101(root, 1, train=True)[0][3].path
    tests = read_ucf101(root, 1, train=False)[0]
    gone_test, empty_test = tests[2].path, tests[5].path
    gone_train.unlink()
    gone_test.unlink()
    empty_test.write_bytes(b"")
    run = tmp_path / "run"
    assert _main(f"run_dir={run}", f"data.root={root}", "data.image_root=frames") == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test_items"] == 18 and results["test_skipped"] == 2
    assert results["ventral_skipped"] == results["joint_skipped"] == results["finetune_skipped"] == 1
    listed = json.loads((run / "broken_files.json").read_text())
    for stage in ("ventral", "joint", "finetune"):
        assert listed[stage]["count"] == 1 and listed[stage]["files"] == {str(gone_train): MISSING}
    assert listed["test"]["count"] == 2 and listed["test"]["files"][str(gone_test)] == MISSING
    assert str(empty_test) in listed["test"]["files"]


@pytest.mark.e2e
def test_resume_false_starts_the_stages_again_and_drops_the_later_ones(tmp_path):
    run = tmp_path / "run"
    assert _main(f"run_dir={run}") == 0
    assert (run / "finetune" / "model.safetensors").is_file()
    assert _main(f"run_dir={run}", "stages=joint", "resume=false") == 0
    assert not (run / "finetune" / "model.safetensors").exists()  # built on the old encoder: gone
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    joint = [r["step"] for r in steps if r["stage"] == "joint"]
    assert joint == sorted(set(joint))  # the restarted stage's records replace the old ones


def test_a_user_area_whose_target_disagrees_with_its_target_dim_is_refused_naming_both(tmp_path, capsys,
                                                                                     monkeypatch):
    graph = tmp_path / "wrong_dim.py"
    graph.write_text("""
import attrs
from areas import V1Gabor, V2Contour, V4Color
from visualpath import Area, Pathway, RandomMask, Stream


@attrs.frozen(kw_only=True)
class Edges(Area):
    name: str = "V3"
    blocks: int = 1

    def target_dim(self, layout):
        return 7  # the target below gives patch * patch values per token

    def target(self, inp):
        return inp.layout.patchify(inp.pixels.mean(1, keepdim=True))


def build(model):
    dec = model.decoder(depth=1)
    areas = [V1Gabor(blocks=1, decoder=dec), V2Contour(blocks=1, decoder=dec), Edges(blocks=1, decoder=dec),
             V4Color(blocks=1, decoder=dec)]
    return Pathway(encoder=model.encoder(depth=4), streams=[Stream("ventral", "image", areas, mask=RandomMask(0.75))])
""")
    err = _refused(capsys, monkeypatch, f"pathway={graph}:build", "stages=ventral", "data.image_root=frames",
                   f"run_dir={tmp_path / 'run'}")
    assert "area V3 (Edges) of stream 'ventral'" in err and "(1, 36, 7) was expected" in err, err
    assert "target_dim(layout)=7" in err and "make target_dim return" in err
    # a map that was never cut into tokens: the advice is patchify, not target_dim
    maps = tmp_path / "map_target.py"  # another file: a file is loaded once per process
    maps.write_text(graph.read_text().replace("return inp.layout.patchify(inp.pixels.mean(1, keepdim=True))",
                                              "return inp.pixels.mean(1, keepdim=True)"))
    err = _refused(capsys, monkeypatch, f"pathway={maps}:build", "stages=ventral", "data.image_root=frames",
                   f"run_dir={tmp_path / 'run'}")
    assert "inp.layout.patchify(map)" in err and "target_dim return" not in err, err


def test_a_pretrained_file_that_is_not_safetensors_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    err = _refused(capsys, monkeypatch, f"run_dir={tmp_path / 'run'}", f"pretrained={bad}", "stages=finetune,test")
    assert "is not a readable safetensors file" in err


@pytest.mark.e2e
def test_resuming_under_torchrun_with_another_process_count_is_one_line_per_process(tmp_path):
    """A 1-process run stopped after its first checkpoint, resumed by ``torchrun`` with 2:
    each process says why in one line, before any step; what follows is torchrun's own report."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # what the torchrun command runs
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo}
    argv = ["-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu", f"run_dir={tmp_path / 'run'}",
            "stages=ventral", "ventral.optim.epochs=2"]
    killpoint = [str(Path(repo) / "tests" / "killpoint.py"), "old-removed@1"]
    first = subprocess.run([sys.executable, *killpoint, *argv], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, env=env)
    assert first.returncode == 137, first.stderr[-2000:]
    done = subprocess.run([*torchrun, "--nproc_per_node", "2", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 2 and len(set(ours)) == 1, done.stderr[-3000:]
    assert "was trained by 1 process(es) and this run has 2: resume it with 1" in ours[0]
    assert "ventral step" not in done.stderr and "/recipes/" not in done.stderr  # no step ran; no traceback of ours
