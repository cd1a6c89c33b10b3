"""The simulated recording behaves as its cells are meant to, and its noise ceiling is known."""

import numpy as np

from analysis.encoding import split_half_reliability
from analysis.simulated_cells import mt_motion_energy, simulate_recording, v1_complex_energy


def _drifting(directions_deg, speed=2.0, frequency=1 / 10, frames=8, size=64):
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for d in np.deg2rad(directions_deg):
        out.append(np.stack([np.cos(2 * np.pi * frequency * (np.cos(d) * x + np.sin(d) * y - speed * t))
                             for t in range(frames)]))
    return np.stack(out)  # (S, T, H, W)


def test_mt_cells_prefer_one_direction_and_v1_cells_one_orientation():
    lum = _drifting([0, 90, 180, 270])
    mt = mt_motion_energy(lum, 32, 32, 8, 1 / 10, direction=0.0, speed=2.0)
    assert mt.argmax() == 0 and mt[0] > 50 * mt[2]  # rightward over leftward
    assert mt_motion_energy(lum, 32, 32, 8, 1 / 10, direction=np.pi / 2, speed=2.0).argmax() == 1
    v1 = v1_complex_energy(lum, 32, 32, 1 / 10, theta=0.0)
    assert abs(v1[0] - v1[2]) < 1e-3 * v1[0]  # a complex cell: no direction preference
    assert v1[0] > 100 * v1[1]  # but an orientation one
    shifted = _drifting([0], speed=2.0)[:, :, :, 3:]  # a phase shift of the same grating
    assert abs(v1_complex_energy(np.pad(shifted, ((0, 0), (0, 0), (0, 0), (0, 3))), 32, 32, 1 / 10, 0.0)[0] - v1[0]) \
        < 0.05 * v1[0]


def test_the_estimated_ceiling_matches_the_simulation_s_reliability():
    rng = np.random.default_rng(0)
    clips = (rng.random((300, 3, 8, 32, 32)) * 255).astype(np.uint8)  # white-noise movies
    rec, truth = simulate_recording(clips, v1=8, mt=8, repetitions=20, seed=1)
    assert rec.shape == (300, 16, 20, 1) and rec.regions == ["V1"] * 8 + ["MT"] * 8
    estimated = split_half_reliability(rec.per_repetition(), splits=100)
    assert np.median(np.abs(estimated - truth.reliability)) < 0.05
    assert abs(np.mean(estimated - truth.reliability)) < 0.02  # no bias
    assert truth.reliability.min() > 0.1  # the cells respond to these clips
