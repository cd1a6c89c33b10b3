import math

import numpy as np
import pytest
import torch
from skimage import color, data, filters

from areas import V1Gabor
from areas._common import luminance
from areas.v1_gabor import (GaborBank, cell_mean, gabor_bank, gabor_energy, gabor_kernel, gabor_responses,
                            pad_symmetric, resolve_mode)
from tests.conftest import photo
from visualpath import TargetInput
from visualpath.tokens import Layout


@pytest.mark.parametrize("frequency", [1 / 4, 1 / 8, 1 / 16, 0.3])
@pytest.mark.parametrize("theta", [0.0, math.pi / 8, math.pi / 4, 5 * math.pi / 8])
@pytest.mark.parametrize("bandwidth", [1.0, 1.5])
def test_kernels_equal_skimage(frequency, theta, bandwidth):
    ours = gabor_kernel(frequency, theta, bandwidth).numpy()
    ref = filters.gabor_kernel(frequency, theta=theta, bandwidth=bandwidth)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.real, ref.real, atol=1e-12)
    np.testing.assert_allclose(ours.imag, ref.imag, atol=1e-12)


def test_bank_kernel_sizes_follow_design():
    sizes = [stack.shape[-1] for stack in gabor_bank(8, (4.0, 8.0, 16.0), 1.0)]
    assert sizes == [15, 29, 55]  # docs/decisions.md D2: about 15^2, 29^2 and 55^2 pixels


@pytest.mark.parametrize("r", [1, 3, 7])  # 7 pads wider than the 4x5 image
def test_symmetric_padding_equals_numpy(r):
    x = torch.arange(20.0).view(1, 1, 4, 5)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="symmetric")
    np.testing.assert_array_equal(pad_symmetric(x, r).numpy(), ref)


def test_luminance_equals_skimage_rgb2gray():
    img = photo("astronaut", 32)
    ours = luminance(torch.from_numpy(img).permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, color.rgb2gray(img), atol=1e-12)


@pytest.mark.parametrize("mode", ["direct", "fft"])
def test_filtered_maps_equal_skimage_gabor_on_a_photograph(mode):
    image = data.camera()[160:288, 200:328].astype(np.float64) / 255.0  # 128x128, real photo
    bank = gabor_bank(8, (4.0, 8.0, 16.0), 1.0)
    lum = torch.from_numpy(image)[None, None]
    response = gabor_responses(lum, bank, mode=mode)[0].numpy()  # (24, H, W) complex
    for k in [0, 3, 8 + 2, 16 + 5, 23]:  # every wavelength, several orientations
        wavelength, theta = (4, 8, 16)[k // 8], (k % 8) * math.pi / 8
        real, imag = filters.gabor(image, 1 / wavelength, theta=theta, bandwidth=1, mode="reflect")
        np.testing.assert_allclose(response[k].real, real, atol=1e-9)
        np.testing.assert_allclose(response[k].imag, imag, atol=1e-9)


def test_float32_fft_stays_close_to_skimage():
    image = data.camera()[:96, :96].astype(np.float32) / 255.0
    bank = gabor_bank(8, (4.0, 8.0, 16.0), 1.0)
    response = gabor_responses(torch.from_numpy(image)[None, None], bank, mode="fft")[0]
    real, imag = filters.gabor(image.astype(np.float64), 1 / 16, theta=math.pi / 2, bandwidth=1)
    np.testing.assert_allclose(response[8 * 2 + 4].real.numpy(), real, atol=2e-5)


def _target(area, pixels, modality="image"):
    layout = Layout(modality, tube=2 if modality == "video" else 1)
    return area.target(TargetInput(pixels=pixels, layout=layout, batch={}))


def test_image_target_shape_and_values(photos):
    area = V1Gabor()
    target = _target(area, photos)
    assert target.shape == (3, 16, 8 * 3 * 16) == (3, 16, area.target_dim(Layout("image")))
    assert torch.isfinite(target).all()
    torch.testing.assert_close(target.mean(-1), torch.zeros(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(-1), torch.ones(3, 16), atol=1e-3, rtol=0)


def test_raw_target_is_the_cell_average_of_the_energy(photos):
    area = V1Gabor(normalize=False)
    energy = area.energy(photos)  # (B, 24, H, W)
    target = _target(area, photos)
    # token 5 = patch row 1, col 1; cell (2, 3) covers pixels [16+8:16+12, 16+12:16+16]
    cell = energy[1, :, 24:28, 28:32].mean(dim=(-2, -1))
    torch.testing.assert_close(target[1, 5].view(4, 4, 24)[2, 3], cell, atol=1e-6, rtol=1e-5)


def test_video_target_has_768_values_per_tube(photos):
    clip = photos[:2, :, None].repeat(1, 1, 4, 1, 1)  # (2, 3, 4, 64, 64)
    target = _target(V1Gabor(), clip, "video")
    assert target.shape == (2, 2 * 16, 768)
    assert torch.isfinite(target).all()


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_images_give_finite_targets(value):
    target = _target(V1Gabor(), torch.full((2, 3, 32, 32), value))
    assert torch.isfinite(target).all()


def test_fft_mode_matches_direct_mode_per_patch(photos):
    fast = _target(V1Gabor(mode="fft"), photos)
    exact = _target(V1Gabor(mode="direct"), photos)
    corr = torch.corrcoef(torch.stack([fast.flatten(), exact.flatten()]))[0, 1]
    assert corr >= 0.98
    torch.testing.assert_close(fast, exact, atol=1e-3, rtol=1e-3)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="mode must be one of"):
        V1Gabor(mode="pyramid")
    with pytest.raises(ValueError, match="wavelengths"):
        V1Gabor(wavelengths=(1.5,))
    with pytest.raises(ValueError, match="blocks"):
        V1Gabor(blocks=-1)


def _skimage_energy(image: np.ndarray) -> np.ndarray:
    """(24, H, W) ``|skimage.filters.gabor|`` of a float64 image: the reference energy."""
    out = []
    for k in range(24):
        wavelength, theta = (4, 8, 16)[k // 8], (k % 8) * math.pi / 8
        real, imag = filters.gabor(image, 1 / wavelength, theta=theta, bandwidth=1, mode="reflect")
        out.append(np.hypot(real, imag))
    return np.stack(out)


@pytest.mark.parametrize("size", [64, 100])  # square, and wider than the 55 px kernel's radius twice over
def test_separable_energy_equals_skimage_in_float64(size):
    image = data.camera()[100:100 + size, 150:150 + size - 8].astype(np.float64) / 255.0  # not square either
    ours = gabor_energy(torch.from_numpy(image)[None, None], GaborBank(8, (4.0, 8.0, 16.0), 1.0), "separable")
    np.testing.assert_allclose(ours[0].numpy(), _skimage_energy(image), atol=1e-9)


@pytest.mark.parametrize("mode", ["separable", "fft", "auto"])
def test_float32_energy_is_within_1e4_of_skimage(mode):
    image = data.camera()[200:264, 220:284].astype(np.float64) / 255.0
    lum = torch.from_numpy(image * 255).float()[None, None]  # V1's 0-255 luminance, float32 as in training
    ours = gabor_energy(lum, GaborBank(8, (4.0, 8.0, 16.0), 1.0), mode)[0].double().numpy()
    ref = _skimage_energy(image) * 255
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4


@pytest.mark.parametrize("orientations", [1, 3, 6])  # odd counts have no theta = pi/2, 1 has no mirror pair
def test_separable_matches_fft_for_any_orientation_count(photos, orientations):
    lum = luminance(photos) * 255
    bank = GaborBank(orientations, (4.0, 8.0), 1.5)
    fast = gabor_energy(lum, bank, "separable", pool=4)
    torch.testing.assert_close(fast, gabor_energy(lum, bank, "fft", pool=4), atol=1e-3, rtol=1e-4)
    assert fast.shape == (3, 2 * orientations, 16, 16)


def test_auto_mode_picks_matrices_for_small_cpu_frames_and_fft_otherwise():
    assert resolve_mode("auto", torch.zeros(1, 1, 64, 64)) == "separable"
    assert resolve_mode("auto", torch.zeros(1, 1, 112, 112)) == "fft"
    assert resolve_mode("fft", torch.zeros(1, 1, 64, 64)) == "fft"


@pytest.mark.parametrize("mode", ["separable", "fft"])
def test_every_mode_gives_the_direct_target(photos, mode):
    clip = photos[:2, :, None].repeat(1, 1, 4, 1, 1) * torch.linspace(0.5, 1, 4).view(1, 1, 4, 1, 1)
    layout = Layout("video", tube=2)
    fast = V1Gabor(mode=mode).target(TargetInput(pixels=clip, layout=layout))
    exact = V1Gabor(mode="direct").target(TargetInput(pixels=clip, layout=layout))
    torch.testing.assert_close(fast, exact, atol=1e-4, rtol=1e-4)


def test_cell_mean_equals_average_pooling():
    x = torch.rand(2, 5, 12, 8)
    for pool in (1, 2, 4):
        torch.testing.assert_close(cell_mean(x, pool), torch.nn.functional.avg_pool2d(x, pool))
