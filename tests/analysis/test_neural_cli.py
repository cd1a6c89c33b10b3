"""``python -m analysis neural``: stimuli matched to the recording, and every bad input refused
in one line before any model is opened (the run given here does not even exist).

The command end to end, on a moved run of a user's graph opened from a third folder, is
tested in tests/recipes/test_run_artefact.py."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.neural import IMAGE_SUFFIXES, load_stimuli, main, match_stimuli
from analysis.recordings import Recording

ROOT = Path(__file__).parents[2]


@pytest.fixture
def stimuli(tmp_path):
    folder = tmp_path / "stimuli"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a/cat.png", "a/dog.png", "b/cat.png", "b/owl.jpg", "b/bee.png", "b/elk.png"):
        Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not a stimulus")
    return folder


def _rec(ids, given=True, S=None):
    S = S or len(ids)
    return Recording(np.ones((S, 2, 1, 1)), ids, ["n0", "n1"], meta={"stimulus_ids_given": given})


def test_stimuli_are_matched_by_path_then_name_then_stem(stimuli):
    found = match_stimuli(stimuli, _rec(["b/cat.png", "dog.png", "owl", "./a/cat.png"]))
    assert [f.relative_to(stimuli).as_posix() for f in found] == ["b/cat.png", "a/dog.png", "b/owl.jpg", "a/cat.png"]
    with pytest.raises(ValueError, match="'cat.png' matches 2 files"):
        match_stimuli(stimuli, _rec(["cat.png"]))
    with pytest.raises(ValueError, match="2 of 3 stimulus_id values name no file .* e.g. 'zebra.png'"):
        match_stimuli(stimuli, _rec(["zebra.png", "dog", "yak"]))
    with pytest.raises(ValueError, match="the same file"):
        match_stimuli(stimuli, _rec(["dog", "a/dog.png"]))


def test_without_ids_the_sorted_files_must_be_as_many_as_the_stimuli(stimuli):
    found = match_stimuli(stimuli, _rec([str(i) for i in range(6)], given=False))
    assert [f.name for f in found] == ["cat.png", "dog.png", "bee.png", "cat.png", "elk.png", "owl.jpg"]
    with pytest.raises(ValueError, match="holds 6 video/image files and the responses have 5 stimuli"):
        match_stimuli(stimuli, _rec([str(i) for i in range(5)], given=False))


def test_an_image_is_a_still_clip_at_the_run_s_size(stimuli):
    clips, kept, bad = load_stimuli(sorted(stimuli.rglob("*.png")), None, frames=4, size=32)
    assert clips.shape == (5, 3, 4, 32, 32) and clips.dtype.is_floating_point is False and not bad
    assert (clips[:, :, 0] == clips[:, :, 3]).all()
    assert ".png" in IMAGE_SUFFIXES


@pytest.mark.parametrize("write, message", [
    (lambda p: np.save(p / "r.npy", np.ones((7, 3))), "holds 6 video/image files and the responses have 7"),
    (lambda p: np.save(p / "r.npy", np.where(np.eye(6, 3) > 0, np.nan, 1.0)), "3 NaN or infinite values"),
    (lambda p: np.save(p / "r.npy", np.ones((6, 3, 2))), "6 stimuli are too few for 5 folds"),
])
def test_bad_inputs_are_refused_in_one_line_before_the_run_is_opened(stimuli, tmp_path, capsys, write, message):
    write(tmp_path)
    argv = ["no-such-run", "--stimuli", str(stimuli), "--responses", str(tmp_path / "r.npy")]
    if "folds" not in message:
        argv += ["--folds", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and message in err.replace("\n", " "), err
    assert not (tmp_path / "no-such-run").exists()


@pytest.mark.e2e
def test_options_are_checked_before_the_run_is_opened(stimuli, tmp_path, capsys):
    np.save(tmp_path / "r.npy", np.random.default_rng(0).poisson(2.0, (6, 3, 2, 4)).astype(float))
    base = ["no-such-run", "--stimuli", str(stimuli), "--responses", str(tmp_path / "r.npy"), "--folds", "2"]
    for extra, message in ((["--time-bins", "5:9"], "selects none of the recording's 4 time bins"),
                           (["--time-bins", "x"], "--time-bins must be START:STOP"),
                           (["--rsa-method", "pearson"], "--rsa-method 'pearson' is not one of"),
                           (["--random-draws", "0"], "--random-draws must be an integer >= 1, got 0"),
                           ([], "no-such-run")):  # everything else is fine: the run is what is missing
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert main(["no-such-run", "--stimuli", str(tmp_path / "nowhere"), "--responses", str(tmp_path / "r.npy"),
                 "--folds", "2"]) == 2
    assert "--stimuli" in capsys.readouterr().err


@pytest.mark.e2e
def test_the_analysis_help_lists_the_neural_command():
    done = subprocess.run([sys.executable, "-m", "analysis", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert "python -m analysis neural RUN_DIR --stimuli DIR --responses FILE" in done.stdout
    done = subprocess.run([sys.executable, "-m", "analysis", "neural", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0 and "--responses" in done.stdout and "--readout" in done.stdout
