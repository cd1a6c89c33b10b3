import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage import data, feature

from areas import V2Contour
from areas.v2_contour import edge_map
from visualpath import TargetInput
from visualpath.tokens import Layout


def _inp(pixels, contour=None, modality="image"):
    layout = Layout(modality, tube=2 if modality == "video" else 1)
    return TargetInput(pixels=pixels, layout=layout, batch={}, maps={} if contour is None else {"contour": contour})


def test_cached_contour_is_patchified_as_the_target():
    contour = (torch.rand(2, 1, 4, 32, 32) > 0.9).float()
    inp = _inp(torch.rand(2, 3, 4, 32, 32), contour, "video")
    area = V2Contour()
    target = area.target(inp)
    assert area.source(inp) == "cache"
    assert target.shape == (2, 2 * 2 * 2, 2 * 16 * 16) == (2, 8, area.target_dim(inp.layout))
    # token (t=1, h=0, w=1), value (pt=0, ph=5, pw=7) is frame 2, row 5, col 16+7
    assert target[1, 4 + 1].view(2, 16, 16)[0, 5, 7] == contour[1, 0, 2, 5, 23]


def test_edge_detector_finds_the_boundary_of_a_square():
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, 16:48, 16:48] = 1.0
    inp = _inp(image)
    area = V2Contour()
    assert area.source(inp) == "sobel"
    edges = area.contour(inp)[0, 0]
    ys, xs = torch.nonzero(edges, as_tuple=True)
    assert len(ys) > 4 * 28  # the whole outline
    border = torch.minimum(torch.minimum((ys - 16).abs(), (ys - 47).abs()),
                           torch.minimum((xs - 16).abs(), (xs - 47).abs()))
    assert border.max() <= 1  # every contour pixel lies on the square's edge
    assert edges[24:40, 24:40].sum() == 0 and edges[:8].sum() == 0


def test_edges_on_a_photograph_agree_with_skimage_canny():
    img = data.camera().astype(np.float64) / 255
    ours = edge_map(torch.from_numpy(img)[None, None].float())[0, 0].numpy().astype(bool)
    canny = feature.canny(img, sigma=1.0)
    precision = (ours & ndi.binary_dilation(canny)).sum() / ours.sum()
    assert 0.005 < ours.mean() < 0.2
    assert precision > 0.95  # our contours are Canny edges (within one pixel)


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_constant_frames_have_no_contours_and_finite_targets(value):
    for normalize in (False, True):
        target = V2Contour(normalize=normalize).target(_inp(torch.full((2, 3, 4, 32, 32), value), modality="video"))
        assert torch.isfinite(target).all() and (target == 0).all()


def test_photograph_targets_are_binary_and_finite(photos):
    target = V2Contour().target(_inp(photos))
    assert target.shape == (3, 16, 256)
    assert set(target.unique().tolist()) <= {0.0, 1.0}
