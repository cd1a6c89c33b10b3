"""Faults around checkpoints: a kill at any point of a write, a full disk, a damaged unit."""

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.visualpath.test_engine import _train
from visualpath.rundir import checkpoint as rundir_checkpoint
from visualpath.rundir import FAULT_POINTS, CheckpointWriteError, selected_checkpoint

ROOT = Path(__file__).parents[2]


def _worker(run_dir: Path, resume: bool, kill_at: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = [str(ROOT / "tests" / "killpoint.py"), kill_at] if kill_at else []
    done = subprocess.run([sys.executable, *killed, "-m", "tests.visualpath.fault_worker", str(run_dir),
                           "resume" if resume else "fresh"], cwd=ROOT, env=env, capture_output=True, text=True)
    return done.returncode


def _weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "stage" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    assert _worker(run, resume=False) == 0
    return _weights(run)


@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.e2e
def test_a_kill_at_any_point_of_a_checkpoint_write_resumes_bit_identically(point, uninterrupted, tmp_path):
    assert _worker(tmp_path, resume=False, kill_at=f"{point}@3") == 137  # killed while writing the third unit
    selected = selected_checkpoint(tmp_path / "stage")
    assert selected is not None and (selected / "state.pt").is_file()  # one complete unit is always selected
    assert _worker(tmp_path, resume=True) == 0
    resumed = _weights(tmp_path)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), point
    units = sorted(p.name for p in (tmp_path / "stage").iterdir() if p.name.startswith(("ckpt-", ".ckpt-")))
    assert len(units) == 1  # leftovers of the killed write are gone


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch):
    full, _ = _train(tmp_path / "full")
    writes = {"n": 0}

    def disk_full(point):
        if point == "weights-written":
            writes["n"] += 1
            if writes["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir_checkpoint, "fault_hook", disk_full)
    with pytest.raises(CheckpointWriteError) as err:
        _train(tmp_path / "run")
    message = str(err.value)
    assert "no space left on the device" in message and "MiB are free" in message and "stays selected" in message
    assert "\n" not in message
    stage = tmp_path / "run" / "stage"
    assert not list(stage.glob(".ckpt-*")) and len(list(stage.glob("ckpt-*"))) == 1
    monkeypatch.setattr(rundir_checkpoint, "fault_hook", None)
    resumed, state = _train(tmp_path / "run", resume=True)
    assert state.step == 9
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), resumed.parameters()))


def test_weights_that_are_not_the_states_are_refused(tmp_path):
    _train(tmp_path, stop_after=4)
    unit = selected_checkpoint(tmp_path / "stage")
    weights = load_file(str(unit / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first] + 1
    from safetensors.torch import save_file

    save_file(weights, str(unit / "model.safetensors"))
    with pytest.raises(ValueError, match="the weights are not the file their checkpoint recorded"):
        _train(tmp_path, resume=True)


def test_a_truncated_state_is_refused_in_one_line(tmp_path):
    from visualpath.rundir import DamagedWeights, load_weights

    model, _ = _train(tmp_path, stop_after=4)
    unit = selected_checkpoint(tmp_path / "stage")
    state = unit / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(DamagedWeights) as err:
        _train(tmp_path, resume=True)
    assert "state.pt cannot be read" in str(err.value) and "\n" not in str(err.value)
    # the weights themselves stay loadable: their hash is in progress.json
    load_weights(model, tmp_path / "stage")


def test_a_unit_that_recorded_no_hash_is_refused_unless_told(tmp_path, monkeypatch):
    """progress.json deleted: nothing to check the weights against, so they are refused
    (checking is never silently off), and loaded only with the flag the message names."""
    from visualpath.rundir import UNVERIFIED_ENV, DamagedWeights, load_weights

    model, _ = _train(tmp_path, stop_after=4)
    unit = selected_checkpoint(tmp_path / "stage")
    (unit / "progress.json").unlink()
    with pytest.raises(DamagedWeights, match=f"recorded no SHA-256.*{UNVERIFIED_ENV}=1") as err:
        load_weights(model, tmp_path / "stage")
    assert "\n" not in str(err.value)
    monkeypatch.setenv(UNVERIFIED_ENV, "1")
    load_weights(model, tmp_path / "stage")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(tmp_path, bad):
    """NaN or infinite weights with a matching hash (a diverged run saves them faithfully)."""
    import hashlib
    import json

    from safetensors.torch import save_file
    from visualpath.rundir import DamagedWeights, load_weights

    model, _ = _train(tmp_path, stop_after=4)
    unit = selected_checkpoint(tmp_path / "stage")
    weights = load_file(str(unit / "model.safetensors"))
    name = sorted(weights)[-1]
    weights[name].view(-1)[0] = bad
    save_file(weights, str(unit / "model.safetensors"))
    progress = json.loads((unit / "progress.json").read_text())
    progress["weights_sha256"] = hashlib.sha256((unit / "model.safetensors").read_bytes()).hexdigest()
    (unit / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(DamagedWeights, match=f"tensor {name} holds NaN or infinite values"):
        load_weights(model, tmp_path / "stage")


def test_a_stage_written_before_checkpoint_units_is_refused_in_one_line(tmp_path):
    """Plain model.safetensors + state.pt (the layout before units): not read, and resuming
    says to train the stage again; resume=false starts it again."""
    _train(tmp_path / "old", stop_after=4)
    stage = tmp_path / "old" / "stage"
    unit = selected_checkpoint(stage)
    for name in ("model.safetensors", "state.pt"):
        (stage / name).unlink()
        os.link(unit / name, stage / name)
    (stage / "current").unlink()
    import shutil

    shutil.rmtree(unit)
    with pytest.raises(ValueError, match=r"version before checkpoint units.*train the stage again \(resume=false\)$"):
        _train(tmp_path / "old", resume=True)
    _train(tmp_path / "old")  # resume=false: the old files are cleared and the stage trains
    assert selected_checkpoint(stage).name.startswith("ckpt-")

def _broken_set(tmp_path):
    from tests.visualpath.data.conftest import ramp_frames, write_video
    from visualpath.data import VideoDataset
    from visualpath.data.formats import VideoRecord

    tmp_path.mkdir(parents=True, exist_ok=True)
    good = [write_video(tmp_path / f"good{i}.avi", ramp_frames(12, size=32)) for i in range(9)]
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "truncated.avi").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 2])
    (tmp_path / "garbage.avi").write_bytes(b"\x00\x01" * 3000)
    records = [VideoRecord(p, 0) for p in good] + [VideoRecord(tmp_path / n, 1)
                                                   for n in ("empty.avi", "truncated.avi", "garbage.avi")]
    return VideoDataset(records, ["a", "b"], frames=4, stride=2)


def _video_fit(run_dir, dataset, stop_after=None, resume=False):
    import io

    from rich.console import Console

    from areas import MTMotion
    from tests.conftest import TINY_DECODER
    from tests.visualpath.test_engine import CPU, _step
    from visualpath import Pathway, Stream, TubeMask, vit_tiny
    from visualpath.engine import OptimSpec, RunLog, build_optimizer, fit, make_loader

    torch.manual_seed(0)
    model = Pathway(encoder=vit_tiny(depth=1, width=32, heads=2),
                    streams=[Stream("dorsal", "video", [MTMotion(blocks=1, decoder=TINY_DECODER)],
                                    mask=TubeMask(0.5))]).build()
    spec = OptimSpec(epochs=3, batch_size=4, base_lr=1e-3, warmup_epochs=0)
    opt = build_optimizer(model, spec, CPU)
    loader = make_loader(dataset, spec.batch_size, CPU, shuffle=True, seed=1, workers=2)
    out = io.StringIO()
    state = fit("joint", model, _step, loader, opt, spec, CPU, RunLog(run_dir, CPU), resume=resume,
                stop_after=stop_after, checkpoint_every=1, console=Console(file=out, width=200))
    return state, out.getvalue()


def test_broken_files_are_warned_and_counted_once_across_workers_epochs_and_a_resume(tmp_path):
    import json

    dataset = _broken_set(tmp_path / "data")
    state, first = _video_fit(tmp_path / "run", dataset, stop_after=4)  # killed in the second epoch
    state, second = _video_fit(tmp_path / "run", dataset, resume=True)
    warnings = (first + second).count("skipping unreadable file")
    listed = json.loads((tmp_path / "run" / "broken_files.json").read_text())["joint"]
    assert state.skipped == 3 and listed["count"] == 3 and warnings == 3
    assert sorted(Path(p).name for p in listed["files"]) == ["empty.avi", "garbage.avi", "truncated.avi"]
    assert "empty file" in listed["files"][str(tmp_path / "data" / "empty.avi")]
    assert re.search(r"resumed at step 4/\d+ \(epoch 2/\d+\)", second), second  # as the step lines count



def _short_set(tmp_path):
    """8 videos of 12 frames, one of 1 frame and one of 3, read as clips of 4 frames."""
    from tests.visualpath.data.conftest import ramp_frames, write_video
    from visualpath.data import VideoDataset
    from visualpath.data.formats import VideoRecord

    tmp_path.mkdir(parents=True, exist_ok=True)
    files = [write_video(tmp_path / f"good{i}.avi", ramp_frames(12, size=32)) for i in range(8)]
    files += [write_video(tmp_path / "still.avi", ramp_frames(1, size=32)),
              write_video(tmp_path / "three.avi", ramp_frames(3, size=32))]
    return VideoDataset([VideoRecord(p, i % 2) for i, p in enumerate(files)], ["a", "b"], frames=4, stride=2)


def test_videos_shorter_than_a_clip_are_used_reported_and_counted_once_across_a_resume(tmp_path):
    import json

    dataset = _short_set(tmp_path / "data")
    state, first = _video_fit(tmp_path / "run", dataset, stop_after=4)
    state, second = _video_fit(tmp_path / "run", dataset, resume=True)
    listed = json.loads((tmp_path / "run" / "broken_files.json").read_text())["joint"]
    assert state.skipped == 0 and listed["count"] == 0  # used, not skipped
    assert listed["short"]["count"] == 2 and len(state.extra["short"]) == 2
    reasons = {Path(p).name: why for p, why in listed["short"]["files"].items()}
    assert sorted(reasons) == ["still.avi", "three.avi"]
    assert reasons["still.avi"].startswith("1 frame, a clip takes 4") and "no motion" in reasons["still.avi"]
    assert reasons["three.avi"].startswith("3 frames") and "no motion" not in reasons["three.avi"]
    assert (first + second).count("a short video") == 2  # once each, across epochs, workers and the resume


def test_short_test_videos_are_scored_and_reported(tmp_path):
    from tests.visualpath.test_engine import CPU
    from visualpath.engine import evaluate, make_loader

    class Mean(torch.nn.Module):
        def forward(self, x):
            mean = x.float().mean(dim=tuple(range(1, x.ndim)))
            return torch.stack([mean, -mean], 1)

    dataset = _short_set(tmp_path / "data")
    dataset.mode, dataset.clips, dataset.crops, dataset.size = "test", 2, 1, 32
    result = evaluate(Mean(), make_loader(dataset, 4, CPU, shuffle=False, seed=0, workers=0, drop_last=False), CPU)
    assert result["count"] == 10 and result["skipped"] == {}
    assert sorted(Path(p).name for p in result["short"]) == ["still.avi", "three.avi"]

@pytest.mark.e2e
def test_a_worker_ends_when_its_parent_dies(tmp_path):
    """What keeps torchrun workers from training on, unsupervised, after their agent is killed."""
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        "import os, time\nfrom visualpath.runtime import exit_with_parent\nassert exit_with_parent()\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    parent = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(tmp_path / 'child.py')!r}])\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for _ in range(100):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)  # the agent dies without a word
    proc.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent")


def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    from tests.visualpath.test_engine import CPU, SPEC, _model
    from visualpath.engine import build_optimizer, load_checkpoint

    _train(tmp_path, stop_after=4)
    model = _model()
    with pytest.raises(ValueError, match=r"trained by 1 process\(es\) and this run has 2: resume it with 1"):
        load_checkpoint(tmp_path / "stage", model, build_optimizer(model, SPEC, CPU), rank=0, world=2)


def test_checkpoint_files_are_readable_under_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _train(tmp_path, stop_after=2)
    finally:
        os.umask(old)
    unit = selected_checkpoint(tmp_path / "stage")
    assert {f.name: f.stat().st_mode & 0o777 for f in unit.iterdir()} == {
        "model.safetensors": 0o644, "state.pt": 0o644, "progress.json": 0o644}


def test_a_run_directory_on_a_filesystem_without_flock_runs_unlocked_and_says_so(tmp_path, monkeypatch, caplog):
    """Some NFS and Lustre mounts refuse ``flock`` (ENOLCK, EOPNOTSUPP): the run goes on without
    the lock and warns that one run at a time must write the folder; a busy lock is still refused."""
    import errno
    import fcntl
    import logging

    from visualpath.rundir import RunDirBusy, RunLock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    with monkeypatch.context() as m:
        m.setattr(fcntl, "flock", no_flock)
        with caplog.at_level(logging.WARNING), RunLock(tmp_path / "run"):
            pass
    assert "cannot be locked on this filesystem (No locks available)" in caplog.text
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunDirBusy, match="is in use by PID"):
            RunLock(tmp_path / "run").__enter__()


def test_unreadable_test_videos_are_counted_named_and_left_out_of_the_score(tmp_path):
    import io

    from rich.console import Console

    from tests.visualpath.test_engine import CPU
    from visualpath.engine import evaluate, make_loader

    dataset = _broken_set(tmp_path / "data")  # 9 readable, 3 unreadable (empty, truncated, garbage)
    class Brightness(torch.nn.Module):  # a two-class "classifier" of a clip's mean brightness
        def forward(self, x):
            mean = x.float().mean(dim=tuple(range(1, x.ndim)))
            return torch.stack([mean, -mean], 1)

    model = Brightness()
    loader = make_loader(dataset, 4, CPU, shuffle=False, seed=0, workers=2, drop_last=False)
    out = io.StringIO()
    result = evaluate(model, loader, CPU, console=Console(file=out, width=200))
    assert result["count"] == 9  # scored: the readable ones, each once
    assert sorted(Path(p).name for p in result["skipped"]) == ["empty.avi", "garbage.avi", "truncated.avi"]
    assert out.getvalue().count("skipping unreadable file") == 3
