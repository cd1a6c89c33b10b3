"""Encoding models against independent computations (scikit-learn called directly, the
closed-form reliability of simulated noise) and controls that must give nothing."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from analysis.encoding import (ALPHAS, bootstrap_median, encoding_scores, fold_pearson, readout, ridge_predictions,
                               split_half_reliability)
from analysis.recordings import Recording


def _recording(signal, noise_sd, R, seed=0, regions=None):
    rng = np.random.default_rng(seed)
    S, N = signal.shape
    responses = signal[:, :, None, None] + noise_sd * rng.standard_normal((S, N, R, 1))
    return Recording(responses, [f"s{i}" for i in range(S)], [f"n{i}" for i in range(N)], regions)


def test_the_split_half_ceiling_matches_the_known_reliability():
    """Signal variance 1, noise variance sd^2 per repetition: the R-average's reliability is
    1 / (1 + sd^2 / R), which the Spearman-Brown corrected split-half estimate recovers."""
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((400, 30))
    for sd, R in ((1.0, 4), (2.0, 6), (3.0, 10)):
        rec = _recording(signal, sd, R, seed=R)
        estimated = split_half_reliability(rec.per_repetition(), splits=50)
        truth = 1 / (1 + sd ** 2 / R)
        assert abs(np.median(estimated) - truth) < 0.03, (sd, R, np.median(estimated), truth)


def test_ridge_scores_agree_with_scikit_learn_called_directly():
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 20))
    y = x[:, :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((60, 4))
    ours, _, held_out = ridge_predictions(x, y, folds=5, seed=3)
    folds = KFold(5, shuffle=True, random_state=3)
    theirs = cross_val_predict(make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, alpha_per_target=True)), x, y,
                               cv=folds)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    r = fold_pearson(ours, y, held_out)
    direct = [np.mean([pearsonr(theirs[t, n], y[t, n])[0] for _, t in folds.split(x)]) for n in range(4)]
    np.testing.assert_allclose(r, direct, atol=1e-10)


def test_a_noise_free_model_scores_one_after_noise_correction():
    """The true signal as the prediction: r / sqrt(ceiling) ~ 1 (the correction is right), and
    the same signal as features through ridge comes close."""
    rng = np.random.default_rng(2)
    signal = rng.standard_normal((300, 20))
    rec = _recording(signal, 2.0, 6)
    rho = split_half_reliability(rec.per_repetition())
    corrected = [pearsonr(signal[:, n], rec.mean()[:, n])[0] / np.sqrt(rho[n]) for n in range(20)]
    assert abs(np.median(corrected) - 1) < 0.03
    scores = encoding_scores({"truth": signal}, rec, boots=200)
    assert 0.9 < scores["areas"]["truth"]["median_corrected"] < 1.05


def test_features_that_carry_nothing_and_the_shuffled_control_score_near_zero():
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((200, 15))
    rec = _recording(signal, 1.0, 4)
    scores = encoding_scores({"noise": rng.standard_normal((200, 50)), "truth": signal}, rec, boots=200)
    assert abs(scores["areas"]["noise"]["median_r"]) < 0.06
    assert abs(scores["areas"]["truth"]["shuffled_median_r"]) < 0.06
    assert scores["areas"]["truth"]["median_r"] > 0.8


def test_each_region_is_assigned_the_area_that_carries_its_signal():
    rng = np.random.default_rng(4)
    early, late = rng.standard_normal((150, 10)), rng.standard_normal((150, 10))
    rec = _recording(np.concatenate([early, late], 1), 1.0, 4, regions=["V1"] * 10 + ["MT"] * 10)
    mix = 0.3 * rng.standard_normal((150, 10))
    scores = encoding_scores({"A": early + mix, "B": late + mix}, rec, boots=200)
    assert scores["regions"]["V1"]["assigned_area"] == "A" and scores["regions"]["MT"]["assigned_area"] == "B"
    assert scores["regions"]["V1"]["best_area_counts"] == {"A": 10, "B": 0}
    assert scores["neuroids"]["best_area"] == ["A"] * 10 + ["B"] * 10
    v1 = scores["regions"]["V1"]["areas"]["A"]
    assert v1["lo"] <= v1["median_corrected"] <= v1["hi"]


def test_unreliable_and_constant_neuroids_are_counted_not_scored():
    rng = np.random.default_rng(5)
    signal = np.concatenate([rng.standard_normal((100, 5)), np.zeros((100, 2))], 1)
    rec = _recording(signal, 1.0, 4)
    rec.responses[:, 6] = 3.0  # one neuroid never varies
    scores = encoding_scores({"truth": signal}, rec, boots=100)
    assert scores["constant_neuroids"] == 1 and scores["left_out_unreliable"] == 2
    assert scores["neuroids"]["r"]["truth"][6] is None


def test_bootstrap_interval_and_readouts():
    lo_med_hi = bootstrap_median(np.arange(101.0), boots=500)
    assert lo_med_hi[0] == 50 and lo_med_hi[1] < 50 < lo_med_hi[2]
    import torch

    tokens = torch.arange(2 * 2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 32, 3)  # (S, t*h*w, D)
    assert readout(tokens, (2, 4, 4), "pooled").shape == (2, 3)
    grid = readout(tokens, (2, 4, 4), "grid", cells=2)
    assert grid.shape == (2, 12)
    x = tokens.reshape(2, 2, 4, 4, 3).mean(1)  # mean over time, then top-left 2x2 cell of channel 0
    assert torch.isclose(grid[0, 0], x[0, :2, :2, 0].mean())
    with pytest.raises(ValueError, match="do not fill the grid"):
        readout(tokens, (3, 4, 4), "grid")


def test_the_shuffled_control_is_a_permutation_null_with_a_band_and_assignments_are_tested():
    rng = np.random.default_rng(6)
    early, late = rng.standard_normal((120, 8)), rng.standard_normal((120, 8))
    rec = _recording(np.concatenate([early, late], 1), 1.0, 4, regions=["V1"] * 8 + ["MT"] * 8)
    twin = early + 0.01 * rng.standard_normal((120, 8))  # as good as A for V1: no clear winner there
    scores = encoding_scores({"A": early, "twin": twin, "B": late}, rec, boots=300, permutations=100)
    truth = scores["areas"]["A"]
    lo, hi = truth["shuffled_band95"]
    assert truth["permutations"] == 100 and lo < 0 < hi and hi - lo < 0.3  # a band around 0, not one draw
    assert lo <= truth["shuffled_median_r"] <= hi and truth["median_r"] > hi
    v1, mt = scores["regions"]["V1"], scores["regions"]["MT"]
    assert {v1["assigned_area"], v1["runner_up"]} == {"A", "twin"} and not v1["clear_assignment"]
    assert v1["assignment_p"] > 0.05
    assert mt["assigned_area"] == "B" and mt["clear_assignment"] and mt["assignment_p"] < 0.05


def test_paired_bootstrap_p_is_small_for_a_clear_winner_and_large_for_a_tie():
    from analysis.encoding import paired_bootstrap_p

    rng = np.random.default_rng(7)
    base = rng.uniform(0.2, 0.8, 60)
    assert paired_bootstrap_p(base + 0.2, base, boots=500) < 0.01
    assert paired_bootstrap_p(base, base + 0.2, boots=500) > 0.99
    assert paired_bootstrap_p(base, base.copy(), boots=500) == 1.0  # a tie is never a win
