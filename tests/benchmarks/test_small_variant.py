"""``benchmarks.small_variant`` says in words what its table shows, computed from the table."""

from benchmarks import small_variant

RANDOM, START = [0.38, 0.40, 0.42], [0.45, 0.47, 0.49]


def _result(left: dict, probes: dict, draws: bool = True) -> dict:
    runs = []
    for seed in (0, 1):
        rows = [{"stream": "dorsal", "area": a, "target_left": left[a][seed], "target_left_neighbours": 0.5,
                 "probe_top1": probes[a][seed], "random_init_probe_top1": sum(RANDOM) / 3,
                 **({"random_init_probe_draws": RANDOM, "untrained_start_probe_draws": START} if draws else {})}
                for a in left]
        runs.append({"seed": seed, "seconds": 120.0 + seed, "analysis_seconds": 80.0, "top1": 0.2, "chance": 0.1,
                     "rows": rows})
    return {"command": "python -m benchmarks.small_variant --seeds 0 1", "graph": "g", "machine": "m", "runs": runs}


def test_findings_name_the_areas_that_learn_and_the_probes_above_every_draw_of_both_references():
    result = _result({"V1": (1.01, 1.0), "MT": (0.9, 0.95), "V2": (0.9, 1.0), "V3": (1.0, 1.0)},
                     {"V1": (0.3, 0.3), "MT": (0.5, 0.6), "V2": (0.5, 0.3), "V3": (0.48, 0.48)})
    text = small_variant.findings(result)
    assert "2 seeds: dorsal MT (0.95 at most);" in text  # V2 learned on one seed only: not named
    # V3 beats every random draw but not the untrained start's best draw: not above
    assert "both references on every seed: dorsal MT; at or below every draw on every seed: dorsal V1." in text
    assert "the target fit is the measure" not in text  # a probe beats both references: no such caveat
    table = small_variant.render(result)
    assert "| dorsal | MT | 0.93 ± 0.02 | 0.50 ± 0.00 | 55.0 ± 5.0 | 40.0 ± 2.0 | 47.0 ± 2.0 |" in table
    assert "mean ± sd over 3 draws" in table and text in table


def test_a_measurement_written_before_the_draws_were_recorded_says_it_has_one():
    table = small_variant.render(_result({"MT": (0.9, 0.9)}, {"MT": (0.5, 0.6)}, draws=False))
    assert "| dorsal | MT | 0.90 ± 0.00 | 0.50 ± 0.00 | 55.0 ± 5.0 | 40.0 | – |" in table
    assert "1 draw (recorded before the draws were)" in table


def test_when_only_the_targets_show_learning_the_findings_say_so():
    result = _result({"MT": (0.9, 0.9)}, {"MT": (0.3, 0.4)})
    assert "the target fit is the measure" in small_variant.findings(result)
