"""V3's dynamic-form target against scikit-image on a moving photograph."""

import math

import numpy as np
import pytest
import torch
from skimage import data, filters

from areas import V3DynamicForm
from visualpath import TargetInput
from visualpath.tokens import Layout


def _target(area, clip):
    layout = Layout("video", patch=16, tube=2)
    return area.target(TargetInput(pixels=clip, layout=layout, batch={}))


def _camera_pan(shift=3, size=64, frames=2):
    """A real photograph filmed by a camera panning ``shift`` pixels per frame: (1, 3, T, H, W)."""
    image = data.astronaut().astype(np.float64) / 255.0
    clip = np.stack([image[100:100 + size, 150 + t * shift:150 + t * shift + size] for t in range(frames)])
    return torch.from_numpy(clip).permute(3, 0, 1, 2)[None]  # (1, 3, T, H, W)


def test_raw_target_equals_skimage_gabor_energy_of_the_frame_difference():
    clip = _camera_pan()
    area = V3DynamicForm(normalize=False, mode="direct")
    target = _target(area, clip)[0].numpy()  # (16 tokens, 2 * 2 * 2 * 16)
    rgb = clip[0].permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    lum = 255 * (rgb @ np.array([0.2125, 0.7154, 0.0721]))  # skimage's rgb2gray weights, 0-255 units
    diff = lum[1] - lum[0]
    cells, cell = area.cells, 16 // area.cells
    energy = []
    for wavelength in area.wavelengths:
        for k in range(area.orientations):
            real, imag = filters.gabor(diff, 1 / wavelength, theta=k * math.pi / area.orientations, bandwidth=1,
                                       mode="reflect")
            energy.append(np.hypot(real, imag))
    pooled = np.stack(energy).reshape(len(energy), 8, cell, 8, cell).mean(axis=(2, 4))  # (K, 8, 8) cells
    for i in range(4):
        for j in range(4):
            block = pooled[:, i * cells:(i + 1) * cells, j * cells:(j + 1) * cells]  # (K, ci, cj)
            one_frame = block.transpose(1, 2, 0).reshape(-1)  # (ci, cj, K) order
            expected = np.concatenate([one_frame, one_frame])  # the last frame repeats the difference
            np.testing.assert_allclose(target[i * 4 + j], expected, rtol=1e-6, atol=1e-6)


def test_fft_equals_direct():
    clip = _camera_pan(frames=4).float()
    fft = _target(V3DynamicForm(normalize=False), clip)
    direct = _target(V3DynamicForm(normalize=False, mode="direct"), clip)
    torch.testing.assert_close(fft, direct, atol=2e-3, rtol=1e-4)


def test_a_static_scene_has_no_dynamic_form():
    still = _camera_pan(shift=0)
    assert _target(V3DynamicForm(normalize=False), still).abs().max() < 1e-6
    normalized = _target(V3DynamicForm(), still)
    assert torch.isfinite(normalized).all() and normalized.abs().max() < 1e-3


@pytest.mark.parametrize("axis, orientation", [("x", 0), ("y", 4)])
def test_a_moving_edge_excites_its_orientation(axis, orientation):
    """A vertical edge moving sideways drives the theta=0 filters (which vary along x); a
    horizontal edge moving up and down drives theta=90 degrees (index 4 of 8)."""
    T, S = 2, 32
    clip = torch.zeros(1, 3, T, S, S, dtype=torch.float64)
    for t in range(T):
        edge = 12 + 3 * t
        if axis == "x":
            clip[:, :, t, :, edge:] = 1.0
        else:
            clip[:, :, t, edge:, :] = 1.0
    area = V3DynamicForm(normalize=False, mode="direct")
    energy = _target(area, clip).view(1, 4, 2, 2, 2, len(area.wavelengths), area.orientations)
    per_orientation = energy.sum(dim=(0, 1, 2, 3, 4, 5))
    assert int(per_orientation.argmax()) == orientation


def test_shape_and_refusals():
    area = V3DynamicForm()
    layout = Layout("video", patch=16, tube=2)
    assert area.target_dim(layout) == 2 * 2 * 2 * 16
    assert _target(area, _camera_pan(frames=4).float()).shape == (1, 2 * 16, 128)
    with pytest.raises(ValueError, match="two or more frames"):
        area.difference(torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(ValueError, match="wavelengths"):
        V3DynamicForm(wavelengths=(2.0,))
    with pytest.raises(ValueError, match="must divide the patch size"):
        _target(V3DynamicForm(cells=3), _camera_pan().float())
