"""Encoding models: how well each area's features predict each recorded neuroid.

For one area, features ``(S, F)`` of the ``S`` stimuli are mapped to the repetition-averaged
response of every neuroid by ridge regression (scikit-learn's ``RidgeCV``: features
standardised on the training stimuli, one penalty per neuroid chosen by efficient
leave-one-out among ``ALPHAS``), cross-validated over stimuli (``folds`` shuffled folds:
every stimulus is predicted by a model that never saw it). The score of a neuroid is the
Pearson ``r`` between its held-out predictions and its responses within each fold, averaged
over folds (as Brain-Score averages over splits).

Noise ceiling (decision N2 in ``docs/decisions.md``): the repetitions are split into two
random halves ``splits`` times; the correlation over stimuli of the two halves' means,
averaged over splits and Spearman--Brown corrected (``2r / (1 + r)``), estimates the
reliability ``rho`` of the full average, the share of its variance over stimuli that is
signal. A noise-free model of the neuroid would reach ``r = sqrt(rho)``, so the
noise-corrected predictivity is ``r / sqrt(rho)`` (1 = as good as the recording allows).
Neuroids whose ``rho`` is below ``min_reliability`` are left out of corrected summaries
(counted). An area's summary is the median over neuroids with a bootstrap interval over
neuroids; the best area of a neuroid is the one with the highest ``r``, and a region is
assigned the area with the highest median corrected predictivity over its neuroids (as
Brain-Score commits a layer to a region).

A stimulus-shuffled control (the responses paired with a permutation of the stimuli) is
scored the same way, over ``permutations`` permutations (100 by default): its median ``r``
per permutation forms a null distribution, reported as its median and 95% band. A trained
area's ``r`` inside that band predicts nothing; a band away from 0 is a leak.

Whether a region's assignment is clear: the best area's corrected predictivity is compared
with the runner-up's by a paired bootstrap over the region's neuroids (the same resampled
neuroids for both): ``assignment_p`` is the share of resamples in which the runner-up's
median is at least the best's, and ``clear_assignment`` is ``assignment_p < 0.05``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from analysis.recordings import Recording

__all__ = ["ALPHAS", "readout", "split_half_reliability", "ridge_predictions", "pearson", "fold_pearson",
           "encoding_scores",
           "bootstrap_median", "paired_bootstrap_p"]

ALPHAS = np.logspace(-2, 8, 21)  # ridge penalties tried per neuroid (features standardised)


def readout(tokens: Tensor, grid: tuple[int, ...], how: str = "pooled", cells: int = 4) -> Tensor:
    """``(S, F)`` features of ``(S, N, D)`` token features laid out on ``grid``.

    ``"pooled"``: the mean over tokens (``F = D``). ``"grid"``: a spatial readout for
    retinotopic recordings: the mean over time, then over each of ``cells x cells`` regions of
    the view (``F = cells^2 D``), so a regression can weigh where in the view a neuroid's
    receptive field lies.
    """
    if tokens.ndim == 2:
        return tokens
    if how == "pooled":
        return tokens.mean(1)
    if how != "grid":
        raise ValueError(f"readout must be 'pooled' or 'grid', got {how!r}")
    S, N, D = tokens.shape
    if int(np.prod(grid)) != N:
        raise ValueError(f"{N} tokens do not fill the grid {tuple(grid)}")
    x = tokens.reshape(S, *grid, D)
    if len(grid) == 3:  # (S, t, h, w, D): mean over time
        x = x.mean(1)
    x = x.permute(0, 3, 1, 2)  # (S, D, h, w)
    x = torch.nn.functional.adaptive_avg_pool2d(x, (min(cells, x.shape[2]), min(cells, x.shape[3])))
    return x.reshape(S, -1)


def split_half_reliability(per_repetition: np.ndarray, splits: int = 100, seed: int = 0) -> np.ndarray:
    """``(N,)`` Spearman--Brown corrected split-half reliability of ``(S, N, R)`` responses;
    NaN for fewer than 2 repetitions or a neuroid constant in a half."""
    S, N, R = per_repetition.shape
    if R < 2:
        return np.full(N, np.nan)
    rng = np.random.default_rng(seed)
    total = np.zeros(N)
    for _ in range(splits):
        order = rng.permutation(R)
        a = per_repetition[:, :, order[: R // 2]].mean(2)
        b = per_repetition[:, :, order[R // 2:]].mean(2)
        total += pearson(a, b)
    r = total / splits
    return 2 * r / (1 + r)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson correlation of two ``(S, N)`` arrays (NaN where one is constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(0) / np.where(denom > 0, denom, 1), np.nan)


def ridge_predictions(features: np.ndarray, responses: np.ndarray, folds: int = 5, seed: int = 0,
                      alphas: np.ndarray = ALPHAS) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Held-out predictions ``(S, N)`` of ``responses`` from ``features`` ``(S, F)``, the
    penalty each neuroid chose in each fold ``(folds, N)``, and the folds' held-out stimuli."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    out = np.zeros_like(responses, dtype=np.float64)
    chosen, held_out = [], []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(features):
        held_out.append(test)
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=True))
        model.fit(features[train], responses[train])
        out[test] = model.predict(features[test]).reshape(len(test), -1)
        chosen.append(np.broadcast_to(model[-1].alpha_, (responses.shape[1],)))
    return out, np.stack(chosen), held_out


def fold_pearson(predicted: np.ndarray, responses: np.ndarray, held_out: list[np.ndarray]) -> np.ndarray:
    """``(N,)``: Pearson ``r`` within each held-out fold, averaged over folds. (Pooling the
    folds' predictions would correlate their fold-to-fold offsets too, which biases ``r``
    below 0 for features that carry nothing.)"""
    return np.mean([pearson(predicted[t], responses[t]) for t in held_out], axis=0)


def bootstrap_median(values: np.ndarray, boots: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` (NaNs dropped) with a 95% percentile bootstrap interval."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    medians = np.median(v[rng.integers(0, v.size, size=(boots, v.size))], axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(np.median(v)), float(lo), float(hi)


def paired_bootstrap_p(best: np.ndarray, other: np.ndarray, boots: int = 1000, seed: int = 0) -> float:
    """One-sided p that ``best``'s median over neuroids is above ``other``'s: the share of
    paired resamples of the neuroids (finite in both) where it is not, with the usual +1 in
    numerator and denominator (never exactly 0)."""
    keep = np.isfinite(best) & np.isfinite(other)
    a, b = best[keep], other[keep]
    if a.size == 0:
        return float("nan")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(boots, a.size))
    worse = np.count_nonzero(np.median(a[idx], axis=1) <= np.median(b[idx], axis=1))
    return float((worse + 1) / (boots + 1))


def _null_band(null_medians: np.ndarray) -> list[float]:
    finite = null_medians[np.isfinite(null_medians)]
    return [float(v) for v in np.percentile(finite, [2.5, 97.5])] if finite.size else [float("nan")] * 2


def encoding_scores(features: Mapping[str, np.ndarray | Tensor], recording: Recording, *, folds: int = 5,
                    seed: int = 0, splits: int = 100, boots: int = 1000, min_reliability: float = 0.1,
                    time_bins=None, control: bool = True, permutations: int = 100) -> dict:
    """Cross-validated encoding scores of every area for every neuroid of ``recording``.

    Args:
        features: ``{area: (S, F)}`` in the recording's stimulus order (see :func:`readout`).
        recording: the responses (:class:`analysis.recordings.Recording`).
        folds, seed: the cross-validation over stimuli.
        splits: random split-halves averaged for the noise ceiling.
        boots: bootstrap resamples of neuroids for the medians' intervals.
        min_reliability: neuroids less reliable than this are left out of corrected summaries.
        time_bins: the time bins averaged (default all).
        control: also score each area on stimulus-shuffled responses.
        permutations: shuffles of the stimuli for the control's null distribution.

    Returns:
        ``{"neuroids": {...per neuroid...}, "areas": {area: summary}, "regions": {region:
        {...}}}`` with plain floats and lists (JSON-ready); see the module's notes.
    """
    recording.check_folds(folds)
    S, N = recording.shape[:2]
    mean = recording.mean(time_bins)
    rho = split_half_reliability(recording.per_repetition(time_bins), splits, seed)
    reliable = np.isfinite(rho) & (rho >= min_reliability)
    sqrt_rho = np.sqrt(np.where(reliable, rho, np.nan))
    constant = mean.std(0) == 0
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ValueError(f"permutations must be an integer >= 1, got {permutations!r}")
    r_of, corrected_of, shuffled_of, areas = {}, {}, {}, {}
    rng = np.random.default_rng(seed + 1)
    shuffles = [rng.permutation(S) for _ in range(permutations)]
    shuffled_responses = np.concatenate([mean[order] for order in shuffles], axis=1)  # (S, P * N), one fit for all
    for name, x in features.items():
        x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
        x = x.reshape(x.shape[0], -1)
        if x.shape[0] != S:
            raise ValueError(f"area {name!r} has features of {x.shape[0]} stimuli for a recording of {S}")
        predicted, alphas, held_out = ridge_predictions(x, mean, folds, seed)
        r = fold_pearson(predicted, mean, held_out)
        r[constant] = np.nan
        corrected = r / sqrt_rho
        r_of[name], corrected_of[name] = r, corrected
        summary = {"median_r": _median(r)}
        med, lo, hi = bootstrap_median(corrected, boots, seed)
        summary.update(median_corrected=med, ci95=[lo, hi], features=int(x.shape[1]),
                       median_alpha=float(np.median(alphas)))
        if control:
            shuffled, _, held_out = ridge_predictions(x, shuffled_responses, folds, seed)
            null = fold_pearson(shuffled, shuffled_responses, held_out).reshape(permutations, N)
            null[:, constant] = np.nan
            shuffled_of[name] = null  # (P, N)
            medians = _medians(null)
            summary.update(shuffled_median_r=_median(medians), shuffled_band95=_null_band(medians),
                           permutations=permutations)
        areas[name] = summary
    names = list(features)
    stacked = np.stack([np.nan_to_num(r_of[a], nan=-np.inf) for a in names])  # (A, N)
    best = [names[i] if np.isfinite(stacked[i, n]) else None for n, i in enumerate(stacked.argmax(0))]
    regions = recording.regions or ["all"] * N
    by_region = {}
    for region in dict.fromkeys(regions):
        idx = np.array([g == region for g in regions])
        rows = {a: dict(zip(("median_corrected", "lo", "hi"), bootstrap_median(corrected_of[a][idx], boots, seed)))
                for a in names}
        for a in names:
            rows[a]["median_r"] = _median(r_of[a][idx])
            if control:
                medians = _medians(shuffled_of[a][:, idx])
                rows[a]["shuffled_median_r"] = _median(medians)
                rows[a]["shuffled_band95"] = _null_band(medians)
        scored = {a: v["median_corrected"] for a, v in rows.items() if np.isfinite(v["median_corrected"])}
        ranked = sorted(scored, key=scored.get, reverse=True)
        p = paired_bootstrap_p(corrected_of[ranked[0]][idx], corrected_of[ranked[1]][idx], boots, seed) \
            if len(ranked) > 1 else float("nan")
        best_here = [b for b, keep in zip(best, idx) if keep and b is not None]
        by_region[region] = {
            "neuroids": int(idx.sum()), "reliable": int((idx & reliable).sum()),
            "median_ceiling": _median(rho[idx]),
            "areas": rows, "assigned_area": ranked[0] if ranked else None,
            "runner_up": ranked[1] if len(ranked) > 1 else None, "assignment_p": p,
            "clear_assignment": bool(np.isfinite(p) and p < 0.05) if len(ranked) > 1 else bool(ranked),
            "best_area_counts": {a: best_here.count(a) for a in names},
        }
    return {
        "stimuli": S, "folds": folds, "seed": seed, "splits": splits, "min_reliability": min_reliability,
        "repetitions": recording.repetitions, "left_out_unreliable": int((~reliable).sum()),
        "constant_neuroids": int(constant.sum()),
        "neuroids": {"id": recording.neuroid_ids, "region": regions, "ceiling": _floats(rho), "best_area": best,
                     "r": {a: _floats(r_of[a]) for a in names}},
        "areas": areas, "regions": by_region,
    }


def _medians(rows: np.ndarray) -> np.ndarray:
    """The median of each row over its finite values (NaN for a row with none)."""
    out = np.full(rows.shape[0], np.nan)
    for i, row in enumerate(rows):
        if np.isfinite(row).any():
            out[i] = np.nanmedian(row)
    return out


def _median(x: np.ndarray) -> float:
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def _floats(x: np.ndarray) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float)]
