"""The step benchmark runs end to end at toy size and reports every ratio (no timing asserted)."""

import pytest

pytest.importorskip("transformers")


@pytest.mark.e2e
def test_step_benchmark_runs_and_reports_ratios(capsys):
    from benchmarks.step import main

    result = main(["--size", "tiny", "--frames", "4", "--res", "64", "--batch", "2", "--repeats", "1",
                   "--warmup", "0", "--no-memory", "--device", "cpu", "--decoder-keep", "0.5"])
    assert set(result["rows"]) == {"hf-videomae", "ours-videomae", "ours-bimm", "target V1", "target V2",
                                   "target V4", "target MT"}
    assert all(r["median_s"] > 0 for r in result["rows"].values())
    assert any(k.startswith("targets / ours-bimm") for k in result["ratios"])
    assert "hf / ours-videomae" in capsys.readouterr().out


@pytest.mark.e2e
def test_the_step_benchmark_times_a_user_graph_and_its_own_targets():
    from pathlib import Path

    from benchmarks.step import main

    graph = Path(__file__).parents[1] / "fixtures" / "v3_sobel.py"
    result = main(["--size", "tiny", "--frames", "4", "--res", "64", "--batch", "2", "--repeats", "1",
                   "--warmup", "0", "--no-memory", "--device", "cpu", "--pathway", f"{graph}:build"])
    assert {"target V1", "target V2", "target V3", "target V4", "target MT"} <= set(result["rows"])
    assert result["rows"]["ours-bimm"]["median_s"] > 0


def test_the_step_benchmark_prices_a_feedback_link():
    import argparse

    from benchmarks.step import _setup, feedback_graph, main

    args = ["--size", "tiny", "--frames", "4", "--res", "64", "--batch", "2", "--repeats", "1", "--warmup", "0",
            "--no-memory", "--device", "cpu", "--feedback", "MT>V1"]
    result = main(args)
    assert result["rows"]["ours-bimm+feedback"]["median_s"] > 0
    assert any(k.startswith("ours-bimm+feedback (MT>V1) / ours-bimm") for k in result["ratios"])
    s = _setup(argparse.Namespace(size="tiny", frames=4, res=64, batch=2, device="cpu", compile=False,
                                  checkpointing=False, decoder_keep=1.0, pathway=None, feedback="MT>V1"))
    graph = feedback_graph(s)
    assert [len(st.feedback) for st in graph.streams] == [0, 1]  # only the dorsal stream has MT
