"""Representational similarity between areas and neural recordings, with rsatoolbox.

The recording gives one data RDM per repetition (the ``S`` stimuli's response patterns over
the region's neuroids in that repetition; a recording without repetitions gives one), each
area one model RDM of its features; dissimilarities are ``rdm_method`` (rsatoolbox's
``calc_rdm``: ``"correlation"`` by default) and RDMs are compared by ``method`` (rsatoolbox's
``compare``: ``"spearman"`` by default, ``"corr"``, ``"cosine"``, ``"corr_cov"`` /
``"cosine_cov"`` for the whitened ones, ``"rho-a"``, ``"tau-a"`` ...). The evaluation is
rsatoolbox's ``eval_fixed``: each area's mean similarity over the data RDMs with its
standard error, and the noise ceiling from the data RDMs (a repetition whose RDM is undefined,
as a correlation distance is for a pattern without spikes, is left out and counted) (lower: each against the others'
mean; upper: each against all of them). Everything is saved in rsatoolbox's own HDF5 files
(``rsatoolbox.rdm.load_rdm``, ``rsatoolbox.inference.load_results`` read them back).

Model-to-model comparisons (CKA, RSA between areas) stay in :mod:`analysis.similarity`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from analysis.recordings import Recording

__all__ = ["METHODS", "data_rdms", "model_rdms", "compare_areas", "save_rdms"]

METHODS = ("spearman", "corr", "cosine", "corr_cov", "cosine_cov", "rho-a", "tau-a", "kendall")


def _dataset(patterns: np.ndarray, stimulus_ids, name: str):
    from rsatoolbox.data import Dataset

    return Dataset(patterns, descriptors={"name": name}, obs_descriptors={"stimulus": list(stimulus_ids)})


def data_rdms(recording: Recording, neuroids: np.ndarray | None = None, rdm_method: str = "correlation",
              time_bins=None):
    """rsatoolbox ``RDMs``: one per repetition of the recording (of the chosen neuroids),
    leaving out a repetition whose RDM is undefined somewhere (a correlation distance of a
    pattern that does not vary over neuroids, e.g. no spikes at all); None if every one is."""
    import warnings

    from rsatoolbox.rdm import calc_rdm, concat

    per_rep = recording.per_repetition(time_bins)  # (S, N, R)
    if neuroids is not None:
        per_rep = per_rep[:, neuroids]
    if per_rep.shape[1] < 2:
        raise ValueError(f"an RDM needs at least 2 neuroids, got {per_rep.shape[1]}")
    rdms, kept = [], []
    for r in range(per_rep.shape[2]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a constant pattern's correlation: NaN, left out below
            rdm = calc_rdm(_dataset(per_rep[:, :, r], recording.stimulus_ids, f"repetition {r}"), method=rdm_method,
                           descriptor="stimulus")
        if np.isfinite(rdm.dissimilarities).all():
            rdms.append(rdm)
            kept.append(r)
    if not rdms:
        return None
    out = concat(rdms) if len(rdms) > 1 else rdms[0]
    out.rdm_descriptors["repetition"] = kept
    return out


def model_rdms(features: Mapping[str, np.ndarray], stimulus_ids, rdm_method: str = "correlation"):
    """``{area: RDMs}``: one model RDM per area of ``(S, F)`` features."""
    from rsatoolbox.rdm import calc_rdm

    return {name: calc_rdm(_dataset(np.asarray(x, dtype=np.float64).reshape(len(stimulus_ids), -1), stimulus_ids,
                                    name), method=rdm_method, descriptor="stimulus")
            for name, x in features.items()}


def compare_areas(features: Mapping[str, np.ndarray], recording: Recording, method: str = "spearman",
                  rdm_method: str = "correlation", time_bins=None, out_dir: str | Path | None = None) -> dict:
    """Each area's RDM against the recording's, per region (all neuroids when the recording
    names no regions).

    Returns ``{region: {"areas": {area: {"mean", "sem"}}, "noise_ceiling": [lower, upper],
    "data_rdms": R, "best_area"}}``; with ``out_dir``, rsatoolbox's files ``rdms_model.hdf5``,
    ``rdms_<region>.hdf5`` and ``rsa_<region>.hdf5`` are written there.
    """
    from rsatoolbox.inference import eval_fixed
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import compare

    if method not in METHODS:
        raise ValueError(f"unknown RDM comparison {method!r}; one of {', '.join(METHODS)}")
    models = model_rdms(features, recording.stimulus_ids, rdm_method)
    fixed = [ModelFixed(name, rdm) for name, rdm in models.items()]
    regions = recording.regions or ["all"] * recording.shape[1]
    out: dict = {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_rdms(models, out_dir / "rdms_model.hdf5")
    for region in dict.fromkeys(regions):
        idx = np.array([g == region for g in regions])
        data = data_rdms(recording, idx, rdm_method, time_bins)
        left_out = recording.repetitions - (data.n_rdm if data is not None else 0)
        if data is None:
            out[region] = {"areas": {m.name: {"mean": float("nan"), "sem": None} for m in fixed},
                           "noise_ceiling": [float("nan"), float("nan")], "data_rdms": 0, "left_out_rdms": left_out,
                           "neuroids": int(idx.sum()), "best_area": None}
            continue
        if data.n_rdm > 1:
            result = eval_fixed(fixed, data, method=method)
            means, sems = result.get_means(), result.get_sem()
            ceiling = [float(v) for v in result.noise_ceiling]
            if out_dir is not None:
                result.save(str(out_dir / f"rsa_{_safe(region)}.hdf5"), overwrite=True)
        else:  # one data RDM: no spread, no ceiling
            means = np.array([float(np.mean(compare(m.rdm_obj, data, method))) for m in fixed])
            sems, ceiling = np.full(len(fixed), np.nan), [float("nan"), float("nan")]
        if out_dir is not None:
            data.save(str(out_dir / f"rdms_{_safe(region)}.hdf5"), overwrite=True)
        areas = {m.name: {"mean": float(v), "sem": float(s) if np.isfinite(s) else None}
                 for m, v, s in zip(fixed, means, sems)}
        out[region] = {"areas": areas, "noise_ceiling": ceiling, "data_rdms": int(data.n_rdm),
                       "left_out_rdms": left_out, "neuroids": int(idx.sum()),
                       "best_area": max(areas, key=lambda a: areas[a]["mean"])}
    return {"method": method, "rdm_method": rdm_method, "regions": out}


def save_rdms(rdms: Mapping[str, object], path: Path) -> Path:
    """Several RDMs objects in one rsatoolbox file, named by their ``name`` descriptor."""
    from rsatoolbox.rdm import concat

    joined = concat(list(rdms.values()))
    joined.rdm_descriptors["name"] = list(rdms)
    joined.save(str(path), overwrite=True)
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)) or "region"
