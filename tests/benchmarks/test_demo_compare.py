"""benchmarks.demo_compare: summaries over seeds and the tables written from them."""

import pytest

from benchmarks import demo_compare


def _seed(top1, probe, fit):
    pretrained = {"fit": {"joint": {"dorsal": {"MT": fit}}},
                  "probes": {"dorsal.V1": {"probe": probe / 2, "knn": 0.2, "random_probe": 0.1, "dsi": 0.05, "osi": 0.3},
                             "dorsal.MT": {"probe": probe, "knn": 0.3, "random_probe": 0.12, "dsi": 0.1, "osi": 0.2}}}
    return {"bimm": {"top1": top1, "wall_s": 600.0, "peak_rss_mib": 1500.0 + 100 * top1, "peak_tree_mib": 2000.0,
                     "chance": 0.1, **pretrained},
            "videomae": {"top1": top1 - 0.1, "wall_s": 420.0, "chance": 0.1, **pretrained},
            "scratch": {"top1": top1 - 0.2, "wall_s": 300.0, "chance": 0.1}}


def test_summary_means_and_spreads():
    per_seed = {"0": _seed(0.6, 0.4, 0.7), "1": _seed(0.7, 0.5, 0.8), "2": _seed(0.8, 0.3, 0.75)}
    s = demo_compare.summarise(per_seed)
    assert s["seeds"] == [0, 1, 2]
    assert s["top1"]["bimm"]["mean"] == pytest.approx(0.7)
    assert s["top1"]["bimm"]["spread"] == pytest.approx(0.2)
    assert s["top1"]["scratch"]["values"] == pytest.approx([0.4, 0.5, 0.6])
    assert s["fit"]["bimm"]["joint"]["dorsal"]["MT"]["mean"] == pytest.approx(0.75)
    assert s["probes"]["videomae"]["dorsal.MT"]["probe"]["spread"] == pytest.approx(0.2)


def test_tables_show_every_seed():
    per_seed = {"0": _seed(0.6, 0.4, 0.7), "1": _seed(0.7, 0.5, 0.8)}
    s = demo_compare.summarise(per_seed)
    block = demo_compare.readme_block(s)
    assert "65.0 ± 5.0 (60.0 / 70.0)" in block  # BIMM top-1: mean ± half range (each seed)
    assert "45.0 ± 5.0 (40.0 / 50.0) (MT)" in block  # the last dorsal area's probe
    assert "| 12.0 (random weights, 1 draw) |" in block  # the no-pretraining row: one draw, recorded before draws

    assert "| 1565 / 2000 MiB |" in block  # BIMM's peak memory, mean over seeds: one process / the tree
    assert block.count("| – |") == 2  # runs measured without memory figures say so
    table = demo_compare.render(s, {"command": "python -m benchmarks.demo_compare", "machine": "x", "date": "d"})
    assert "| bimm | joint | dorsal | MT | 0.75 (0.70 / 0.80) | – |" in table
    s["neighbour_fit"] = {"bimm": {"dorsal": {"MT": 0.981}}}  # the reference column, once per graph
    table = demo_compare.render(s, {"command": "python -m benchmarks.demo_compare", "machine": "x", "date": "d"})
    assert "| bimm | joint | dorsal | MT | 0.75 (0.70 / 0.80) | 0.98 |" in table
    assert "| videomae | joint | dorsal | MT | 0.75 (0.70 / 0.80) | – |" in table
    assert table.count("\n| videomae | dorsal.") == 2
    assert "| bimm | dorsal.MT | 45.0 ± 5.0 (40.0 / 50.0) | 30.0 ± 0.0 (30.0 / 30.0) | 12.0 (1 draw) | – |" in table


def test_references_are_the_mean_and_sd_over_their_draws_printed_once():
    """The references do not depend on the run's seed: their draws' spread is printed, not a
    '± 0.0' over seeds."""
    per_seed = {"0": _seed(0.6, 0.4, 0.7), "1": _seed(0.7, 0.5, 0.8)}
    for seed in per_seed.values():
        for kind in ("bimm", "videomae"):
            seed[kind]["probes"]["dorsal.MT"].update(random_draws=[0.40, 0.44, 0.48], start_draws=[0.5, 0.55, 0.6])
    s = demo_compare.summarise(per_seed)
    assert "| 44.0 ± 4.0 (random weights, 3 draws) |" in demo_compare.readme_block(s)
    table = demo_compare.render(s, {"command": "python -m benchmarks.demo_compare", "machine": "x", "date": "d"})
    assert "| bimm | dorsal.MT | 45.0 ± 5.0 (40.0 / 50.0) | 30.0 ± 0.0 (30.0 / 30.0) | 44.0 ± 4.0 (3 draws) | " \
           "55.0 ± 5.0 (3 draws) |" in table


def test_the_tables_are_written_again_from_a_stored_measurement(tmp_path, capsys):
    import json
    from pathlib import Path

    stored = Path(demo_compare.__file__).resolve().parents[1] / "docs" / "demo_results.json"
    assert demo_compare.main(["--from-json", str(stored)]) == 0
    summary, meta = (json.loads(stored.read_text())[k] for k in ("summary", "meta"))
    assert capsys.readouterr().out.strip() == demo_compare.render(summary, meta).strip()


def test_readme_block_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{demo_compare.README_START}\nold\n{demo_compare.README_END}\nrest\n")
    demo_compare.update_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{demo_compare.README_START}\nnew table\n{demo_compare.README_END}\nrest\n"
    readme.write_text("no block\n")
    with pytest.raises(SystemExit, match="demo-results"):
        demo_compare.update_readme(readme, "x")


def test_the_readme_shows_the_measured_table():
    """The README's results block is the one the script wrote from docs/demo_results.json."""
    import json
    from pathlib import Path

    root = Path(demo_compare.__file__).resolve().parents[1]
    stored = json.loads((root / "docs" / "demo_results.json").read_text())
    block = demo_compare.readme_block(stored["summary"], stored["meta"].get("note"))
    text = (root / "README.md").read_text()
    assert f"{demo_compare.README_START}\n{block}\n{demo_compare.README_END}" in text
    for name in ("demo_reconstruction.png", "demo_reconstruction_ventral.png"):
        assert (root / "docs" / name).stat().st_size > 10_000


@pytest.mark.slow
def test_the_comparison_runs_end_to_end_at_tiny_scale(tmp_path):
    """Every run as the user's command, the measurements and the tables, at the tiny variant."""
    import json

    out = tmp_path / "compare"
    assert demo_compare.main(["--seeds", "0", "--variant", "tiny", "--out", str(out)]) == 0
    state = json.loads((out / "compare.json").read_text())
    seed = state["per_seed"]["0"]
    assert set(seed) == {"bimm", "videomae", "scratch"}
    for run in seed.values():  # each command's peak memory, one process's and its process tree's
        assert 100 < run["peak_rss_mib"] < 16_000 and 100 < run["peak_tree_mib"] < 16_000
    assert set(seed["bimm"]["fit"]) == {"ventral", "joint"} and set(seed["videomae"]["fit"]) == {"joint"}
    reference = state["neighbour_fit"]
    assert set(reference["bimm"]) == {"ventral", "dorsal"} and set(reference["videomae"]["dorsal"]) == {"V4"}
    assert all(0 <= v <= 1.5 for s in reference.values() for areas in s.values() for v in areas.values())
    table = (out / "compare.md").read_text()
    assert "8 neighbours' targets" in table and "| bimm | joint | dorsal | MT |" in table
    # a second call measures nothing again
    before = (out / "bimm-s0.log").stat().st_mtime
    assert demo_compare.main(["--seeds", "0", "--variant", "tiny", "--out", str(out)]) == 0
    assert (out / "bimm-s0.log").stat().st_mtime == before
