"""A scheduler's SIGTERM / SIGUSR1 stops training at a step boundary with a checkpoint, and
the same command resumes to the uninterrupted run's weights (decision R9)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.visualpath.test_ddp import _torchrun
from tests.visualpath.test_engine import CPU, SPEC, Images, _model, _step, _train
from visualpath import engine
from visualpath.engine import Preempted, RunLog, build_optimizer, fit, make_loader
from visualpath.rundir import stage_progress

REPO = Path(__file__).resolve().parents[2]


def _signalled(tmp_path, at: int, sig=signal.SIGTERM, twice_in_the_write: bool = False, monkeypatch=None):
    """``_train`` with ``sig`` sent to this process inside micro-step ``at``."""
    calls = {"n": 0}

    def step(model, batch):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), sig)
        return _step(model, batch)

    if twice_in_the_write:
        write = engine._checkpoint

        def write_with_a_second_signal(*args, **kwargs):
            os.kill(os.getpid(), sig)  # the scheduler insists while the checkpoint is written
            return write(*args, **kwargs)

        monkeypatch.setattr(engine, "_checkpoint", write_with_a_second_signal)
    model = _model()
    torch.manual_seed(123)
    loader = make_loader(Images(), SPEC.batch_size, CPU, shuffle=True, seed=5)
    with pytest.raises(Preempted) as stop:
        fit("stage", model, step, loader, build_optimizer(model, SPEC, CPU), SPEC, CPU, RunLog(tmp_path, CPU),
            log_every=1, checkpoint_every=2)
    return stop.value


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_stops_at_the_next_step_with_a_checkpoint_and_resumes_exactly(tmp_path, sig):
    full, _ = _train(tmp_path / "full")
    stop = _signalled(tmp_path / "stopped", at=7, sig=sig)  # micro-step 7 of step 4 (accumulation 2)
    assert (stop.stage, stop.step, stop.signal_name) == ("stage", 4, sig.name) and 0 <= stop.seconds < 30
    assert stage_progress(tmp_path / "stopped" / "stage")["step"] == 4
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler)  # the handler is put back
    resumed, state = _train(tmp_path / "stopped", resume=True)
    assert state.step == 9
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_second_signal_during_the_checkpoint_does_not_tear_it(tmp_path, monkeypatch):
    full, _ = _train(tmp_path / "full")
    stop = _signalled(tmp_path / "stopped", at=3, twice_in_the_write=True, monkeypatch=monkeypatch)
    assert stop.step == 2
    monkeypatch.undo()
    resumed, _ = _train(tmp_path / "stopped", resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.e2e
def test_two_process_runs_signalled_at_random_steps_resume_bit_identically(tmp_path):
    """SIGTERM in every rank (what SLURM and torchrun send), or in rank 1 alone, at random
    steps; each rank stops at the same step and the resumed run ends with the uninterrupted
    run's weights. The seconds from signal to exit are printed (docs/reliability.md)."""
    assert _torchrun(tmp_path / "full").returncode == 0
    full = torch.load(tmp_path / "full" / "final.pt")
    rng = random.Random(11)
    for trial in range(4):
        out = tmp_path / f"signalled{trial}"
        at, ranks = rng.randint(1, 7), ("all", "1")[trial % 2]
        stopped = _torchrun(out, env={"SIGNAL_RANK": ranks, "SIGNAL_AT": str(at)})
        assert stopped.returncode != 0, stopped.stderr[-2000:]
        reports = [json.loads(p.read_text()) for p in sorted(out.glob("preempted.rank*.json"))]
        assert len(reports) == 2 and len({r["step"] for r in reports}) == 1, stopped.stderr[-3000:]
        print(f"trial {trial}: SIGTERM to rank(s) {ranks} in step {at}: both stopped at step {reports[0]['step']}, "
              f"{max(r['exit_seconds'] for r in reports):.2f} s from the signal to exit")
        resumed = _torchrun(out, "resume")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert torch.equal(torch.load(out / "final.pt"), full), f"trial {trial}: signalled in step {at}"


@pytest.mark.e2e
def test_a_recipe_signalled_from_outside_says_where_it_stopped_and_resumes(tmp_path):
    """The whole process group gets SIGTERM (data-loading workers included, as under SLURM)
    while a tiny recipe trains: one line, exit 75; the same command then finishes with the
    uninterrupted run's weights."""
    from safetensors.torch import load_file

    argv = [sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu", "stages=ventral",
            "ventral.optim.epochs=3", "data.workers=2", "log_every=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*argv, f"run_dir={tmp_path / 'full'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    proc = subprocess.Popen([*argv, f"run_dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be signalled"
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    print(f"recipe: {time.monotonic() - sent:.2f} s from SIGTERM to exit")
    assert proc.returncode == 75, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("preempted: ")]
    assert len(said) == 1 and "on SIGTERM" in said[0] and "the same command resumes" in said[0], err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err
    again = subprocess.run([*argv, f"run_dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    ours, theirs = load_file(str(run / "ventral" / "model.safetensors")), \
        load_file(str(tmp_path / "full" / "ventral" / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _recipe(run_dir, *argv) -> int:
    from recipes import bimm_ucf101

    try:
        return bimm_ucf101.main(["--variant", "tiny", "device=cpu", f"run_dir={run_dir}", *argv])
    except SystemExit as stop:
        return stop.code


def _weights(run_dir, stage):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir, stage, "model.safetensors")))


@pytest.mark.e2e
@pytest.mark.parametrize("moment", ["in the ventral stage's last checkpoint", "between ventral and joint",
                                    "during the test", "while the command starts"])
def test_a_signal_outside_a_training_step_stops_the_command_at_the_next_safe_point(tmp_path, monkeypatch, capsys,
                                                                                   moment):
    """SIGTERM while the last checkpoint of a stage is written, between two stages, at the test's
    first batch or while the command starts: exit 75 with one ``preempted:`` line, and the same
    command ends with the weights and results of an uninterrupted run."""
    from recipes import checks, stages
    from visualpath.rundir import checkpoint

    argv = ("stages=ventral,joint,finetune,test",)
    assert _recipe(tmp_path / "full", *argv) == 0
    capsys.readouterr()
    real = {"fit": stages.fit, "evaluate": stages.evaluate, "check": checks.check}

    def signal_self(*_):
        os.kill(os.getpid(), signal.SIGTERM)

    if moment == "in the ventral stage's last checkpoint":
        from recipes import bimm_ucf101

        last = bimm_ucf101.VARIANTS["tiny"].ventral.optim.epochs  # one checkpoint at each epoch's end

        def fit_signalled_in_its_last_write(stage, *args, **kwargs):
            if stage != "ventral":
                return real["fit"](stage, *args, **kwargs)
            selected = {"n": 0}

            def hook(point):
                if point == "selected":
                    selected["n"] += 1
                    if selected["n"] == last:  # the scheduler's signal while the stage's last unit is written
                        signal_self()
            monkeypatch.setattr(checkpoint, "fault_hook", hook)
            try:
                return real["fit"](stage, *args, **kwargs)
            finally:
                monkeypatch.setattr(checkpoint, "fault_hook", None)
        monkeypatch.setattr(stages, "fit", fit_signalled_in_its_last_write)
        where = "after the ventral stage"
    elif moment == "between ventral and joint":
        def fit_then_signal(stage, *args, **kwargs):
            state = real["fit"](stage, *args, **kwargs)
            if stage == "ventral":
                signal_self()
            return state
        monkeypatch.setattr(stages, "fit", fit_then_signal)
        where = "after the ventral stage"
    elif moment == "during the test":
        def evaluate(model, loader, runtime, **kwargs):
            signal_self()
            return real["evaluate"](model, loader, runtime, **kwargs)
        monkeypatch.setattr(stages, "evaluate", evaluate)
        where = "during the test"
    else:
        def check(cfg):
            signal_self()
            return real["check"](cfg)
        monkeypatch.setattr("recipes.pipeline.check", check)
        where = "before anything was written or trained"
    run = tmp_path / "run"
    capsys.readouterr()

    def died(*_):  # where the signal would have met its default action: the process killed, nothing said
        raise AssertionError(f"SIGTERM {moment} was not noted by the command: it would have killed it")

    outside = signal.signal(signal.SIGTERM, died)
    try:
        code = _recipe(run, *argv)
        assert signal.getsignal(signal.SIGTERM) is died  # the command's watch is closed again
    finally:
        signal.signal(signal.SIGTERM, outside)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("preempted:")]
    assert code == 75 and len(lines) == 1 and where in lines[0] and "on SIGTERM" in lines[0], err[-2000:]
    monkeypatch.undo()
    assert _recipe(run, *argv) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    again = json.loads((run / "results.json").read_text())
    assert {k: again[k] for k in ("top1", "top5", "test_items")} == {k: full[k] for k in ("top1", "top5", "test_items")}
    for stage in ("ventral", "joint", "finetune"):
        a, b = _weights(tmp_path / "full", stage), _weights(run, stage)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage


@pytest.mark.slow
@pytest.mark.e2e
def test_sigterm_at_random_moments_of_the_whole_command_stops_it_and_it_resumes_exactly(tmp_path):
    """SIGTERM at 20 random moments of ``python -m recipes.bimm_ucf101 --variant tiny``, from
    start-up (imports included) to the results table: each run stops with one ``preempted:``
    line and exit 75, or had already ended (exit 0); the same command then ends with the
    uninterrupted run's weights of every stage and its test results."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def command(run_dir):
        return [sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu", f"run_dir={run_dir}"]

    start = time.monotonic()
    done = subprocess.run(command(tmp_path / "full"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    whole = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    full = json.loads((tmp_path / "full" / "results.json").read_text())
    rng = random.Random(0)
    codes = []
    for trial in range(20):
        run = tmp_path / f"run{trial}"
        proc = subprocess.Popen(command(run), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(rng.uniform(0.3, whole))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
        codes.append(proc.returncode)
        assert proc.returncode in (0, 75), f"trial {trial}: exit {proc.returncode}\n{err[-2000:]}"
        if proc.returncode == 75:
            said = [line for line in err.splitlines() if line.startswith("preempted:")]
            assert len(said) == 1 and "on SIGTERM" in said[0] and "Traceback" not in err, err[-2000:]
            again = subprocess.run(command(run), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, again.stderr[-2000:]
        results = json.loads((run / "results.json").read_text())
        assert {k: results[k] for k in ("top1", "top5", "test_items")} == \
            {k: full[k] for k in ("top1", "top5", "test_items")}, trial
        for stage in ("ventral", "joint", "finetune"):
            a, b = _weights(tmp_path / "full", stage), _weights(run, stage)
            assert all(torch.equal(a[k], b[k]) for k in a), (trial, stage)
    assert codes.count(75) >= 12, codes  # most signals land inside the command, not after its end


@pytest.mark.e2e
@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 75, "preempted: stopped before anything was written or "
                                                                  "trained on SIGTERM; nothing was started"),
                                             (signal.SIGINT, 130, "interrupted while the command was starting: "
                                                                  "nothing was started")])
def test_a_signal_while_the_command_imports_says_nothing_was_started(tmp_path, sig, code, said):
    """Half a second in, ``python -m recipes.bimm_ucf101`` is still importing torch: the signal is
    noted by the handlers ``recipes/__init__.py`` installs first, not fatal, and nothing is written."""
    proc = subprocess.Popen([sys.executable, "-m", "recipes.bimm_ucf101", "--variant", "tiny", "device=cpu",
                             f"run_dir={tmp_path / 'run'}"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code and len(err.strip().splitlines()) == 1 and said in err, err[-2000:]
    assert not (tmp_path / "run").exists()


def test_importing_the_recipes_from_python_changes_no_signal_handler():
    code = ("import signal; before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]; "
            "import recipes, recipes.bimm_ucf101; "
            "print([signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == before)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr[-2000:]
