"""Neural recordings read from the field's formats, and every bad input refused in one line."""

import numpy as np
import pytest

from analysis.recordings import Recording, read_recording

xarray = pytest.importorskip("xarray")
h5py = pytest.importorskip("h5py")


def _counts(S=12, N=5, R=4, T=2, seed=0):
    return np.random.default_rng(seed).poisson(3.0, size=(S, N, R, T)).astype(float)


def test_npy_axes_follow_its_number_of_dimensions(tmp_path):
    r = _counts()
    for ndim, array in ((2, r[:, :, 0, 0]), (3, r[:, :, :, 0]), (4, r)):
        np.save(tmp_path / f"r{ndim}.npy", array)
        rec = read_recording(tmp_path / f"r{ndim}.npy")
        assert rec.shape == (12, 5, r.shape[2] if ndim > 2 else 1, 2 if ndim == 4 else 1)
        assert rec.stimulus_ids == [str(i) for i in range(12)] and not rec.meta["stimulus_ids_given"]
    np.testing.assert_array_equal(read_recording(tmp_path / "r4.npy").responses, r)


def test_npz_with_named_axes_in_any_order(tmp_path):
    r = _counts()
    names = [f"img{i}.png" for i in range(12)]
    np.savez(tmp_path / "r.npz", responses=r.transpose(1, 3, 0, 2),
             dims=np.array(["neuroid", "time", "stimulus", "trial"]),
             stimulus_id=np.array(names), neuroid_id=np.array([f"n{i}" for i in range(5)]),
             region=np.array(["V1", "V1", "MT", "MT", "MT"]))
    rec = read_recording(tmp_path / "r.npz")
    np.testing.assert_array_equal(rec.responses, r)
    assert rec.stimulus_ids == names and rec.regions == ["V1", "V1", "MT", "MT", "MT"] and rec.meta["stimulus_ids_given"]


def test_hdf5_and_our_writers_round_trip(tmp_path):
    rec = Recording(_counts(), [f"s{i}" for i in range(12)], [f"n{i}" for i in range(5)], ["V1"] * 2 + ["MT"] * 3)
    for suffix in (".npz", ".h5", ".nc"):
        back = read_recording(rec.save(tmp_path / f"r{suffix}"))
        np.testing.assert_array_equal(back.responses, rec.responses)
        assert (back.stimulus_ids, back.neuroid_ids, back.regions) == (rec.stimulus_ids, rec.neuroid_ids, rec.regions)


def test_a_brain_score_style_assembly_groups_presentations_into_repetitions(tmp_path):
    """Brain-Score's NeuroidAssembly layout: presentations (one per repetition of a stimulus,
    shuffled, a ``repetition`` coordinate), neuroids with ``neuroid_id`` and ``region``, time bins."""
    r = _counts(S=6, N=3, R=3, T=2)
    order = np.random.default_rng(1).permutation(18)
    stim = np.repeat([f"im{i}" for i in range(6)], 3)[order]
    rep = np.tile(np.arange(3), 6)[order]
    values = r.transpose(0, 2, 1, 3).reshape(18, 3, 2)[order]
    da = xarray.DataArray(values, dims=("presentation", "neuroid", "time_bin"),
                          coords={"stimulus_id": ("presentation", stim), "repetition": ("presentation", rep),
                                  "neuroid_id": ("neuroid", ["a", "b", "c"]), "region": ("neuroid", ["IT"] * 3),
                                  "time_bin_start": ("time_bin", [70, 120])})
    da.to_netcdf(tmp_path / "assembly.nc", engine="h5netcdf")
    rec = read_recording(tmp_path / "assembly.nc")
    assert rec.shape == (6, 3, 3, 2) and rec.regions == ["IT"] * 3
    for s, sid in enumerate(rec.stimulus_ids):
        np.testing.assert_array_equal(rec.responses[s], r[int(sid[2:])])


@pytest.mark.parametrize("make, message", [
    (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 7, np.nan, r), "1 NaN or infinite values"),
    (lambda r: r[:, :, :, :, None], "without named axes"),
])
def test_bad_arrays_are_refused_naming_the_problem(tmp_path, make, message):
    np.save(tmp_path / "bad.npy", make(_counts()))
    with pytest.raises(ValueError, match=message) as err:
        read_recording(tmp_path / "bad.npy")
    assert "\n" not in str(err.value) and "bad.npy" in str(err.value)


def test_mismatched_counts_unequal_repetitions_and_unknown_axes_are_refused(tmp_path):
    r = _counts()
    np.savez(tmp_path / "ids.npz", responses=r, stimulus_id=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2 stimulus_id values for 12 stimulus"):
        read_recording(tmp_path / "ids.npz")
    np.savez(tmp_path / "regions.npz", responses=r, region=np.array(["V1"] * 4))
    with pytest.raises(ValueError, match="4 region values for 5 neuroids"):
        read_recording(tmp_path / "regions.npz")
    np.savez(tmp_path / "axes.npz", responses=r, dims=np.array(["stimulus", "neuroid", "session", "time"]))
    with pytest.raises(ValueError, match="unknown axis 'session'"):
        read_recording(tmp_path / "axes.npz")
    np.savez(tmp_path / "none.npz", data=r)
    with pytest.raises(ValueError, match="no array named 'responses'"):
        read_recording(tmp_path / "none.npz")
    da = xarray.DataArray(np.zeros((5, 2)), dims=("presentation", "neuroid"),
                          coords={"stimulus_id": ("presentation", ["a", "a", "b", "b", "b"])})
    da.to_netcdf(tmp_path / "unequal.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="unequal numbers of times"):
        read_recording(tmp_path / "unequal.nc")


def test_too_few_stimuli_for_the_folds_is_refused():
    rec = Recording(_counts(S=8), [str(i) for i in range(8)], [str(i) for i in range(5)])
    with pytest.raises(ValueError, match="8 stimuli are too few for 5 folds"):
        rec.check_folds(5)
    rec.check_folds(2)


def test_pickled_arrays_are_never_loaded(tmp_path):
    """An object array needs pickle to load: refused, nothing executed."""
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        read_recording(tmp_path / "obj.npy")


def test_an_unknown_suffix_is_refused(tmp_path):
    (tmp_path / "r.mat").write_bytes(b"MATLAB")
    with pytest.raises(ValueError, match="unknown format '.mat'"):
        read_recording(tmp_path / "r.mat")


def test_files_a_lab_writes_with_h5py_and_classic_netcdf_are_read(tmp_path):
    """Written by the other libraries directly, not by our writer: HDF5 with the axes named by an
    attribute in the lab's own order, and a classic (version 3) NetCDF file from SciPy."""
    r = _counts()
    with h5py.File(tmp_path / "lab.h5", "w") as f:
        f["responses"] = r.transpose(2, 0, 3, 1)  # (trial, image, time, unit)
        f["responses"].attrs["dims"] = ["trial", "image", "time", "unit"]
        f["stimulus_id"] = np.array([f"im{i}.png" for i in range(12)], dtype="S")
    rec = read_recording(tmp_path / "lab.h5")
    np.testing.assert_array_equal(rec.responses, r)
    assert rec.stimulus_ids[3] == "im3.png"
    da = xarray.DataArray(r[:, :, :, 0], dims=("stimulus", "neuroid", "repetition"),
                          coords={"neuroid_id": ("neuroid", list("abcde"))})
    da.to_netcdf(tmp_path / "classic.nc", engine="scipy")
    rec = read_recording(tmp_path / "classic.nc")
    np.testing.assert_array_equal(rec.responses[..., 0], r[:, :, :, 0])
    assert rec.neuroid_ids == list("abcde")
