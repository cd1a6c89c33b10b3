"""RSA against neural RDMs: rsatoolbox's numbers, checked against a hand computation with
SciPy, and its files readable by rsatoolbox."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

rsatoolbox = pytest.importorskip("rsatoolbox")

from analysis.neural_rsa import compare_areas, data_rdms  # noqa: E402
from analysis.recordings import Recording  # noqa: E402


@pytest.fixture
def recording():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((20, 3))
    signal = latent @ rng.standard_normal((3, 12))
    responses = signal[:, :, None, None] + 0.8 * rng.standard_normal((20, 12, 4, 1))
    return Recording(responses, [f"s{i}" for i in range(20)], [f"n{i}" for i in range(12)], ["V1"] * 6 + ["MT"] * 6), \
        latent


def test_rsa_matches_spearman_of_correlation_distances_computed_by_hand(recording, tmp_path):
    rec, latent = recording
    rng = np.random.default_rng(1)
    features = {"latent": latent @ rng.standard_normal((3, 8)), "noise": rng.standard_normal((20, 8))}
    result = compare_areas(features, rec, method="spearman", out_dir=tmp_path)
    for region, cols in (("V1", slice(0, 6)), ("MT", slice(6, 12))):
        for name, x in features.items():
            model = pdist(x, "correlation")
            per_rep = [spearmanr(model, pdist(rec.responses[:, cols, r, 0], "correlation"))[0] for r in range(4)]
            assert result["regions"][region]["areas"][name]["mean"] == pytest.approx(np.mean(per_rep), abs=1e-10)
        low, high = result["regions"][region]["noise_ceiling"]
        assert low <= high and result["regions"][region]["data_rdms"] == 4
        assert result["regions"][region]["best_area"] == "latent"


def test_the_noise_ceiling_is_rsatoolbox_s_own(recording):
    from rsatoolbox.inference import boot_noise_ceiling

    rec, latent = recording
    result = compare_areas({"latent": latent}, rec, method="corr")
    expected = boot_noise_ceiling(data_rdms(rec, np.arange(12) < 6), method="corr")
    assert result["regions"]["V1"]["noise_ceiling"] == pytest.approx(list(expected))


def test_saved_rdms_and_results_load_back_in_rsatoolbox(recording, tmp_path):
    rec, latent = recording
    compare_areas({"latent": latent, "other": latent[:, ::-1] ** 2}, rec, out_dir=tmp_path)
    models = rsatoolbox.rdm.load_rdm(str(tmp_path / "rdms_model.hdf5"))
    assert list(models.rdm_descriptors["name"]) == ["latent", "other"] and models.n_cond == 20
    data = rsatoolbox.rdm.load_rdm(str(tmp_path / "rdms_MT.hdf5"))
    assert data.n_rdm == 4
    result = rsatoolbox.inference.load_results(str(tmp_path / "rsa_V1.hdf5"))
    assert result.evaluations.shape == (1, 2, 4)


def test_one_repetition_gives_a_score_without_a_ceiling(recording):
    rec, latent = recording
    single = Recording(rec.responses[:, :, :1], rec.stimulus_ids, rec.neuroid_ids)
    result = compare_areas({"latent": latent}, single)["regions"]["all"]
    assert result["data_rdms"] == 1 and np.isnan(result["noise_ceiling"]).all()
    assert result["areas"]["latent"]["sem"] is None


def test_an_unknown_comparison_is_refused(recording):
    with pytest.raises(ValueError, match="unknown RDM comparison 'pearson'"):
        compare_areas({"a": recording[1]}, recording[0], method="pearson")


def test_a_repetition_without_spikes_for_a_stimulus_is_left_out_and_counted(recording):
    """A correlation distance is undefined for a pattern that does not vary over neuroids."""
    rec, latent = recording
    rec.responses[3, :, 1] = 0.0  # stimulus 3, repetition 1: no neuroid fired
    result = compare_areas({"latent": latent}, rec)["regions"]["V1"]
    assert result["data_rdms"] == 3 and result["left_out_rdms"] == 1 and np.isfinite(result["areas"]["latent"]["mean"])
    rec.responses[3] = 0.0  # in every repetition: no RDM left
    result = compare_areas({"latent": latent}, rec)["regions"]["V1"]
    assert result["data_rdms"] == 0 and result["best_area"] is None


@pytest.mark.parametrize("method", ["corr_cov", "cosine_cov", "rho-a", "corr"])
def test_whitened_and_rank_comparisons_rank_the_true_geometry_first(recording, method):
    rec, latent = recording
    result = compare_areas({"latent": latent, "noise": np.random.default_rng(2).standard_normal((20, 5))}, rec,
                           method=method)["regions"]["V1"]
    assert result["best_area"] == "latent" and result["noise_ceiling"][0] <= result["noise_ceiling"][1]
