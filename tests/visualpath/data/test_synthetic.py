import numpy as np
import pytest
import torch

from tests.visualpath.data.conftest import SMALL
from visualpath.data import ensure_synthetic, read_frames, read_ucf101
from visualpath.data.synthetic import CLASSES, _render, _scene


def test_official_layout_and_split_files(small_ucf):
    assert sorted(p.name for p in (small_ucf / "UCF-101").iterdir()) == sorted(CLASSES)
    lists = small_ucf / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes().startswith(b"1 TranslateLeft\r\n")
    for split in (1, 2, 3):
        train, _ = read_ucf101(small_ucf, split, True)
        test, _ = read_ucf101(small_ucf, split, False)
        assert len(train) + len(test) == 10 * 7 and len(test) == 10 * 2
        assert not {r.path for r in train} & {r.path for r in test}
    assert b" " not in (lists / "testlist01.txt").read_bytes().split(b"\r\n")[0]  # no labels


def test_generation_is_deterministic_and_cached(small_ucf, tmp_path):
    again = ensure_synthetic(tmp_path / "again", SMALL)
    name = "Expand/v_Expand_g03_c01.avi"
    a, b = read_frames(small_ucf / "UCF-101" / name, range(24)), read_frames(again / "UCF-101" / name, range(24))
    assert torch.equal(a, b)
    stamp = (again / "visualpath_synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(again, SMALL) == again
    assert (again / "visualpath_synthetic.json").stat().st_mtime_ns == stamp  # not regenerated


def _flow_summary(label, seed):
    """Mean optical flow (skimage, an independent estimate) between two mid-clip frames:
    translation (u, v), divergence and curl about the frame centre (image y points down)."""
    from skimage.registration import optical_flow_ilk

    rng = np.random.default_rng([seed, 1])
    scene = _scene(SMALL, np.random.default_rng([seed]))
    video = _render(label, SMALL, scene, rng).astype(float).mean(-1)
    t = SMALL.frames // 2
    v, u = optical_flow_ilk(video[t], video[t + 1], radius=5)  # content moves by (u, v)
    ys, xs = np.mgrid[0:SMALL.size, 0:SMALL.size] - SMALL.size / 2 + 0.5
    return u.mean(), v.mean(), (u * xs + v * ys).mean(), (u * ys - v * xs).mean()


@pytest.mark.parametrize("label, index, sign", [
    ("TranslateLeft", 0, -1), ("TranslateRight", 0, 1), ("TranslateUp", 1, -1), ("TranslateDown", 1, 1),
    ("Expand", 2, 1), ("Contract", 2, -1), ("RotateClockwise", 3, -1), ("RotateCounterClockwise", 3, 1),
])
def test_the_motion_is_the_class(label, index, sign):
    for seed in range(3):
        summary = _flow_summary(label, seed)
        assert sign * summary[index] > (0.3 if index < 2 else 3.0), (label, seed, summary)


def test_oscillation_moves_along_its_axis():
    from skimage.registration import optical_flow_ilk

    for label, axis in (("OscillateHorizontal", 1), ("OscillateVertical", 0)):
        scene = _scene(SMALL, np.random.default_rng([0]))
        video = _render(label, SMALL, scene, np.random.default_rng([0, 1])).astype(float).mean(-1)
        flows = np.array([[f.mean() for f in optical_flow_ilk(video[t], video[t + 1], radius=5)]
                          for t in range(0, SMALL.frames - 1, 2)])  # (steps, (v, u))
        along, across = np.abs(flows[:, axis]).mean(), np.abs(flows[:, 1 - axis]).mean()
        assert along > 4 * across and (flows[:, axis] > 0).any() and (flows[:, axis] < 0).any()


def test_classes_of_a_group_share_the_scene(small_ucf):
    def chromaticity(c, g):  # the backdrop's colour: its plaid modulates luminance only
        frames = read_frames(small_ucf / "UCF-101" / c / f"v_{c}_g{g:02d}_c01.avi", range(0, 24, 4)).float()
        rgb = frames.mean(dim=(0, 1, 2))
        return rgb / rgb.sum()

    same = torch.stack([chromaticity(c, 3) for c in CLASSES])
    other = chromaticity("Expand", 4)
    spread = (same - same.mean(0)).abs().max()
    assert spread < 0.03 and (other - same.mean(0)).abs().max() > 2 * spread


def test_image_set_is_an_imagenet_layout_of_shapes(tmp_path):
    from visualpath.data.datasets import ImageFolder
    from visualpath.data.layouts import check_root
    from visualpath.data.synthetic import SHAPES, ImageSpec, ensure_synthetic_images

    spec = ImageSpec(train=3, val=2, size=48)
    root = ensure_synthetic_images(tmp_path / "shapes", spec)
    check_root("imagenet", root)
    train, val = ImageFolder(root / "train"), ImageFolder(root / "val", size=48)
    assert train.classes == sorted(SHAPES) and len(train) == 12 and len(val) == 8
    assert val[0]["image"].shape == (3, 48, 48)
    again = ensure_synthetic_images(tmp_path / "again", spec)
    a, b = (r / "val" / "cross" / "cross_0001.png" for r in (root, again))
    assert a.read_bytes() == b.read_bytes()


def test_the_backdrop_is_a_plaid_of_two_gratings():
    """The video scenes' backdrop, read with a Fourier transform: one colour whose luminance
    two gratings modulate, periods within ``GRATING_PERIOD``, a strong and a faint one at 45
    degrees or more from each other, and no clipped pixel."""
    from visualpath.data.synthetic import GRATING_PERIOD, GRATINGS, _plaid

    size, side = 64, 256
    for seed in range(4):
        backdrop = _plaid(side, size, np.random.default_rng([seed]))
        assert 0 < backdrop.min() and backdrop.max() < 1
        chroma = backdrop / backdrop.sum(-1, keepdims=True)
        assert np.ptp(chroma.reshape(-1, 3), axis=0).max() < 1e-5  # luminance alone is modulated
        lum = backdrop.mean(-1)
        spectrum = np.abs(np.fft.fft2(lum - lum.mean())) / lum.size * 2 / lum.mean()
        freqs = np.fft.fftfreq(side)
        fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
        peaks = []
        for _ in range(2):
            k = np.unravel_index(np.argmax(spectrum), spectrum.shape)
            f = np.hypot(fy[k], fx[k])
            peaks.append((spectrum[max(k[0] - 2, 0):k[0] + 3, max(k[1] - 2, 0):k[1] + 3].sum(),
                          1 / f, np.arctan2(fy[k], fx[k]) % np.pi))
            near = np.hypot(fy - fy[k], fx - fx[k]) < 4 / side
            near |= np.hypot(fy + fy[k], fx + fx[k]) < 4 / side  # and its conjugate
            spectrum[near] = 0
        (strong, p1, a1), (faint, p2, a2) = peaks
        for period in (p1, p2):
            assert GRATING_PERIOD[0] * size * 0.9 <= period <= GRATING_PERIOD[1] * size * 1.1, (seed, period)
        assert 0.5 * GRATINGS[1] / GRATINGS[0] < faint / strong < 2 * GRATINGS[1] / GRATINGS[0], (seed, faint / strong)
        apart = min(abs(a1 - a2), np.pi - abs(a1 - a2))
        assert apart > np.deg2rad(40), (seed, np.rad2deg(apart))
