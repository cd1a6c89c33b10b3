"""Time-based checkpoints in the recipes (``checkpoint_minutes``, decision R8): a run stopped
between epoch ends loses minutes, not an epoch, and resumes to the same weights."""

import itertools

import pytest
import torch
from safetensors.torch import load_file

from recipes import bimm_ucf101, stages
from visualpath import engine
from visualpath.rundir import stage_progress

pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


COMMON = ("--variant", "tiny", "device=cpu", "log_every=1", "stages=joint", "checkpoint_minutes=1")


def test_a_recipe_checkpoints_by_the_clock_mid_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    """The joint stage of ``--variant tiny`` is one epoch of 6 steps; on a clock that moves
    30 s per reading, ``checkpoint_minutes=1`` checkpoints every second step. Killed after
    step 3, the run keeps step 2 and the same command finishes it with the uninterrupted
    run's weights."""
    ticks = itertools.count()
    monkeypatch.setattr(engine, "_now", lambda: next(ticks) * 30.0)
    assert bimm_ucf101.main([*COMMON, f"run_dir={tmp_path / 'straight'}"]) == 0

    real_fit = stages.fit

    def killed_after_step_3(stage, *args, **kwargs):
        real_fit(stage, *args, **kwargs, stop_after=3)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(stages, "fit", killed_after_step_3)
    with pytest.raises(SystemExit) as stopped:
        bimm_ucf101.main([*COMMON, f"run_dir={tmp_path / 'killed'}"])
    assert stopped.value.code == 130
    progress = stage_progress(tmp_path / "killed" / "joint")
    assert (progress["step"], progress["epoch"], progress["finished"]) == (2, 0, False)  # mid-epoch, by the clock

    monkeypatch.setattr(stages, "fit", real_fit)
    assert bimm_ucf101.main([*COMMON, f"run_dir={tmp_path / 'killed'}"]) == 0
    straight = load_file(str(tmp_path / "straight" / "joint" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "joint" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_checkpoint_minutes_is_refused_when_negative(capsys):
    with pytest.raises(SystemExit) as refused:
        bimm_ucf101.main(["--variant", "tiny", "checkpoint_minutes=-1"])
    assert refused.value.code == 2 and "checkpoint_minutes" in capsys.readouterr().err
