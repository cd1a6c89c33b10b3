"""``benchmarks.probe_curve`` probes the model the recipe is training, at the steps it says,
and says in words what its curve shows."""

import json

import pytest
import torch

from benchmarks import probe_curve
from visualpath.rundir import stage_progress


@pytest.mark.e2e
def test_the_curve_follows_both_stages_and_ends_at_the_saved_model(tmp_path):
    out = tmp_path / "curve"
    assert probe_curve.main(["--variant", "tiny", "--every", "2", "--out", str(out)]) == 0
    result = json.loads((out / "curve.json").read_text())
    points = result["points"]
    for stage in ("ventral", "joint"):
        steps = [p["step"] for p in points if p["stage"] == stage]
        total = stage_progress(out / "run" / stage)["total_steps"]
        assert total > 2 and steps[0] == 0 and steps[-1] == total and steps[:-1] == list(range(0, total, 2))
    times = [p["train_seconds"] for p in points]
    assert times == sorted(times) and times[0] >= 0
    # the last point is the model the joint stage saved: the same probe from the run's files
    from analysis.features import extract, load_run, run_dataset
    from analysis.readouts import linear_probe

    model = load_run(out / "run")
    train, test = run_dataset(out / "run", train=True), run_dataset(out / "run", train=False)
    saved = linear_probe(extract(model, train, "dorsal", progress=False), extract(model, test, "dorsal", progress=False))
    assert points[-1]["probe_top1"] == saved
    torch.manual_seed(0)
    rand = model.pathway.build().eval()
    assert result["random_init_probe_top1"] == linear_probe(extract(rand, train, "dorsal", progress=False),
                                                            extract(rand, test, "dorsal", progress=False))
    assert set(saved) == {"V1", "V2", "MT"} and (out / "curve.png").stat().st_size > 0
    # probing leaves the run as it was: the same weights as the plain run of the same config
    import attrs
    from safetensors.torch import load_file

    from recipes import bimm_ucf101
    from recipes.pipeline import run

    plain = tmp_path / "plain"
    run(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(plain), resume=False, stages=("ventral", "joint")))
    for stage in ("ventral", "joint"):
        ours, theirs = load_file(out / "run" / stage / "model.safetensors"), load_file(plain / stage / "model.safetensors")
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    again = tmp_path / "again"
    assert probe_curve.main(["--from-json", str(out / "curve.json"), "--out", str(again)]) == 0
    assert (again / "curve.md").read_text() == (out / "curve.md").read_text()


@pytest.mark.e2e
def test_every_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        probe_curve.main(["--every", "0"])
    assert "--every must be at least 1" in capsys.readouterr().err


def _result(values: dict[str, list[float]], baseline: dict[str, float]) -> dict:
    n = len(next(iter(values.values())))
    stages = ["ventral"] * (n // 2) + ["joint"] * (n - n // 2)
    points = [{"stage": s, "step": 10 * i, "train_seconds": 30.0 * i, "probe_top1": {a: v[i] for a, v in values.items()}}
              for i, s in enumerate(stages)]
    return {"command": "c", "variant": "demo", "seed": 0, "stream": "dorsal", "machine": "2 CPU cores, x",
            "steps": {}, "random_init_probe_top1": baseline, "points": points}


def test_findings_say_where_each_area_dips_and_from_where_it_stays_above_random_weights():
    result = _result({"MT": [0.5, 0.3, 0.45, 0.6], "V1": [0.5, 0.3, 0.35, 0.38]}, {"MT": 0.44, "V1": 0.4})
    text = probe_curve.findings(result)
    assert "MT: starts at 50.0, lowest 30.0 at ventral step 10, ends at 60.0 (+10.0 on its start); random weights 44.0, " \
           "above it from joint step 20 on (1.0 min of training)" in text
    assert "V1: starts at 50.0, lowest 30.0 at ventral step 10, ends at 38.0 (-12.0 on its start); random weights 40.0, " \
           "never above it to the end" in text
    table = probe_curve.render(result)
    assert "| joint | 30 | 1.50 | 60.0 | 38.0 |" in table and "| same graph, random weights | – | – | 44.0 | 40.0 |" in table


def test_the_docs_page_is_its_json_rendered(tmp_path):
    from pathlib import Path

    docs = Path(probe_curve.ROOT) / "docs"
    result = json.loads((docs / "probe_curve.json").read_text())
    page = (docs / "probe_curve.md").read_text()
    assert probe_curve.render(result) in page and f"`{result['command']} --docs`" in page
    assert result["points"][-1]["probe_top1"] and len(result["references"]) == 3
