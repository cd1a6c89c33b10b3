"""``python -m recipes.submit`` through submitit's local executor: a tiny run submitted,
signalled before its time limit (SIGUSR2, as submitit asks SLURM to), checkpointed at a step,
requeued and resumed, finishing with the uninterrupted run's weights (decision R10)."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


submitit = pytest.importorskip("submitit", reason="pip install -e '.[cluster]'")

from recipes import submit  # noqa: E402

ARGV = ["--variant", "tiny", "device=cpu", "stages=ventral", "ventral.optim.epochs=20", "log_every=1"]


def test_a_submitted_run_preempted_by_the_executor_is_requeued_and_ends_with_the_same_weights(tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = subprocess.run([sys.executable, "-m", "recipes.bimm_ucf101", *ARGV, f"run_dir={tmp_path / 'full'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    # a one-minute limit whose signal comes 52 s early: every attempt is signalled about 8 s in, of which
    # starting takes most on 2 cores (attempts got through 1 to 25 steps of the 120), hence the many requeues
    job = submit.submit("bimm_ucf101", [*ARGV, f"run_dir={run}"], cluster="local", time_min=1, signal_delay_s=52,
                        requeues=60)
    assert job.result() == 0
    logs = "".join(p.read_text() for p in (run / "submitit").glob("*/*_log.*"))
    assert "preempted: ventral stopped at step" in logs and "on SIGUSR2" in logs, logs[-3000:]
    assert "Requeued job" in logs and "ventral: resumed at step" in logs, logs[-3000:]
    assert (run / "submitit" / "jobs.txt").read_text().startswith(f"{job.job_id}\t")
    ours = load_file(str(run / "ventral" / "model.safetensors"))
    theirs = load_file(str(tmp_path / "full" / "ventral" / "model.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_bad_recipe_command_line_is_refused_before_anything_is_submitted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        submit.main(["bimm_ucf101", "--cluster", "local", "--", "--variant", "tiny", "ventral.optim.epochs=-1"])
    assert "ventral.optim.epochs" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*_submitted.pkl"))
    assert submit.main(["no_such_recipe", "--cluster", "local"]) == 2


@pytest.mark.slow
def test_a_table_is_submitted_as_one_job_per_row_and_printed_from_the_finished_rows(tmp_path, monkeypatch):
    from recipes import ablations

    monkeypatch.chdir(tmp_path)
    base = ["--variant", "tiny", "device=cpu", f"run_dir={tmp_path / 'abl'}"]
    jobs = submit.submit_table("7e", base, cluster="local", time_min=10)
    assert len(jobs) == 3 and len({j.job_id for j in jobs}) == 3
    results = [j.result() for j in jobs]
    assert [r["label"] for r in results] == ["No sharing", "Partial Sharing", "All Sharing"]
    assert all(0 <= r["top1"] <= 1 for r in results)
    listed = (tmp_path / "abl" / "table7" / "submitit" / "jobs.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [j.job_id for j in jobs]
    # the table from the finished rows: nothing trains again
    done = subprocess.run([sys.executable, "-m", "recipes.ablations", "--table", "7e", *base], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already complete" in done.stderr and " step 1/" not in done.stderr
    assert all(f"{r['top1'] * 100:.1f}" in done.stdout for r in results), done.stdout
    assert ablations.TABLES["7e"][0] in done.stdout
