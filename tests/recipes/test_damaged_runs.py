"""A run's files damaged or forged: each consumer refuses in one line naming the file and what
is wrong, prints no terminal escape it read, and allocates nothing a file asks for past a bound
(docs/reliability.md#security). One tiny run of the paper's graph, copied per case."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.recipes.test_run_artefact import CONSUMERS, TINY, _refused, _run
from tests.recipes.test_run_links import paper_run  # noqa: F401 (the fixture)


pytestmark = pytest.mark.e2e  # runs the commands as a user types them (python -m pytest -m e2e)


def _rehash(unit: Path) -> None:
    """Record the weights' new hash, as a forger would."""
    progress = json.loads((unit / "progress.json").read_text())
    progress["weights_sha256"] = hashlib.sha256((unit / "model.safetensors").read_bytes()).hexdigest()
    (unit / "progress.json").write_text(json.dumps(progress))


def _weights(run: Path, stage: str, edit) -> None:
    unit = (run / stage / "current").resolve()
    weights = load_file(str(unit / "model.safetensors"))
    edit(weights)
    save_file(weights, str(unit / "model.safetensors"))
    _rehash(unit)


def _drop_first(weights):
    del weights[sorted(weights)[0]]


def _widen_first(weights):
    name = sorted(k for k in weights if not k.startswith("head."))[-1]  # a classifier head's rows are classes.json's
    weights[name] = weights[name].repeat(2, *[1] * (weights[name].ndim - 1))


def _nested(run):
    spec = json.loads((run / "pathway.json").read_text())
    (run / "pathway.json").write_text(json.dumps(spec)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def _wide(run):
    spec = json.loads((run / "pathway.json").read_text())
    spec["encoder"]["width"] = 16384
    spec["encoder"]["heads"] = 16
    (run / "pathway.json").write_text(json.dumps(spec))


# case -> (how the run is damaged, the consumer, words the one-line refusal must hold)
CASES = {
    "config.json a list": (lambda run: (run / "config.json").write_text("[1, 2]"), "analysis",
                           ("config.json", "a list, not an object")),
    "config.json not JSON": (lambda run: (run / "config.json").write_text("{oops"), "analysis predict",
                             ("config.json", "not valid JSON")),
    "progress.json a list": (lambda run: ((run / "finetune" / "current").resolve() / "progress.json").write_text("[]"),
                             "analysis predict", ("progress.json", "a list, not an object")),
    "pathway.json nested deep": (_nested, "analysis", ("pathway.json", "nested too deeply")),
    "classes.json too short": (lambda run: (run / "classes.json").write_text('["a", "b"]'), "analysis predict",
                               ("classes.json", "names 2 classes")),
    "a weight missing": (lambda run: _weights(run, "joint", _drop_first), "analysis", ("model.safetensors",
                                                                                        "missing")),
    "a weight of another shape": (lambda run: _weights(run, "joint", _widen_first), "export encoder",
                                  ("model.safetensors", "other shapes")),
    "a finetuned weight of another shape": (lambda run: _weights(run, "finetune", _widen_first), "analysis predict",
                                            ("model.safetensors",)),
    "an encoder 16384 wide": (_wide, "analysis", ("VISUALPATH_MAX_PARAMETERS", "width 16384")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_is_refused_in_one_line_naming_its_file(paper_run, tmp_path, case):  # noqa: F811
    run_src, video = paper_run
    run = tmp_path / "run"
    shutil.copytree(run_src, run, symlinks=True)
    damage, consumer, words = CASES[case]
    damage(run)
    _refused(_run(*CONSUMERS[consumer](run, video, tmp_path), cwd=tmp_path, timeout=120), *words)


def test_class_names_with_terminal_escapes_are_printed_escaped(paper_run, tmp_path):  # noqa: F811
    run_src, video = paper_run
    run = tmp_path / "run"
    shutil.copytree(run_src, run, symlinks=True)
    classes = json.loads((run / "classes.json").read_text())
    classes = ["\x1b[2J\x1b[Hall checks passed\r" + c for c in classes]
    (run / "classes.json").write_text(json.dumps(classes))
    done = _run(*CONSUMERS["analysis predict"](run, video, tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert "\\x1b[2J" in done.stdout


def test_a_built_in_set_too_large_is_refused_before_it_is_generated(tmp_path):
    done = _run("-m", "recipes.bimm_ucf101", *TINY, "data.synthetic_groups=100000", f"run_dir={tmp_path / 'r'}",
                cwd=tmp_path)
    _refused(done, "synthetic_groups must be at most 64")
    assert not (tmp_path / "r").exists()
