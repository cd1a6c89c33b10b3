"""``benchmarks.neural_validation`` on a tiny run: the command's numbers agree with scikit-learn,
rsatoolbox and SciPy called directly, the ceiling with the simulation; and the docs page is
what its stored measurements render to."""

import json
from pathlib import Path

import attrs
import numpy as np
import pytest

from benchmarks import neural_validation

ROOT = Path(__file__).parents[2]
pytest.importorskip("rsatoolbox")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from recipes import bimm_ucf101

    run = tmp_path_factory.mktemp("neural") / "run"
    bimm_ucf101.run(attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(run), device="cpu",
                                 stages=("ventral", "joint")))
    return run


@pytest.mark.e2e
def test_the_command_agrees_with_direct_computations_on_simulated_cells(tiny_run, tmp_path):
    result = neural_validation.measure(tiny_run, tmp_path, ["per-region"], v1=6, mt=6, repetitions=8, folds=3)
    assert result["noise_free_corrected"]["V1"] == pytest.approx(1, abs=0.1)
    assert result["noise_free_corrected"]["MT"] == pytest.approx(1, abs=0.1)
    entry = result["readouts"]["per-region"]
    assert entry["readout"] == {"V1": "grid", "MT": "pooled"}
    ind = entry["independent"]
    assert ind["ridge_max_abs_difference"] < 1e-9
    assert ind["rsa_command"] == pytest.approx(ind["rsa_rsatoolbox"], abs=1e-9)
    assert ind["rsa_command"] == pytest.approx(ind["rsa_by_hand"], abs=1e-5)  # float rounding in the distances
    assert set(entry["assignment"]) == {"V1", "MT"} and all(d is not None for d in entry["depth"].values())
    assert (tmp_path / "per-region" / "neural.png").is_file() and (tmp_path / "recording.nc").is_file()
    text = " ".join(neural_validation.findings(result))
    assert "Mann-Whitney" in text and "noise-free model" in text


def test_area_depths_follow_the_graph():
    from areas.bimm import paper_pathway

    depths = neural_validation.area_depths(paper_pathway())
    assert depths["dorsal.V1"] < depths["dorsal.V2"] < depths["dorsal.MT"] == 12


def test_the_docs_page_is_what_its_measurements_render_to():
    stored = json.loads((ROOT / "docs" / "neural_validation.json").read_text())
    assert (ROOT / "docs" / "neural_validation.md").read_text() == neural_validation.render(stored)
    for readout in stored["readouts"]:
        assert (ROOT / "docs" / f"neural_validation_{readout}.png").is_file()
    c = stored["ceiling"]
    assert abs(c["V1"]["estimated"] - c["V1"]["true"]) < 0.05 and abs(c["MT"]["estimated"] - c["MT"]["true"]) < 0.05
    assert np.isclose(stored["noise_free_corrected"]["V1"], 1, atol=0.05)
