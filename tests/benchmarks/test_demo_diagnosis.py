"""benchmarks.demo_diagnosis: the references, step costs and in-memory learning it measures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import demo_diagnosis

ROOT = Path(demo_diagnosis.__file__).resolve().parents[1]


def _entry(visible, cost):
    return {"visible_fit": {"dorsal": {"MT": visible}}, "neighbour_fit": {"dorsal": {"MT": 0.99}},
            "channel_fit": {"dorsal": {"MT": 0.92}},
            "cost": {"dorsal": {"step_s": cost, "targets_s": {"MT": cost / 4}}},
            "learn": {"dorsal": {"steps": 500, "batch_size": 16, "lr": 1e-3, "wall_s": 35.0, "fit": {"MT": 0.97},
                                 "fit_parts": {"means": {"MT": 0.4}, "inside": {"MT": 0.99}}}}}


def test_render_shows_every_measurement():
    text = demo_diagnosis.render({"bimm": _entry(1.004, 0.2)}, {"command": "c", "machine": "m", "date": "d"})
    assert "| bimm | dorsal | MT | 1.00 | 0.99 | 0.92 |" in text
    assert "| bimm | dorsal | 0.200 s | MT 0.050 s (25%) |" in text
    assert "| bimm | dorsal | 500 (16, 1e-03) | 35 s | MT 0.970 | MT 0.40 / 0.99 |" in text


def test_render_without_training_has_no_learning_table():
    entry = _entry(0.5, 0.1)
    entry["learn"] = {}
    assert "How fast each stream learns" not in demo_diagnosis.render({"x": entry}, {"command": "c", "machine": "m",
                                                                                    "date": "d"})


def test_the_stored_diagnosis_is_the_rendered_one():
    """docs/demo_diagnosis.md is what the script renders from docs/demo_diagnosis.json."""
    stored = json.loads((ROOT / "docs" / "demo_diagnosis.json").read_text())
    assert (ROOT / "docs" / "demo_diagnosis.md").read_text() == demo_diagnosis.render(
        stored["results"], stored["meta"], stored["ablations"])
    assert set(stored["results"]) == {label for label, _, _ in demo_diagnosis.GRAPHS}
    assert [a["change"] for a in stored["ablations"]] == [a[0] for a in demo_diagnosis.ABLATIONS]


def test_render_lists_each_ablation_with_its_overrides():
    ablation = {"change": "tube mask 0.5", "graph": "bimm", "stream": "dorsal",
                "overrides": ["pathway.dorsal.mask.ratio=0.5"], "lr_factor": 1.0, "steps": 500, "batch_size": 16,
                "lr": 1e-3, "wall_s": 40.0, "fit": {"MT": 0.961}}  # a run stored without the parts
    text = demo_diagnosis.render({"bimm": _entry(1.0, 0.2)}, {"command": "c", "machine": "m", "date": "d"}, [ablation])
    assert ("| bimm | dorsal | tube mask 0.5 | `pathway.dorsal.mask.ratio=0.5` | 500 (16, 1e-03) | MT 0.961 | – |"
            in text)
    assert "What else was tried" not in demo_diagnosis.render({"bimm": _entry(1.0, 0.2)}, {"command": "c",
                                                                                           "machine": "m",
                                                                                           "date": "d"})


@pytest.mark.slow
def test_the_diagnosis_runs_as_a_user_types_it(tmp_path):
    """The command line at the tiny variant, its output redirected to a file."""
    out = tmp_path / "diagnosis"
    log = tmp_path / "diagnosis.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "benchmarks.demo_diagnosis", "--variant", "tiny", "--steps", "3",
                        "--ablations", "--out", str(out)], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    stored = json.loads((out / "diagnosis.json").read_text())
    results = stored["results"]
    # each ablation ran (its change is built by ablation_config, tested below)
    ablations = {(a["graph"], a["change"]): a for a in stored["ablations"]}
    assert list(ablations) == [(a[1], a[0]) for a in demo_diagnosis.ABLATIONS]
    assert all(a["steps"] == 3 and set(a["fit"]) == set(a["fit_parts"]["inside"]) for a in ablations.values())
    lr = results["bimm"]["learn"]["dorsal"]["lr"]
    assert ablations["bimm", "peak learning rate 4x"]["lr"] == pytest.approx(4 * lr)
    assert "What else was tried" in (out / "diagnosis.md").read_text()
    assert set(results) == {label for label, _, _ in demo_diagnosis.GRAPHS}
    assert set(results["bimm"]["visible_fit"]) == {"ventral", "dorsal"}
    assert set(results["bimm"]["learn"]) == {"ventral", "dorsal"}
    assert results["bimm"]["learn"]["dorsal"]["steps"] == 3
    for r in results.values():  # scaled references never score worse than the average target
        assert all(0 <= v <= 1 + 1e-9 for s in r["visible_fit"].values() for v in s.values())
        assert all(0 <= v <= 1 + 1e-9 for s in r["channel_fit"].values() for v in s.values())
        assert all(c["step_s"] > 0 for c in r["cost"].values())
    assert "What a step costs" in (out / "diagnosis.md").read_text()
    assert "What a step costs" in log.read_text()  # the table printed at the end reads in a log file
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([sys.executable, "-m", "benchmarks.demo_diagnosis", "--steps", "-1"], cwd=ROOT,
                       capture_output=True, check=True)
    # --only trains just the streams it names; every graph is still measured
    assert demo_diagnosis.main(["--variant", "tiny", "--steps", "1", "--only", "bimm:dorsal", "videomae",
                                "--out", str(tmp_path / "only")]) == 0
    results = json.loads((tmp_path / "only" / "diagnosis.json").read_text())["results"]
    assert {label: set(r["learn"]) for label, r in results.items()} == {
        "bimm": {"dorsal"}, "videomae": {"dorsal"}, "videomae-whole-tube": set()}
    assert all(r["visible_fit"] for r in results.values())


@pytest.mark.e2e
def test_unknown_graph_is_refused_before_any_compute(capsys, tmp_path):
    with pytest.raises(SystemExit) as err:
        demo_diagnosis.main(["--only", "bimm:dorsal", "nope:dorsal", "--out", "/nonexistent/never"])
    assert err.value.code == 2
    assert "'nope:dorsal': no such graph" in capsys.readouterr().err
    for argv, says in ((["--only", "bimm:dorsl"], "graph 'bimm' has the streams ['dorsal', 'ventral']"),
                       (["--variant", "nope"], "the recipes' variants are ['demo', 'paper', 'small', 'tiny']"),
                       (["--docs", "--steps", "0"], "--docs writes the stored diagnosis"),
                       (["--ablations", "--steps", "0"], "--ablations are learning runs"),
                       (["--docs", "--only", "bimm"], "--docs writes the stored diagnosis")):
        with pytest.raises(SystemExit):
            demo_diagnosis.main([*argv, "--out", str(tmp_path / "never")])
        assert says in capsys.readouterr().err, argv
        assert not (tmp_path / "never").exists(), argv  # refused before anything is written


def test_each_ablation_builds_the_graph_it_names():
    """What ``measure`` trains for each entry of ABLATIONS, at the demo variant."""
    from recipes.graph import build_graph

    base = demo_diagnosis.ablation_config("demo", "bimm", (), 1.0)
    built = {(label, change): (build_graph(cfg := demo_diagnosis.ablation_config("demo", label, extra, lr)), cfg)
             for change, label, _, extra, lr in demo_diagnosis.ABLATIONS}
    graph, _ = built["bimm", "tube mask 0.5 instead of 0.9"]
    assert graph.stream("dorsal").mask.ratio == 0.5 and graph.stream("ventral").mask.ratio == 0.75
    graph, _ = built["videomae", "tube mask 0.5 instead of 0.9"]
    assert graph.stream("dorsal").mask.ratio == 0.5
    graph, _ = built["bimm", "MT decoder 128 wide with 2 blocks instead of 64 and 1"]
    mt = next(a for a in graph.stream("dorsal").areas if a.name == "MT")
    assert (mt.decoder.width, mt.decoder.depth) == (128, 2)
    _, cfg = built["bimm", "peak learning rate 4x"]
    assert cfg.joint.optim.base_lr == pytest.approx(4 * base.joint.optim.base_lr)
    graph, _ = built["bimm", "MT's raw differences, not standardised per token"]
    assert next(a for a in graph.stream("dorsal").areas if a.name == "MT").normalize is False
    graph, _ = built["bimm", "V2's edge floor 0.06 instead of 0.02 (most of the plaid's stripes drop out)"]
    floors = {s.name: next(a for a in s.areas if a.name == "V2").min_gradient for s in graph.streams}
    assert floors == {"ventral": 0.06, "dorsal": 0.02}
