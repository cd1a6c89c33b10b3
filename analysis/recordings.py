"""Neural recordings in the field's formats, read and checked before any compute.

A recording is what a lab measured for a set of stimuli: ``responses`` of shape
``(stimuli, neuroids, repetitions, time bins)``, with the stimuli's names (``stimulus_id``,
matched to files), the neuroids' names (``neuroid_id``) and, where known, the brain region
of each neuroid (``region``: ``"V1"``, ``"MT"``...). It is read from:

- **NumPy** ``.npy``: the array alone, axes by its number of dimensions: 2 ``(stimulus,
  neuroid)``, 3 ``(stimulus, neuroid, repetition)``, 4 ``(stimulus, neuroid, repetition,
  time_bin)``; stimuli are the ``--stimuli`` folder's files in sorted order.
- **NumPy** ``.npz`` or **HDF5** ``.h5``/``.hdf5``: an array ``responses`` (axes as for
  ``.npy``, or named by a ``dims`` array, HDF5: attribute), and optional arrays
  ``stimulus_id``, ``neuroid_id``, ``region`` (strings).
- **xarray / NetCDF** ``.nc``: one data array with named dimensions, as Brain-Score's
  ``NeuroidAssembly`` and the Allen Brain Observatory's tools write them: ``presentation``
  (or ``stimulus``) with a ``stimulus_id`` coordinate (a stimulus presented several times
  is several presentations of one ``stimulus_id``: they become its repetitions, in the
  order of a ``repetition`` coordinate where there is one), ``neuroid`` with ``neuroid_id``
  and ``region``, optional ``repetition`` and ``time_bin``. An assembly in memory is taken
  as it is by :func:`from_xarray`.

Nothing is unpickled: ``.npy``/``.npz`` are read with ``allow_pickle=False``. Every check
that can fail does so here, in one line naming the problem (decision N1 in
``docs/decisions.md``): NaN or infinite values, counts that disagree, repetitions of
unequal number, too few stimuli for the folds asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Recording", "read_recording", "from_xarray", "needs", "DIMS", "SUFFIXES"]

DIMS = ("stimulus", "neuroid", "repetition", "time_bin")
SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".nc")
# names the field uses for each axis -> ours
_ALIASES = {
    "stimulus": "stimulus", "stimuli": "stimulus", "presentation": "stimulus", "image": "stimulus",
    "stimulus_id": "stimulus", "image_id": "stimulus",
    "neuroid": "neuroid", "neuroids": "neuroid", "neuron": "neuroid", "unit": "neuroid", "cell": "neuroid",
    "channel": "neuroid", "neuroid_id": "neuroid",
    "repetition": "repetition", "repetitions": "repetition", "repeat": "repetition", "trial": "repetition",
    "time_bin": "time_bin", "time": "time_bin", "time_bins": "time_bin",
}


def needs(module: str, what: str):
    """``import module``, or a one-line error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{what} needs {module}: pip install -e '.[neural]'") from None


@dataclass
class Recording:
    """Responses of ``neuroids`` to ``stimuli``, checked (see the module's notes).

    Attributes:
        responses: ``(S, N, R, T)`` float64: stimuli, neuroids, repetitions, time bins.
        stimulus_ids: ``S`` names; files of the stimuli folder (relative paths or names).
        neuroid_ids: ``N`` names.
        regions: ``N`` region names, or None when the recording does not say.
        source: where it was read from.
    """

    responses: np.ndarray
    stimulus_ids: list[str]
    neuroid_ids: list[str]
    regions: list[str] | None = None
    source: str = "memory"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = np.asarray(self.responses)
        where = self.source
        if r.ndim != 4:
            raise ValueError(f"{where}: responses must be (stimulus, neuroid, repetition, time_bin), got {r.ndim} axes")
        if not np.issubdtype(r.dtype, np.number) or np.issubdtype(r.dtype, np.complexfloating):
            raise ValueError(f"{where}: responses must be real numbers, got dtype {r.dtype}")
        self.responses = r = r.astype(np.float64)
        S, N, R, T = r.shape
        if min(S, N, R, T) == 0:
            raise ValueError(f"{where}: responses have an empty axis, shape {r.shape}")
        bad = ~np.isfinite(r)
        if bad.any():
            s, n, rep, t = (int(i[0]) for i in np.nonzero(bad))
            raise ValueError(f"{where}: responses hold {int(bad.sum())} NaN or infinite values (the first: stimulus "
                             f"{s}, neuroid {n}, repetition {rep}, time bin {t}); remove or fill them first")
        self.stimulus_ids = [str(s) for s in self.stimulus_ids]
        self.neuroid_ids = [str(n) for n in self.neuroid_ids]
        for name, values, want in (("stimulus_id", self.stimulus_ids, S), ("neuroid_id", self.neuroid_ids, N)):
            if len(values) != want:
                raise ValueError(f"{where}: {len(values)} {name} values for {want} {name.split('_')[0]}s")
            if len(set(values)) != len(values):
                twice = next(v for v in values if values.count(v) > 1)
                raise ValueError(f"{where}: {name} {twice!r} appears more than once")
        if self.regions is not None:
            self.regions = [str(x) for x in self.regions]
            if len(self.regions) != N:
                raise ValueError(f"{where}: {len(self.regions)} region values for {N} neuroids")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.responses.shape  # type: ignore[return-value]

    @property
    def repetitions(self) -> int:
        return self.responses.shape[2]

    def mean(self, time_bins: slice | Sequence[int] | None = None) -> np.ndarray:
        """``(S, N)``: the response averaged over repetitions and the chosen time bins (all)."""
        r = self.responses if time_bins is None else self.responses[..., time_bins]
        return r.mean(axis=(2, 3))

    def per_repetition(self, time_bins: slice | Sequence[int] | None = None) -> np.ndarray:
        """``(S, N, R)``: averaged over the chosen time bins only."""
        r = self.responses if time_bins is None else self.responses[..., time_bins]
        return r.mean(axis=3)

    def select(self, neuroids: np.ndarray) -> Recording:
        """The recording of some neuroids (a boolean mask or indices)."""
        idx = np.arange(self.shape[1])[neuroids]
        return Recording(self.responses[:, idx], self.stimulus_ids, [self.neuroid_ids[i] for i in idx],
                         None if self.regions is None else [self.regions[i] for i in idx], self.source, self.meta)

    def to_xarray(self):
        """The recording as Brain-Score lays out an assembly: ``(presentation, neuroid,
        time_bin)``, each repetition of a stimulus one presentation (coordinates
        ``stimulus_id`` and ``repetition``), neuroids with ``neuroid_id`` (and ``region``)."""
        xarray = needs("xarray", "an xarray assembly")
        S, N, R, T = self.shape
        values = self.responses.transpose(0, 2, 1, 3).reshape(S * R, N, T)
        coords = {"stimulus_id": ("presentation", np.repeat(self.stimulus_ids, R)),
                  "repetition": ("presentation", np.tile(np.arange(R), S)),
                  "neuroid_id": ("neuroid", self.neuroid_ids), "time_bin": ("time_bin", np.arange(T))}
        if self.regions is not None:
            coords["region"] = ("neuroid", self.regions)
        return xarray.DataArray(values, dims=("presentation", "neuroid", "time_bin"), coords=coords, name="responses")

    def save(self, path: str | Path) -> Path:
        """Write the recording as ``.npz``, ``.h5``/``.hdf5`` or NetCDF ``.nc`` (read back by
        :func:`read_recording`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        arrays = {"responses": self.responses, "dims": np.array(DIMS), "stimulus_id": np.array(self.stimulus_ids),
                  "neuroid_id": np.array(self.neuroid_ids)}
        if self.regions is not None:
            arrays["region"] = np.array(self.regions)
        if suffix == ".npz":
            np.savez(path, **arrays)
        elif suffix in (".h5", ".hdf5"):
            h5py = needs("h5py", "writing HDF5")
            with h5py.File(path, "w") as f:
                for key, value in arrays.items():
                    if key != "dims":
                        f[key] = value.astype("S") if value.dtype.kind == "U" else value
                f["responses"].attrs["dims"] = np.array(DIMS, dtype="S")
        elif suffix == ".nc":
            self.to_xarray().to_netcdf(path, engine="h5netcdf")
        else:
            raise ValueError(f"{path}: recordings are written as .npz, .h5/.hdf5 or .nc")
        return path

    def check_folds(self, folds: int, per_fold: int = 3) -> None:
        """Refuse ``folds`` that leave fewer than ``per_fold`` stimuli in a held-out fold."""
        S = self.shape[0]
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        if S < folds * per_fold:
            raise ValueError(f"{self.source}: {S} stimuli are too few for {folds} folds (at least {folds * per_fold}: "
                             f"{per_fold} per held-out fold); record more stimuli or ask for fewer folds")


def _strings(values) -> list[str] | None:
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    return [str(v) for v in arr.reshape(-1)]


def _canonical(dims: Sequence[str], where: str) -> list[str]:
    out = []
    for d in dims:
        name = _ALIASES.get(str(d).lower())
        if name is None:
            raise ValueError(f"{where}: unknown axis {d!r}; axes are named {', '.join(DIMS)} (or presentation, "
                             "neuron, unit, trial, time)")
        if name in out:
            raise ValueError(f"{where}: two axes mean {name!r}")
        out.append(name)
    if "stimulus" not in out or "neuroid" not in out:
        raise ValueError(f"{where}: responses need a stimulus and a neuroid axis, got {list(dims)}")
    return out


def _to_standard(array: np.ndarray, dims: Sequence[str] | None, where: str) -> np.ndarray:
    """Any axis order and subset -> ``(S, N, R, T)``."""
    array = np.asarray(array)
    if dims is None:
        if array.ndim not in (2, 3, 4):
            raise ValueError(f"{where}: responses of {array.ndim} axes; without named axes they must be "
                             "(stimulus, neuroid[, repetition[, time_bin]])")
        dims = DIMS[: array.ndim]
    dims = _canonical(dims, where)
    if len(dims) != array.ndim:
        raise ValueError(f"{where}: {len(dims)} axis names for an array of {array.ndim} axes")
    for d in DIMS:
        if d not in dims:
            array = array[..., None]
            dims = [*dims, d]
    return np.transpose(array, [dims.index(d) for d in DIMS])


def _from_arrays(get, keys: set[str], where: str, dims_attr=None) -> Recording:
    if "responses" not in keys:
        raise ValueError(f"{where}: no array named 'responses' (it holds {', '.join(sorted(keys)) or 'nothing'})")
    dims = _strings(get("dims")) if "dims" in keys else _strings(dims_attr)
    responses = _to_standard(get("responses"), dims, where)
    S, N = responses.shape[:2]
    stimulus_ids = _strings(get("stimulus_id")) if "stimulus_id" in keys else None
    neuroid_ids = _strings(get("neuroid_id")) if "neuroid_id" in keys else [str(i) for i in range(N)]
    regions = _strings(get("region")) if "region" in keys else None
    return Recording(responses, stimulus_ids if stimulus_ids is not None else [str(i) for i in range(S)],
                     neuroid_ids, regions, where, {"stimulus_ids_given": stimulus_ids is not None})


def from_xarray(array, where: str = "assembly") -> Recording:
    """A recording from an ``xarray.DataArray`` with named dimensions (see the module's notes)."""
    dims = list(array.dims)
    canon = _canonical(dims, where)
    stim_dim = dims[canon.index("stimulus")]
    coords = array.coords

    def coord(name, dim):
        return _strings(coords[name].values) if name in coords and coords[name].dims == (dim,) else None

    ids = coord("stimulus_id", stim_dim) or coord("image_id", stim_dim)
    values = np.asarray(array.values)
    if ids is not None and len(set(ids)) < len(ids):  # presentations: group repeats of a stimulus
        if "repetition" in canon:
            raise ValueError(f"{where}: stimuli repeat along {stim_dim!r} and there is a repetition axis too")
        order = list(dict.fromkeys(ids))
        reps = coord("repetition", stim_dim)
        key = [int(float(r)) for r in reps] if reps is not None else list(range(len(ids)))
        counts = {s: ids.count(s) for s in order}
        if len(set(counts.values())) > 1:
            few = min(counts, key=counts.get)
            raise ValueError(f"{where}: stimuli were presented unequal numbers of times ({min(counts.values())} for "
                             f"{few!r}, up to {max(counts.values())}); keep the same number of repetitions of each")
        axis = canon.index("stimulus")
        picks = [sorted((i for i, s in enumerate(ids) if s == sid), key=lambda i: key[i]) for sid in order]
        grouped = np.stack([np.take(values, p, axis=axis) for p in picks], axis=axis)  # stimulus axis, then R
        dims = [*dims[: axis + 1], "repetition", *dims[axis + 1:]]
        values, ids = grouped, order  # (..., stimulus, R, ...)
    responses = _to_standard(values, dims, where)
    neuroid_dim = dims[[_ALIASES.get(str(d).lower()) for d in dims].index("neuroid")]
    neuroid_ids = coord("neuroid_id", neuroid_dim) or [str(i) for i in range(responses.shape[1])]
    regions = coord("region", neuroid_dim)
    return Recording(responses, ids if ids is not None else [str(i) for i in range(responses.shape[0])],
                     neuroid_ids, regions, where, {"stimulus_ids_given": ids is not None})


def read_recording(path: str | Path) -> Recording:
    """The recording in ``path`` (``.npy``, ``.npz``, ``.h5``/``.hdf5`` or NetCDF ``.nc``)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _from_arrays(lambda k: np.load(path, allow_pickle=False), {"responses"}, where)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return _from_arrays(lambda k: z[k], set(z.files), where)
        if suffix in (".h5", ".hdf5"):
            h5py = needs("h5py", "reading HDF5")
            with h5py.File(path, "r") as f:
                keys = {k for k in f.keys() if isinstance(f[k], h5py.Dataset)}
                attr = f["responses"].attrs.get("dims") if "responses" in keys else None
                return _from_arrays(lambda k: f[k][()], keys, where, attr)
        if suffix == ".nc":
            needs("h5netcdf", "reading NetCDF")
            xarray = needs("xarray", "reading NetCDF")
            with xarray.open_dataset(path) as ds:  # NetCDF4 (h5netcdf) or classic NetCDF (scipy)
                names = list(ds.data_vars)
                if not names:
                    raise ValueError(f"{where}: the file holds no data array")
                name = "responses" if "responses" in names else names[0]
                if len(names) > 1 and "responses" not in names:
                    raise ValueError(f"{where}: {len(names)} data arrays ({', '.join(names)}); name the responses "
                                     "'responses'")
                return from_xarray(ds[name].load(), where)
    except ValueError as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read it as {suffix}: {err}") from err
    except OSError as err:
        raise ValueError(f"{where}: cannot read it as {suffix}: {err}") from err
    raise ValueError(f"{where}: unknown format {suffix!r}; responses are read from {', '.join(SUFFIXES)}")
