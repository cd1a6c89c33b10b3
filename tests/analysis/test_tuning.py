"""Tuning probes recover what synthetic units were built to prefer."""

import math

import numpy as np
import pytest
import torch
from skimage.filters import gabor_kernel

from analysis.tuning import direction_tuning, drifting_gratings, gratings, orientation_tuning

SIZE = 64


def _embed(kernel: np.ndarray) -> torch.Tensor:
    """A kernel centred in a SIZE x SIZE frame."""
    out = np.zeros((SIZE, SIZE), dtype=np.complex128)
    h, w = kernel.shape
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    out[top:top + h, left:left + w] = kernel
    return torch.from_numpy(out)


def test_orientation_probe_recovers_skimage_gabor_units():
    """Quadrature-energy units built on skimage's Gabor kernels. skimage measures theta with
    the row axis pointing down; the probe's y axis points up, so theta=60 is 120 here."""
    units = [(60, 1 / 8), (0, 1 / 16), (135, 1 / 4)]
    kernels = torch.stack([_embed(gabor_kernel(f, theta=math.radians(t))) for t, f in units])

    def respond(x):  # (S, 3, H, W) -> (S, U): |<x - 0.5, g>|^2
        lum = x.double().mean(1) - 0.5
        return (torch.einsum("shw,uhw->su", lum.to(torch.complex128), kernels.conj()).abs() ** 2).float()

    tuning = orientation_tuning(respond, SIZE, orientations=np.arange(0, 180, 15))
    assert tuning.preferred_orientation.tolist() == [120.0, 0.0, 45.0]
    assert tuning.preferred_frequency.tolist() == pytest.approx([1 / 8, 1 / 16, 1 / 4])
    assert (tuning.osi > 0.9).all() and (tuning.circular_variance < 0.5).all()
    assert tuning.summary()["responsive"] == 1.0


def test_an_untuned_unit_has_zero_osi_and_full_circular_variance():
    def respond(x):  # contrast energy: the same for every orientation
        return ((x.double().mean(1) - 0.5) ** 2).mean((1, 2))[:, None].float()

    tuning = orientation_tuning(respond, SIZE, frequencies=[1 / 8])
    assert tuning.osi.abs().max() < 0.05 and tuning.circular_variance.min() > 0.95


def test_direction_probe_recovers_a_motion_energy_unit():
    """A unit tuned to gratings drifting at 210 degrees: quadrature energy of a spatio-temporal
    Gabor whose carrier moves that way at the stimulus speed (written here, not in the probe)."""
    frames, f, speed, direction = 8, 1 / 16, 2.0, 210.0
    c = torch.arange(SIZE, dtype=torch.float64) - (SIZE - 1) / 2
    y, x = -c[:, None], c[None, :]
    t = torch.arange(frames, dtype=torch.float64)[:, None, None]
    th = math.radians(direction)
    carrier = torch.exp(1j * 2 * math.pi * f * (x * math.cos(th) + y * math.sin(th) - speed * t))
    envelope = torch.exp(-(x ** 2 + y ** 2) / (2 * 12.0 ** 2))
    g = carrier * envelope  # (T, H, W)

    def respond(v):  # (S, 3, T, H, W)
        lum = (v.double().mean(1) - 0.5).to(torch.complex128)
        return (torch.einsum("sthw,thw->s", lum, g.conj()).abs() ** 2)[:, None].float()

    tuning = direction_tuning(respond, SIZE, frames, frequency=f, speed=speed)
    assert tuning.preferred_direction.tolist() == [direction]
    assert tuning.dsi.item() > 0.9


def test_stimuli_move_and_orient_as_documented():
    still = gratings(16, [0], [1 / 8], phases=1)[0, 0, 0, 0]  # 0 degrees: varies along x only
    assert torch.allclose(still, still[:1].expand_as(still))
    moving = drifting_gratings(16, 3, [90], 1 / 8, speed=1.0, phases=1)[0, 0, 0]  # (T, H, W), upwards
    # moving up one pixel per frame: frame t+1 at row r equals frame t at row r+1 (rows run down)
    assert torch.allclose(moving[1, :-1], moving[0, 1:], atol=1e-6)
