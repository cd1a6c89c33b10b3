"""Any pathway graph a user writes in Python trains, resumes, finetunes, tests and is probed
through the same commands as the paper's (the user's area lives in tests/fixtures/v3_sobel.py,
outside every package)."""

import json
import math
import re
from pathlib import Path

import attrs
import pytest
import torch
from safetensors.torch import load_file

from recipes import bimm_ucf101, pipeline, stages
from tests.conftest import accuracy_over

GRAPH = Path(__file__).parents[1] / "fixtures" / "v3_sobel.py"


def _main(*argv: str) -> int:
    return bimm_ucf101.main(["--variant", "tiny", "device=cpu", "log_every=1", *argv])


def _weights(run_dir, stage):
    return load_file(str(Path(run_dir, stage, "model.safetensors")))


@pytest.fixture(scope="module")
def user_graph_runs(tmp_path_factory):
    """The user's graph trained twice on the command line: straight through, and killed in
    the middle of the joint stage (right after a checkpoint), then run again."""
    root = tmp_path_factory.mktemp("graphs")
    common = (f"pathway={GRAPH}:build", "pathway.V1.wavelengths=4,8", "pathway.dorsal.MT.normalize=false",
              "joint.optim.epochs=2")
    straight, killed = root / "straight", root / "killed"
    assert _main(f"run_dir={straight}", *common) == 0

    real_fit = stages.fit

    def fit_killed_at_step_3(stage, *args, **kwargs):
        if stage != "joint":
            return real_fit(stage, *args, **kwargs)
        real_fit(stage, *args, **kwargs, checkpoint_every=1, stop_after=3)
        raise KeyboardInterrupt("killed")

    stages.fit = fit_killed_at_step_3
    try:
        with pytest.raises(SystemExit) as exit_info:  # Ctrl-C: exit 130, the same command resumes
            _main(f"run_dir={killed}", *common)
        assert exit_info.value.code == 130
    finally:
        stages.fit = real_fit
    assert (killed / "joint" / "state.pt").is_file()  # the kill left a joint checkpoint
    assert not (killed / "finetune").exists()
    assert _main(f"run_dir={killed}", *common) == 0  # the same command again resumes
    return straight, killed


@pytest.mark.e2e
def test_a_user_graph_from_a_plain_file_trains_through_every_stage(user_graph_runs):
    straight, _ = user_graph_runs
    results = json.loads((straight / "results.json").read_text())
    assert accuracy_over(results) and results["test_items"] == 20
    spec = json.loads((straight / "pathway.json").read_text())
    ventral, dorsal = spec["streams"]
    assert [a["name"] for a in ventral["areas"]] == ["V1", "V2", "V3", "V4"]
    assert [a["name"] for a in dorsal["areas"]] == ["V1", "V2", "MT"]
    assert ventral["areas"][2]["type"] == f"{GRAPH.resolve()}:V3Sobel"
    assert spec["share"] == ["V1", "V2"]
    metrics = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert any("ventral.V3" in m for m in metrics if m["stage"] == "ventral")
    assert any("ventral.V3" in m and "dorsal.MT" in m for m in metrics if m["stage"] == "joint")


@pytest.mark.e2e
def test_an_override_on_the_command_line_reaches_the_saved_graph_and_the_built_area(user_graph_runs):
    from analysis.features import load_run

    straight, _ = user_graph_runs
    spec = json.loads((straight / "pathway.json").read_text())
    for stream in spec["streams"]:
        assert stream["areas"][0]["wavelengths"] == [4.0, 8.0]  # V1 in both streams
    assert spec["streams"][1]["areas"][2]["normalize"] is False
    model = load_run(straight)
    for name in ("ventral", "dorsal"):
        assert model.pathway.stream(name).area("V1").wavelengths == (4.0, 8.0)
    assert model.pathway.stream("dorsal").area("MT").normalize is False
    # the built V1 decoders predict 8 orientations x 2 wavelengths x 16 cells per frame
    assert model.streams["ventral"].decoders["V1"].head.out_features == 8 * 2 * 16
    assert model.streams["dorsal"].decoders["V1"].head.out_features == 8 * 2 * 16 * 2


@pytest.mark.e2e
def test_a_killed_run_of_a_user_graph_resumes_to_the_same_weights(user_graph_runs):
    straight, killed = user_graph_runs
    for stage in ("joint", "finetune"):
        a, b = _weights(straight, stage), _weights(killed, stage)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    assert json.loads((straight / "results.json").read_text())["top1"] == \
        json.loads((killed / "results.json").read_text())["top1"]


@pytest.mark.e2e
def test_analysis_reports_every_area_of_a_user_graph(user_graph_runs, capsys):
    from analysis.report import main

    straight, _ = user_graph_runs
    assert main([str(straight), "--limit", "12"]) == 0
    result = json.loads((straight / "analysis" / "results.json").read_text())
    rows = {(r["stream"], r["area"]): r for r in result["rows"]}
    assert set(rows) == {("ventral", a) for a in ("V1", "V2", "V3", "V4")} | \
        {("dorsal", a) for a in ("V1", "V2", "MT")}
    assert 0 <= rows[("ventral", "V3")]["probe_top1"] <= 1 and rows[("ventral", "V3")]["osi"] is not None
    for row in rows.values():  # how much of each target is left at masked tokens (a few steps: often above 1)
        assert math.isfinite(row["target_left"]) and row["target_left"] > 0
        assert 0 < row["target_left_neighbours"] < 2  # the reference needs no training
    out = capsys.readouterr().out
    assert "target left [8 neighbours]" in out


@pytest.mark.e2e
def test_finetuning_and_testing_a_user_graph_run_from_another_run_directory(user_graph_runs, tmp_path):
    straight, _ = user_graph_runs
    target = tmp_path / "ft"
    assert _main(f"run_dir={target}", f"pretrained={straight}", "stages=finetune,test") == 0
    spec = json.loads((target / "pathway.json").read_text())
    assert [a["name"] for a in spec["streams"][0]["areas"]] == ["V1", "V2", "V3", "V4"]


@pytest.mark.e2e
def test_a_three_stream_graph_trains_finetunes_and_is_probed(tmp_path):
    from analysis.features import load_run
    from analysis.report import main as analyse

    run_dir = tmp_path / "three"
    assert _main(f"run_dir={run_dir}", f"pathway={GRAPH}:build_three") == 0
    model = load_run(run_dir)
    assert [s.name for s in model.pathway.streams] == ["ventral", "dorsal", "slow"]
    assert model.stage("slow", "V1") is model.stage("dorsal", "V1") is model.stage("ventral", "V1")
    assert model.stage("slow", "MT") is not model.stage("dorsal", "MT")
    clip = torch.randint(0, 255, (1, 3, 4, 48, 48), dtype=torch.uint8)
    assert model.features(clip, "slow")["MT"].shape[1] == 36  # half the frames: 1 x 6 x 6 tokens (8 px patches)
    assert model.features(clip, "dorsal")["MT"].shape[1] == 72
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("slow.MT" in m for m in metrics if m["stage"] == "joint")
    assert json.loads((run_dir / "results.json").read_text())["test_items"] == 20
    assert _main(f"run_dir={run_dir}", f"pathway={GRAPH}:build_three", "stages=finetune,test",
                 "finetune.stream=slow", "resume=false") == 0  # the half-rate stream's encoder, finetuned
    assert analyse([str(run_dir), "--limit", "12"]) == 0
    rows = json.loads((run_dir / "analysis" / "results.json").read_text())["rows"]
    assert {r["stream"] for r in rows} == {"ventral", "dorsal", "slow"}
    assert ("slow", "V2s") in {(r["stream"], r["area"]) for r in rows}


def test_a_stored_graph_and_an_importable_module_are_graphs_too(tmp_path, monkeypatch):
    from recipes.graph import build_graph

    monkeypatch.syspath_prepend(str(GRAPH.parent))
    cfg = bimm_ucf101.VARIANTS["tiny"]
    from_module = build_graph(attrs.evolve(cfg, pathway="v3_sobel:build"))
    stored = tmp_path / "graph.json"
    stored.write_text(json.dumps(from_module.to_dict()))
    from_file = build_graph(attrs.evolve(cfg, pathway=str(stored)))
    assert [a.name for a in from_file.streams[0].areas] == ["V1", "V2", "V3", "V4"]
    assert from_file.to_dict() == from_module.to_dict()


@pytest.mark.parametrize("argv, message", [
    (("pathway.V1.wavelenghts=4",), "V1Gabor has no field 'wavelenghts'; did you mean 'wavelengths'"),
    (("pathway.V9.blocks=1",), "unknown graph key 'V9.blocks'"),
    (("pathway.dorsal.mask.ratio=1.5",), "TubeMask.ratio must be in the open interval"),
    ((f"pathway={GRAPH}:nothing",), "has no 'nothing'"),
    (("pathway=/nonexistent/graph.py:build",), "no such file"),
    (("pathway=graph.json",), "no such file"),
    (("finetune.stream=fast",), "finetune.stream='fast' is not a stream of the graph"),
    (("data.maps=flow=/tmp",), "data.maps names 'flow', which no area of the graph reads"),
])
def test_bad_graphs_and_keys_fail_before_compute_naming_the_field(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(SystemExit) as exit_info:
        _main(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_the_graph_areas_and_their_keys(capsys):
    with pytest.raises(SystemExit):
        _main(f"pathway={GRAPH}:build", "--help")
    out = capsys.readouterr().out
    assert "ventral [image]: V1 (V1Gabor, 1 block) -> V2 (V2Contour, 1 block) -> V3 (V3Sobel, 1 block)" in out
    for key in ("pathway.MT.normalize: bool = True", "pathway.V3.cells: int = 2",
                "pathway.ventral.mask.ratio: float = 0.75", "pathway.V1.decoder.width: int = 32"):
        assert key in out
    keys = [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  pathway.")]
    assert len(keys) == len(set(keys)) and "pathway.ventral.V3.cells" not in keys  # each setting once


def test_help_lists_a_streams_own_key_where_the_streams_differ(capsys):
    with pytest.raises(SystemExit):
        _main("pathway.share=none", "pathway.dorsal.V1.cells=1", "--help")  # V1 unshared, so it may differ
    out = capsys.readouterr().out
    assert "pathway.dorsal.V1.cells: int = 1" in out and "pathway.ventral.V1.cells: int = 4" in out
    assert "pathway.dorsal.V1.wavelengths" not in out  # the same in both streams: AREA.FIELD only
    assert "pathway.V1.cells: int = 'differs by stream: ventral 4, dorsal 1'" in out  # not one stream's value


@pytest.mark.e2e
def test_interop_reads_a_user_graph_run_directory(user_graph_runs):
    from visualpath.interop import encoder_from_run, load_checkpoint
    from visualpath.rundir import load_model

    straight, _ = user_graph_runs
    encoder = encoder_from_run(straight, "dorsal")
    model = load_model(straight)
    assert all(torch.equal(a, b) for a, b in zip(encoder.blocks.parameters(),
                                                 (p for blk in model.blocks("dorsal") for p in blk.parameters())))
    fresh = load_model(straight)
    for p in fresh.parameters():
        p.data.zero_()
    report = load_checkpoint(fresh, straight)  # the run directory stands for its joint checkpoint
    assert report.format == "visualpath" and not report.fresh
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="streams .* not 'fast'"):
        encoder_from_run(straight, "fast")


@pytest.mark.e2e
def test_a_stored_graph_that_no_longer_loads_is_reported_not_guessed(user_graph_runs, tmp_path, capsys):
    import shutil

    straight, _ = user_graph_runs
    copy = tmp_path / "moved"
    shutil.copytree(straight, copy, symlinks=True)
    spec = json.loads((copy / "pathway.json").read_text())
    spec["streams"][0]["areas"][2]["type"] = "/nowhere/v3_sobel.py:V3Sobel"  # the area's file was moved
    (copy / "pathway.json").write_text(json.dumps(spec))
    with pytest.raises(SystemExit):
        _main(f"run_dir={copy}", "stages=test")
    assert "stores a graph that cannot be read" in capsys.readouterr().err


@pytest.mark.e2e
def test_finetuning_a_stream_the_checkpoint_lacks_fails_naming_it(user_graph_runs, tmp_path, capsys):
    straight, _ = user_graph_runs
    ventral_only = f"{straight}/ventral/model.safetensors"
    assert _main(f"run_dir={tmp_path / 'ok'}", f"pretrained={straight}/joint/model.safetensors",
                 "stages=finetune", "finetune.optim.epochs=1") == 0  # its graph is found beside it
    with pytest.raises(SystemExit) as stop:  # refused in one line before any data is prepared
        _main(f"run_dir={tmp_path / 'bad'}", f"pretrained={ventral_only}", "stages=finetune")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"error: .* holds no weights for .* tensors of the dorsal encoder", err), err
    assert not (tmp_path / "bad" / "finetune").exists()


def test_help_prints_a_list_of_shared_areas_as_it_is_typed():
    from recipes.graph import graph_help

    cfg = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], pathway_overrides=("pathway.share=V1,V2",))
    text = graph_help(cfg)
    assert "pathway.share: str = 'V1,V2'" in text and "['V1', 'V2']" not in text
