"""CKA, RDMs and RSA against their defining properties, direct formulas and scipy."""

import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

from analysis.similarity import cka, rdm, rsa, similarity_matrix


def _x(n=40, d=30, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kernel, unbiased", [("linear", False), ("linear", True), ("rbf", False), ("rbf", True)])
def test_cka_of_a_representation_with_itself_is_one(kernel, unbiased):
    assert cka(_x(), _x(), kernel, unbiased) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(kernel):
    x, y = _x(), _x(seed=1)[:, :12] + _x()[:, :12]
    q, _ = torch.linalg.qr(_x(30, 30, seed=2))
    for unbiased in (False, True):
        base = cka(x, y, kernel, unbiased)
        assert cka(3.7 * x @ q, y, kernel, unbiased) == pytest.approx(base, abs=1e-9)


def test_unbiased_cka_of_independent_features_is_near_zero_where_biased_is_not():
    x, y = _x(64, 512, seed=3), _x(64, 512, seed=4)
    assert abs(cka(x, y, unbiased=True)) < 0.05
    assert cka(x, y) > 0.5  # the biased estimate is inflated at few items and many dimensions


def test_linear_cka_equals_the_feature_space_formula():
    """Kornblith et al., eq. 5: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) on centred columns."""
    x, y = _x(12, 5, seed=5), _x(12, 7, seed=6)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert cka(x, y) == pytest.approx(float(direct), abs=1e-12)


@pytest.mark.parametrize("metric", ["correlation", "euclidean"])
def test_rdms_equal_scipy_pdist(metric):
    x = _x(15, 9, seed=7)
    d = rdm(x, metric)
    i, j = torch.triu_indices(15, 15, offset=1)
    assert torch.allclose(d[i, j], torch.from_numpy(pdist(x.numpy(), metric)), atol=1e-10)
    assert torch.equal(d, d.T) and (d.diagonal() == 0).all()


def test_rsa_equals_scipy_spearman_on_the_upper_triangles_ties_included():
    a, b = rdm(_x(20, 6, seed=8)), rdm(_x(20, 6, seed=9), "euclidean")
    b = (b * 2).round() / 2  # many ties
    i, j = torch.triu_indices(20, 20, offset=1)
    assert rsa(a, b) == pytest.approx(spearmanr(a[i, j].numpy(), b[i, j].numpy()).statistic, abs=1e-12)


def test_similarity_matrices_between_areas():
    feats = {"V1": _x(seed=10), "V2": _x(seed=10) @ torch.linalg.qr(_x(30, 30, seed=11))[0], "V4": _x(seed=12)}
    m = similarity_matrix(feats)
    assert m.values.shape == (3, 3) and m.rows == ["V1", "V2", "V4"]
    assert m["V1", "V2"] == pytest.approx(1.0) and m["V1", "V4"] < 0.9
    r = similarity_matrix(feats, {"MT": _x(seed=12)}, measure="rsa", prefix=("ventral.", "dorsal."))
    assert r["ventral.V4", "dorsal.MT"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="measure must be one of"):
        similarity_matrix(feats, measure="cosine")


def test_a_dominant_component_is_measured_for_the_saturation_warning():
    from analysis.similarity import top_component_share

    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 16, generator=g)
    one_way = torch.randn(200, 1, generator=g) * 10 @ torch.ones(1, 16) + 0.1 * torch.randn(200, 16, generator=g)
    assert top_component_share(spread) < 0.2 and top_component_share(one_way) > 0.95
