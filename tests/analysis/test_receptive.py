"""Receptive fields by reverse correlation, checked on units whose field is known."""

import math

import pytest
import torch

from analysis.receptive import area_receptive_fields, receptive_field_figure, reverse_correlation
from tests.conftest import tiny_pathway


def _gabor(size=16, wavelength=6.0, theta=0.5, sigma=3.0) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    u = x * math.cos(theta) + y * math.sin(theta)
    return torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) * torch.cos(2 * math.pi * u / wavelength)


def _centre_surround(size=16) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(size) - size / 2, torch.arange(size) - size / 2, indexing="ij")
    r2 = x ** 2 + y ** 2
    return torch.exp(-r2 / 4) - 0.5 * torch.exp(-r2 / 16)


def _corr(a, b) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("noise, n", [("white", 16384), ("sparse", 8192)])
def test_the_field_of_a_linear_unit_is_its_filter(noise, n):
    filters = torch.stack([_gabor(), _centre_surround()])[:, None].expand(2, 3, 16, 16) / 3  # (units, C, H, W)

    def respond(s):  # two linear units and a rectified one
        r = torch.einsum("bchw,dchw->bd", s - 0.5, filters)
        return {"linear": r, "rectified": r.clamp(min=0)}

    fields = reverse_correlation(respond, (3, 16, 16), n=n, noise=noise, dots=8)
    assert fields["linear"].shape == (2, 3, 16, 16)
    for unit in range(2):
        assert _corr(fields["linear"][unit], filters[unit]) > 0.9
        assert _corr(fields["rectified"][unit], filters[unit]) > 0.8  # the STA of a half-wave unit: the same shape
    if noise == "white":  # and at its scale: E[(r - Er) s] / Var(s) = w for binary white noise
        for unit in range(2):
            w = filters[unit].flatten()
            assert 0.9 < float(fields["linear"][unit].flatten() @ w / (w @ w)) < 1.1


def test_a_units_spatio_temporal_field_shows_when_it_looks():
    """A motion-energy-like unit: the change of one spot from frame 1 to frame 2."""
    def respond(s):  # (B, C, T, H, W)
        return {"change": (s[:, :, 2, 4:6, 4:6] - s[:, :, 1, 4:6, 4:6]).mean(dim=(1, 2, 3))[:, None]}

    (field,) = reverse_correlation(respond, (1, 4, 8, 8), n=4096)["change"]
    spot = field[0, :, 4:6, 4:6].mean(dim=(1, 2))  # per frame
    assert spot[2] > 0.1 and spot[1] < -0.1 and spot[[0, 3]].abs().max() < 0.05
    outside = field[0].clone()
    outside[:, 4:6, 4:6] = 0
    assert outside.abs().max() < 0.1


def test_an_area_field_peaks_at_its_own_token():
    torch.manual_seed(0)
    model = tiny_pathway().build().eval()
    fields = area_receptive_fields(model, "ventral", size=32, n=1024)
    assert set(fields) == {"V1", "V2", "V4"} and fields["V1"].shape[1:] == (3, 32, 32)
    patch = model.pathway.encoder.patch
    energy = fields["V1"].pow(2).sum(dim=(0, 1))  # (H, W)
    per_patch = energy.unfold(0, patch, patch).unfold(1, patch, patch).sum(dim=(-1, -2))  # (grid, grid)
    centre = per_patch.shape[0] // 2
    assert per_patch.argmax() == centre * per_patch.shape[1] + centre  # the token's own patch drives it most
    video = area_receptive_fields(model, "dorsal", size=32, frames=4, n=256)
    assert video["MT"].shape[1:] == (3, 4, 32, 32)
    fig = receptive_field_figure(video, units=2)
    assert len(fig.axes) == 3 * 2 * 4


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="noise must be one of white, sparse"):
        reverse_correlation(lambda s: {}, (1, 4, 4), noise="pink")
    with pytest.raises(ValueError, match="n must be >= 2"):
        reverse_correlation(lambda s: {}, (1, 4, 4), n=1)
