"""A run directory is a self-contained, verified artefact that runs no code its reader did not
choose: tried through the commands users run, as the run's author, as a colleague, and as an
attacker would (docs/reliability.md#security).

One tiny run of a graph whose area lives in a sibling module (``lab/lab_graph.py`` imports it
from ``lab/sobel_area.py``, a copy of tests/fixtures/v3_sobel.py) is trained
on the command line from the graph's folder; the tests then move it, delete or edit its source
files, open it from other folders, with and without the author's trust store, and plant a
payload in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


AREA = Path(__file__).parents[1] / "fixtures" / "v3_sobel.py"
REPO = Path(__file__).parents[2]
TINY = ("--variant", "tiny", "device=cpu")


def _run(*argv: str, cwd: Path, store: Path | None = None, timeout: int = 300,
         pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``python ARGV`` in ``cwd`` as a user types it; ``store``: another reader's trust store;
    ``pythonpath``: a folder the user put on ``PYTHONPATH``."""
    env = dict(os.environ)
    if store is not None:
        env["VISUALPATH_TRUST_FILE"] = str(store)
    env.pop("PYTHONPATH", None)  # only what is installed, and the folder the command runs in
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _refused(done: subprocess.CompletedProcess, *words: str) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, f"rc={done.returncode}\n{done.stdout[-1500:]}\n{err[-3000:]}"
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err[-3000:]
    for word in words:
        assert word in err, err
    return err


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory):
    """``python -m recipes.bimm_ucf101 pathway=lab_graph.py:build`` run from the lab's folder
    (the area module found beside the graph file, as Python finds it there); returns the
    root holding ``lab/``, ``run/`` and one video of the built-in set."""
    root = tmp_path_factory.mktemp("artefact")
    lab = root / "lab"
    lab.mkdir()
    shutil.copy(AREA, lab / "sobel_area.py")  # the area's module, found beside the graph file
    (lab / "lab_graph.py").write_text('"""The graph of the lab: its area comes from the module beside it."""\n\n'
                                      "from sobel_area import build  # noqa: F401\n")
    done = _run("-m", "recipes.bimm_ucf101", *TINY, "pathway=lab_graph.py:build", f"run_dir={root / 'run'}", cwd=lab)
    assert done.returncode == 0, done.stderr[-3000:]
    from recipes import bimm_ucf101, stages

    _, records, _ = stages.video_records(bimm_ucf101.VARIANTS["tiny"], train=False)  # the set the run used
    return root, Path(records[0].path)


def test_the_run_carries_its_code_with_each_files_hash(lab_run):
    import hashlib

    root, _ = lab_run
    spec = json.loads((root / "run" / "pathway.json").read_text())
    assert spec["format"] == "visualpath.pathway/2"
    carried = {item["ref"]: item for item in spec["code"]}
    assert set(carried) == {"sobel_area", str((root / "lab" / "lab_graph.py").resolve())}  # area module and builder
    assert carried["sobel_area"]["file"] == "code/modules/sobel_area.py"
    for item in carried.values():
        data = (root / "run" / item["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
        assert data == Path(item["origin"]).read_bytes()
    assert spec["streams"][0]["areas"][2]["type"] == "sobel_area:V3Sobel"


def test_a_moved_run_whose_sources_are_gone_rebuilds_from_a_third_folder(lab_run, tmp_path):
    root, video = lab_run
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(root / "run", moved, symlinks=True)
    hidden = tmp_path / "lab-gone"
    shutil.move(root / "lab", hidden)  # the graph's files renamed away: only the run's copy is left
    third = tmp_path / "third"
    third.mkdir()
    try:
        done = _run("-m", "analysis", str(moved), "--limit", "4", "--no-figures", cwd=third)
        assert done.returncode == 0, done.stderr[-3000:]
        # captured as a log file is: no blank preamble from progress bars, no header cut short
        assert done.stdout.strip() and not done.stdout.startswith("\n") and "…" not in done.stdout
        assert not done.stderr.strip(), done.stderr[-2000:]
        rows = json.loads((moved / "analysis" / "results.json").read_text())["rows"]
        assert ("ventral", "V3") in {(r["stream"], r["area"]) for r in rows}
        done = _run("-m", "analysis", "predict", str(moved), str(video), cwd=third)
        assert done.returncode == 0 and str(video) in done.stdout, done.stderr[-3000:]
        stimuli, responses = _simulated_recording(moved, video, tmp_path)
        log = third / "neural.log"
        with log.open("w") as out:  # as a user keeps it: the log redirected to a file
            done = subprocess.run([sys.executable, "-m", "analysis", "neural", os.path.relpath(moved, third),
                                   "--stimuli", str(stimuli), "--responses", str(responses), "--folds", "3"],
                                  cwd=third, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=600,
                                  env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        text = log.read_text()
        assert done.returncode == 0, text[-3000:]
        assert "skipping unreadable stimulus" in text and "broken.avi" in text.splitlines()[0], text[:500]
        assert "ventral.V3" in text and "assignment" in text and "…" not in text, text[-3000:]
        result = json.loads((moved / "analysis" / "neural" / "results.json").read_text())
        assert result["skipped"] == 1 and result["stimulus_count"] == len(list(stimuli.iterdir())) - 1 >= 9
        for weights in ("trained", "random_init"):  # the user's area, trained and with random weights
            assert "ventral.V3" in result[weights]["encoding"]["regions"]["V1"]["areas"]
            assert "ventral.V3" in result[weights]["rsa"]["regions"]["MT"]["areas"]
        draws = result["random_init_draws"]["V1"]["ventral.V3"]  # the baseline over 3 draws, the first the one above
        assert len(draws) == 3 and draws[0] == result["random_init"]["encoding"]["regions"]["V1"]["areas"][
            "ventral.V3"]["median_corrected"]
        assert set(result["assignment"]) == {"V1", "MT"}
        assert (moved / "analysis" / "neural" / "neural.png").stat().st_size > 10_000
        assert (moved / "analysis" / "neural" / "rsatoolbox" / "trained" / "pooled" / "rsa_V1.hdf5").is_file()
    finally:
        shutil.move(hidden, root / "lab")


def _simulated_recording(run: Path, video: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Up to twelve of the built-in set's videos and a broken one, and a simulated V1/MT recording
    (NetCDF, Brain-Score's layout) naming them by file name, for ``analysis neural``."""
    from analysis.neural import load_stimuli
    from analysis.simulated_cells import simulate_recording

    stimuli = tmp_path / "stimuli"
    stimuli.mkdir()
    files = sorted(video.parent.parent.rglob("*.avi"))[::3][:12]
    for f in files:
        (stimuli / f.name).symlink_to(f)
    (stimuli / "broken.avi").write_bytes(b"not a video")
    clips, _, _ = load_stimuli(files, run)
    recording, _ = simulate_recording(clips.numpy(), [f.name for f in files], v1=4, mt=4, repetitions=4)
    recording.responses = np.concatenate([recording.responses[:1], recording.responses])  # the broken one's row
    recording.stimulus_ids = ["broken.avi", *recording.stimulus_ids]
    return stimuli, recording.save(tmp_path / "recording.nc")


def test_an_edited_area_file_does_not_change_what_the_run_rebuilds(lab_run, tmp_path):
    """The author edits the area after training (its target grows); opened from the lab's
    folder, where Python would import the edited file, the run still rebuilds its copy."""
    root, _ = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    edited = tmp_path / "lab"
    shutil.copytree(root / "lab", edited)
    area = edited / "sobel_area.py"
    area.write_text(area.read_text().replace("return 2 * self.cells * self.cells * layout.tube",
                                             "return 3 * self.cells * self.cells * layout.tube"))
    probe = ("from analysis.features import load_run; import sobel_area; m = load_run(%r, trust_code=False); "
             "a = m.pathway.stream('ventral').area('V3'); print(type(a).__module__, a.target_dim(m.streams['ventral'].layout))")
    done = _run("-c", probe % str(run), cwd=edited)
    # importing the edited module first, then opening the run: refused, naming the version conflict
    assert done.returncode != 0 and "'sobel_area' changed since this run was written" in done.stderr, \
        done.stderr[-2000:]
    done = _run("-c", probe.replace("import sobel_area; ", "") % str(run), cwd=edited)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["sobel_area", "8"]  # 2 x 2 x 2 x tube 1: the trained code, not the edit


CONSUMERS = {
    "analysis": lambda run, video, out: ["-m", "analysis", str(run), "--limit", "2", "--no-figures"],
    "analysis predict": lambda run, video, out: ["-m", "analysis", "predict", str(run), str(video)],
    "analysis extract": lambda run, video, out: ["-m", "analysis", "extract", str(run), str(video), "--out",
                                                 str(out / "features")],
    "export classifier": lambda run, video, out: ["-m", "recipes.export", str(run), str(out / "hf")],
    "export encoder": lambda run, video, out: ["-m", "recipes.export", str(run), str(out / "enc"), "--what",
                                               "encoder"],
    "interop.encoder_from_run": lambda run, video, out: [
        "-c", f"from visualpath.errors import one_line\nimport sys\nfrom visualpath.interop import encoder_from_run\n"
              f"try:\n    encoder_from_run({str(run)!r}, 'dorsal', trust_code=False)\n"
              "except ValueError as err:\n    print('error:', one_line(err), file=sys.stderr); sys.exit(2)"],
    "transfer pretrained=RUN": lambda run, video, out: ["-m", "recipes.transfer_ade20k", "--variant", "tiny",
                                                         f"pretrained={run}", f"run_dir={out / 'ade'}"],
    "benchmarks.step --pathway RUN": lambda run, video, out: [  # from the repository, where benchmarks/ lives
        "-c", f"import runpy, sys\nsys.path.insert(0, {str(REPO)!r})\n"
              f"sys.argv = ['step', '--pathway', {str(run)!r}, '--repeats', '1', '--warmup', '0', '--no-memory']\n"
              "runpy.run_module('benchmarks.step', run_name='__main__')"],
    "resume": lambda run, video, out: ["-m", "recipes.bimm_ucf101", *TINY, f"run_dir={run}"],
    "finetune pretrained=RUN": lambda run, video, out: ["-m", "recipes.bimm_ucf101", *TINY, f"run_dir={out / 'ft'}",
                                                         f"pretrained={run}", "stages=finetune,test"],
    "analysis neural": lambda run, video, out: ["-m", "analysis", "neural", str(run), *_neural_inputs(video, out)],
}


def _neural_inputs(video: Path, out: Path) -> list[str]:
    """Six videos and a valid recording of them: the command gets as far as opening the run."""
    stimuli = out / "neural_stimuli"
    stimuli.mkdir(exist_ok=True)
    for f in sorted(video.parent.glob("*.avi"))[:6]:
        if not (stimuli / f.name).exists():
            (stimuli / f.name).symlink_to(f)
    np.save(out / "responses.npy", np.random.default_rng(0).poisson(3.0, (6, 4, 2)).astype(float))
    return ["--stimuli", str(stimuli), "--responses", str(out / "responses.npy"), "--folds", "2"]


def _with_trust(argv: list[str]) -> list[str]:
    if argv[0] == "-c":  # the Python API: trust_code=True
        return [argv[0], argv[1].replace("trust_code=False", "trust_code=True")]
    return [*argv, "--trust-code"]


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_a_colleagues_run_is_refused_in_one_line_until_they_trust_its_code(lab_run, tmp_path, consumer):
    """Another reader (an empty trust store): every consumer refuses before running the
    run's code, naming its files and --trust-code; with the flag it opens the run."""
    root, video = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    store = tmp_path / "colleague.json"
    argv = CONSUMERS[consumer](run, video, tmp_path)
    _refused(_run(*argv, cwd=tmp_path, store=store), "code/modules/sobel_area.py", "--trust-code")
    if consumer in ("analysis predict", "export encoder", "interop.encoder_from_run", "transfer pretrained=RUN"):
        done = _run(*_with_trust(argv), cwd=tmp_path, store=store)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not store.exists()  # trusting once is not remembering


PAYLOAD = '''import pathlib
pathlib.Path({marker!r}).write_text("ran")
from areas.v1_gabor import V1Gabor  # re-exports the real class, so nothing else looks wrong
'''


def _plant(run: Path, payload_dir: Path, marker: Path, how: str) -> None:
    """Make every V1 area of ``run``'s graph name attacker code (a file, or a module in the
    folder the command runs in)."""
    payload_dir.mkdir(exist_ok=True)
    (payload_dir / "areas_extra.py").write_text(PAYLOAD.format(marker=str(marker)))
    (payload_dir / "evilmod.py").write_text(PAYLOAD.format(marker=str(marker)))
    ref = f"{payload_dir / 'areas_extra.py'}:V1Gabor" if how == "file" else "evilmod:V1Gabor"
    spec = json.loads((run / "pathway.json").read_text())
    for stream in spec["streams"]:
        for area in stream["areas"]:
            if area["name"] == "V1":
                area["type"] = ref
    (run / "pathway.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_a_planted_payload_never_runs_without_opt_in(lab_run, tmp_path, consumer):
    """The marker-file payload under each consumer: an absolute file path in the graph, the
    author's own trust store in force: never written, one-line refusal; with --trust-code the
    reader has chosen to run it, and it runs."""
    root, video = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    marker = tmp_path / "marker"
    _plant(run, tmp_path / "shared", marker, "file")
    argv = CONSUMERS[consumer](run, video, tmp_path)
    _refused(_run(*argv, cwd=tmp_path), "areas_extra.py", "--trust-code")
    assert not marker.exists()
    if consumer in ("analysis predict", "export classifier", "resume"):
        _run(*_with_trust(argv), cwd=tmp_path)
        assert marker.read_text() == "ran"


def test_a_module_in_the_current_folder_is_not_imported_by_a_run(lab_run, tmp_path):
    root, video = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    marker = tmp_path / "marker"
    _plant(run, tmp_path, marker, "module")  # evilmod.py beside where the command runs
    _refused(_run("-c", f"from analysis.features import load_run\nfrom visualpath.errors import one_line\nimport sys\n"
                        f"try:\n    load_run({str(run)!r})\nexcept ValueError as err:\n"
                        "    print('error:', one_line(err), file=sys.stderr); sys.exit(2)", cwd=tmp_path),
             "'evilmod'", "current folder")
    assert not marker.exists()


def test_carried_code_edited_in_the_run_is_refused(lab_run, tmp_path):
    """An attacker edits the run's copy (its hash no longer matches), or edits both the copy
    and its recorded hash (then it is code nobody trusted)."""
    import hashlib

    root, video = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    marker = tmp_path / "marker"
    copy = run / "code" / "modules" / "sobel_area.py"
    copy.write_text(f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n" + copy.read_text())
    _refused(_run("-m", "analysis", "predict", str(run), str(video), cwd=tmp_path), "damaged or edited")
    spec = json.loads((run / "pathway.json").read_text())
    spec["code"][0]["sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
    (run / "pathway.json").write_text(json.dumps(spec))
    _refused(_run("-m", "analysis", "predict", str(run), str(video), cwd=tmp_path), "not trusted", "--trust-code")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_file_naming_a_builder_is_refused_until_trusted(tmp_path, suffix):
    marker = tmp_path / "marker"
    (tmp_path / "x.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                   "def build():\n    raise SystemExit('built')\n")
    settings = {"pathway": str(tmp_path / "x.py") + ":build", "run_dir": "r"}
    config = tmp_path / f"shared{suffix}"
    config.write_text(json.dumps(settings) if suffix == ".json" else
                      "".join(f"{k}: '{v}'\n" for k, v in settings.items()))
    _refused(_run("-m", "recipes.bimm_ucf101", *TINY, "--config", str(config), cwd=tmp_path), "x.py", "--trust-code")
    assert not marker.exists()
    # a config file cannot opt in for its reader
    config.write_text(config.read_text() + ("" if suffix == ".json" else "trust_code: true\n"))
    if suffix == ".yaml":
        _refused(_run("-m", "recipes.bimm_ucf101", *TINY, "--config", str(config), cwd=tmp_path), "trust_code")
        assert not marker.exists()
    # the same builder named on the reader's own command line is their choice
    done = _run("-m", "recipes.bimm_ucf101", *TINY, f"pathway={tmp_path / 'x.py'}:build", f"run_dir={tmp_path / 'r'}",
                cwd=tmp_path)
    assert marker.read_text() == "ran" and "built" in done.stderr


def test_a_yaml_python_tag_is_refused_in_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    _refused(_run("-m", "recipes.bimm_ucf101", *TINY, "--config", str(config), cwd=tmp_path), "bad.yaml")


def test_flipped_weight_bytes_are_refused_under_finetune_and_test(lab_run, tmp_path):
    root, _ = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    weights = (run / "joint" / "model.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[-100:-90] = bytes(b ^ 0xFF for b in data[-100:-90])
    weights.write_bytes(bytes(data))
    shutil.rmtree(run / "finetune")  # finetuning from the damaged pretraining stage, in the run and from another
    _refused(_run("-m", "recipes.bimm_ucf101", *TINY, f"run_dir={run}", "stages=finetune,test", cwd=tmp_path),
             "joint/model.safetensors", "SHA-256")
    assert not (run / "finetune" / "model.safetensors").exists()
    _refused(_run("-m", "recipes.bimm_ucf101", *TINY, f"run_dir={tmp_path / 'ft'}", f"pretrained={run}",
                  "stages=finetune,test", cwd=tmp_path), "model.safetensors", "SHA-256")
    assert not (tmp_path / "ft" / "finetune" / "model.safetensors").exists()
    read = ("from visualpath.errors import one_line\nimport sys\nfrom visualpath.interop import read_state_dict\n"
            f"try:\n    read_state_dict({str(run)!r})\n"
            "except ValueError as err:\n    print('error:', one_line(err), file=sys.stderr); sys.exit(2)")
    for argv in (["-m", "analysis", str(run), "--no-figures"],
                 ["-m", "recipes.export", str(run), str(tmp_path / "o"), "--what", "encoder"],
                 ["-m", "recipes.transfer_ade20k", "--variant", "tiny", f"pretrained={run}",
                  f"run_dir={tmp_path / 'ade'}"],
                 ["-c", read]):
        _refused(_run(*argv, cwd=tmp_path), "model.safetensors", "SHA-256")


def test_the_notebook_never_runs_a_planted_payload_unless_told(lab_run, tmp_path, monkeypatch):
    """The example notebook on a run whose graph names attacker code: it stops at the cell that
    loads the run, with the refusal, and the payload never ran; ``PROBE_AREAS_TRUST_CODE=1``
    is the reader's opt-in, and then it runs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    root, _ = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    marker = tmp_path / "marker"
    _plant(run, tmp_path / "shared", marker, "file")
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PROBE_AREAS_RUN", str(run))
    for trust_code in ("", "1"):
        monkeypatch.setenv("PROBE_AREAS_TRUST_CODE", trust_code)
        nb = nbformat.read(repo / "analysis/notebooks/probe_areas.ipynb", as_version=4)
        nb.cells = nb.cells[:4]  # set-up and the cell that loads the run
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        if trust_code:
            client.execute()
            assert marker.read_text() == "ran"
        else:
            with pytest.raises(nbclient.exceptions.CellExecutionError, match="CodeNotTrusted"):
                client.execute()
            assert not marker.exists()


def test_a_run_written_before_runs_carried_code_loads_under_the_trust_rule(lab_run, tmp_path):
    """Format 1 (no ``code``): its graph names the module ``sobel_area``, which a module name
    finds only on the import path, never in the current folder (decision T3): from the lab's
    folder it is refused in one line; with the lab on ``PYTHONPATH`` the author's own run opens
    (the module's hash is in their store) and a colleague needs --trust-code."""
    root, video = lab_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run, symlinks=True)
    spec = json.loads((run / "pathway.json").read_text())
    spec["format"] = "visualpath.pathway/1"
    del spec["code"]
    (run / "pathway.json").write_text(json.dumps(spec))
    shutil.rmtree(run / "code")
    lab = tmp_path / "lab"
    shutil.copytree(root / "lab", lab)
    predict = ("-m", "analysis", "predict", str(run), str(video))
    _refused(_run(*predict, cwd=lab), "'sobel_area'", "current folder")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _run(*predict, cwd=elsewhere, pythonpath=lab)
    assert done.returncode == 0, done.stderr[-3000:]
    _refused(_run(*predict, cwd=elsewhere, pythonpath=lab, store=tmp_path / "colleague.json"), "'sobel_area'",
             "--trust-code")
    done = _run(*predict, "--trust-code", cwd=elsewhere, pythonpath=lab, store=tmp_path / "colleague.json")
    assert done.returncode == 0, done.stderr[-3000:]
