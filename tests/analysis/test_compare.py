"""``python -m analysis compare RUN_A RUN_B``: per-area probes side by side, with an interval
on each difference: paired over the same test items, else Newcombe's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.compare import compare_runs, paired_interval
from analysis.features import Features
from analysis.readouts import newcombe_interval

ROOT = Path(__file__).parents[2]
DATA = {"root": None, "format": "ucf101", "frames": 4, "size": 32, "split": 1}


def _run(root: Path, signal: float, data=DATA, seed=0) -> Path:
    """An analysed run whose one area's features carry the label with strength ``signal``."""
    rng = np.random.default_rng(seed)
    (root / "analysis").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"config": {"data": data}}))
    for part, n in (("train", 200), ("test", 120)):
        labels = torch.arange(n) % 2
        x = torch.tensor(rng.normal(size=(n, 8)), dtype=torch.float32)
        x[:, 0] += signal * (2 * labels - 1)
        Features({"MT": x}, labels, {"stream": "dorsal"}).save(root / "analysis" / f"features_dorsal_{part}")
    rows = [{"stream": "dorsal", "area": "MT", "target_left": 0.9, "random_init_probe_top1": 0.5}]
    (root / "analysis" / "results.json").write_text(json.dumps({"rows": rows, "chance": 0.5}))
    return root


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II example (c): 56/70 - 48/80, method 10
    low, high = newcombe_interval(56 / 70, 70, 48 / 80, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_a_paired_interval_covers_a_difference_of_zero_and_excludes_a_large_one():
    rng = np.random.default_rng(0)
    same = rng.random(300) < 0.7
    assert paired_interval(same.astype(float), same.astype(float)) == (0.0, 0.0)
    better = same | (rng.random(300) < 0.5)  # the same items, half of the misses now right
    low, high = paired_interval(better.astype(float), same.astype(float))
    assert 0 < low < better.mean() - same.mean() < high


def test_a_run_that_carries_the_label_beats_one_that_does_not_with_a_paired_interval(tmp_path):
    a, b = _run(tmp_path / "a", signal=2.0), _run(tmp_path / "b", signal=0.0, seed=1)
    result = compare_runs(a, b)
    (row,) = result["rows"]
    assert result["same_test_items"] and row["paired"]
    low, high = row["probe_diff_ci95"]
    assert row["probe_a"] > 0.9 and 0 < low < row["probe_diff"] < high
    other = _run(tmp_path / "c", signal=2.0, data={**DATA, "size": 48})  # other test clips: not paired
    (row,) = compare_runs(other, b)["rows"]
    assert not row["paired"]
    assert np.allclose(row["probe_diff_ci95"], newcombe_interval(row["probe_a"], 120, row["probe_b"], 120))


def test_the_command_prints_the_table_and_refuses_a_run_not_analysed(tmp_path):
    a, b = _run(tmp_path / "a", signal=2.0), _run(tmp_path / "b", signal=0.0, seed=1)
    done = subprocess.run([sys.executable, "-m", "analysis", "compare", str(a), str(b), "--out",
                           str(tmp_path / "cmp.json")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "A - B [95% CI]" in done.stdout and "MT" in done.stdout and "*" in done.stdout
    assert json.loads((tmp_path / "cmp.json").read_text())["rows"][0]["paired"] is True
    (tmp_path / "raw").mkdir()
    refused = subprocess.run([sys.executable, "-m", "analysis", "compare", str(a), str(tmp_path / "raw")], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"error: {tmp_path / 'raw'} has not been analysed: run python -m analysis {tmp_path / 'raw'} first (it saves "
        "the features compared here)")


@pytest.mark.parametrize("resamples", ["10"])
def test_too_few_resamples_are_refused(resamples, tmp_path):
    done = subprocess.run([sys.executable, "-m", "analysis", "compare", "a", "b", "--resamples", resamples],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "at least 100" in done.stderr


def _neural(run: Path, shift: float, responses="rec.nc", seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"n{i}" for i in range(40)]
    r = {"MT": (rng.normal(0.3, 0.05, 40) + shift).tolist(), "V1": rng.normal(0.2, 0.05, 40).tolist()}
    r["V1"][3] = None  # a neuroid with no score for one area: left out of that pair
    scores = {"neuroids": {"id": ids, "region": ["MT"] * 20 + ["V1"] * 20, "r": r}}
    (run / "analysis" / "neural").mkdir(parents=True)
    (run / "analysis" / "neural" / "results.json").write_text(json.dumps(
        {"responses": responses, "trained": {"encoding": {"by_readout": {"pooled": scores}}}}))


def test_neural_scores_of_two_runs_on_one_recording_are_compared_over_the_same_neuroids(tmp_path):
    a, b = _run(tmp_path / "a", signal=2.0), _run(tmp_path / "b", signal=0.0, seed=1)
    assert compare_runs(a, b)["neural"] is None  # neither was scored against a recording
    _neural(a, shift=0.2)
    _neural(b, shift=0.0, seed=1)
    rows = {(r["region"], r["area"]): r for r in compare_runs(a, b)["neural"]["rows"]}
    assert set(rows) == {("MT", "MT"), ("MT", "V1"), ("V1", "MT"), ("V1", "V1")}
    mt = rows[("MT", "MT")]
    assert mt["neuroids"] == 20 and 0 < mt["diff_ci95"][0] < mt["diff"] < mt["diff_ci95"][1]
    assert rows[("MT", "V1")]["neuroids"] == 19
    low, high = rows[("V1", "V1")]["diff_ci95"]  # two draws of the same distribution
    assert low < 0 < high
    other = _run(tmp_path / "c", signal=2.0)
    _neural(other, shift=0.2, responses="another.nc")
    assert "different recordings" in compare_runs(other, b)["neural"]["note"]



def test_results_files_that_are_not_what_analysis_writes_are_refused_in_one_line(tmp_path):
    from visualpath.errors import Refused

    a, b = _run(tmp_path / "a", signal=2.0), _run(tmp_path / "b", signal=0.0, seed=1)
    (b / "analysis" / "results.json").write_text(json.dumps({"rows": [{"stream": 3}]}))
    with pytest.raises(Refused, match="holds no rows of areas"):
        compare_runs(a, b)
    b2 = _run(tmp_path / "b2", signal=0.0, seed=1)
    _neural(a, shift=0.2)
    (b2 / "analysis" / "neural").mkdir(parents=True)
    (b2 / "analysis" / "neural" / "results.json").write_text(json.dumps({"responses": "rec.nc", "trained": []}))
    with pytest.raises(Refused, match="is not what python -m analysis neural writes"):
        compare_runs(a, b2)


def test_a_full_disk_is_one_line_and_exit_1_and_anything_else_is_raised(capsys):
    import errno

    from visualpath.errors import exit_if_disk_full

    full = RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert exit_if_disk_full(OSError(errno.ENOSPC, "No space left on device", "x.png")) == 1
    assert exit_if_disk_full(full, "run it again") == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: no space left on the device while writing x.png: free some space and run the same "
                   "command again", "error: no space left on the device: free some space and run it again"]
    with pytest.raises(TypeError, match="a defect"):
        exit_if_disk_full(TypeError("a defect"))
