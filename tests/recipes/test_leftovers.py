"""No leftovers: a finished command run again changes nothing, and checkpoint units a kill
left beside the selected one are removed when their stage runs or resumes."""

import json
import shutil

import pytest

from recipes import bimm_ucf101
from visualpath.rundir import prune_stage, selected_checkpoint


def _main(run_dir, *argv):
    return bimm_ucf101.main(["--variant", "tiny", "device=cpu", f"run_dir={run_dir}", *argv])


def _files(run_dir):
    """Every file of the run with its bytes, but the lock and what each run rewrites as it was."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name not in (".lock",) and p.suffix != ".png"}


@pytest.mark.e2e
def test_a_finished_command_run_again_changes_nothing_and_removes_stale_units(tmp_path):
    run = tmp_path / "run"
    assert _main(run) == 0
    before = _files(run)
    tests = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["stage"] == "test" for r in tests) == 1
    # what a kill between selecting the joint stage's last unit and removing the old one leaves
    selected = selected_checkpoint(run / "joint")
    stale = run / "joint" / "ckpt-000000001-00000-deadbeef"
    shutil.copytree(selected, stale)
    (run / "joint" / ".ckpt-000000002-00000-cafecafe.tmp").mkdir()
    assert _main(run) == 0
    assert not stale.exists() and not list((run / "joint").glob(".ckpt-*"))
    after = _files(run)
    assert after.keys() == before.keys()
    changed = [k for k in after if after[k] != before[k]]
    assert changed == [], changed  # no second test record, no rewritten checkpoint, same results


def test_prune_stage_keeps_the_selected_unit_only(tmp_path):
    from tests.visualpath.test_engine import _train

    _train(tmp_path, stop_after=4)
    stage = tmp_path / "stage"
    selected = selected_checkpoint(stage)
    shutil.copytree(selected, stage / "ckpt-000000000-00000-00000000")
    (stage / ".ckpt-x.tmp").mkdir()
    assert sorted(prune_stage(stage)) == [".ckpt-x.tmp", "ckpt-000000000-00000-00000000"]
    assert [p.name for p in stage.glob("ckpt-*")] == [selected.name]
    assert prune_stage(tmp_path / "nothing-here") == []
