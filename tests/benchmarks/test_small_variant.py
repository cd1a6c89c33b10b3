"""``benchmarks.small_variant`` says in words what its table shows, computed from the table."""

from benchmarks import small_variant


def _result(left: dict, probes: dict) -> dict:
    runs = []
    for seed in (0, 1):
        rows = [{"stream": "dorsal", "area": a, "target_left": left[a][seed], "target_left_neighbours": 0.5,
                 "probe_top1": probes[a][seed][0], "random_init_probe_top1": probes[a][seed][1]} for a in left]
        runs.append({"seed": seed, "seconds": 120.0 + seed, "analysis_seconds": 80.0, "top1": 0.2, "chance": 0.1,
                     "rows": rows})
    return {"command": "python -m benchmarks.small_variant --seeds 0 1", "graph": "g", "machine": "m", "runs": runs}


def test_findings_name_the_areas_that_learn_and_the_probes_that_beat_random_weights():
    result = _result({"V1": (1.01, 1.0), "MT": (0.9, 0.95), "V2": (0.9, 1.0)},
                     {"V1": ((0.3, 0.4), (0.3, 0.4)), "MT": ((0.5, 0.4), (0.6, 0.4)), "V2": ((0.5, 0.4), (0.3, 0.4))})
    text = small_variant.findings(result)
    assert "2 seeds: dorsal MT (0.95 at most);" in text  # V2 learned on one seed only: not named
    assert "random weights on every seed: dorsal MT; at or below it on every seed: dorsal V1." in text
    assert "the target fit is the measure" not in text  # a probe beats random weights: no such caveat
    table = small_variant.render(result)
    assert "| dorsal | MT | 0.93 ± 0.02 | 0.50 ± 0.00 | 55.0 ± 5.0 | 40.0 ± 0.0 |" in table and text in table


def test_when_only_the_targets_show_learning_the_findings_say_so():
    result = _result({"MT": (0.9, 0.9)}, {"MT": ((0.3, 0.4), (0.3, 0.4))})
    assert "the target fit is the measure" in small_variant.findings(result)
