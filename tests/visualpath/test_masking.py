import pytest
import torch

from visualpath import Mask, RandomMask, TubeMask


@pytest.mark.parametrize("ratio, n, hidden", [(0.75, 196, 147), (0.5, 10, 5), (0.9, 100, 90)])
def test_random_mask_hides_an_exact_count_per_sample(ratio, n, hidden):
    mask = RandomMask(ratio)(8, (n,), generator=torch.Generator().manual_seed(0))
    assert mask.hidden.shape == (8, n)
    assert (mask.hidden.sum(1) == hidden).all()
    assert mask.keep.shape == (8, n - hidden) and mask.masked.shape == (8, hidden)


def test_random_mask_differs_between_samples():
    mask = RandomMask(0.75)(4, (14, 14), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(mask.hidden[0], mask.hidden[1])


def test_index_views_agree_with_the_boolean_mask():
    mask = RandomMask(0.6)(3, (5, 5))
    for b in range(3):
        assert not mask.hidden[b, mask.keep[b]].any()
        assert mask.hidden[b, mask.masked[b]].all()
        assert torch.equal(torch.sort(torch.cat([mask.keep[b], mask.masked[b]])).values, torch.arange(25))
        assert torch.equal(mask.keep[b], mask.keep[b].sort().values)


def test_tube_mask_is_identical_across_time():
    t, h, w = 8, 14, 14
    mask = TubeMask(0.9)(4, (t, h, w), generator=torch.Generator().manual_seed(0))
    per_frame = mask.hidden.view(4, t, h * w)
    assert (per_frame == per_frame[:, :1]).all()
    assert (per_frame.sum(-1) == round(0.9 * h * w)).all()  # 176 of 196 in every frame
    assert mask.num_visible == t * (h * w - 176)


def test_fixed_boolean_mask_is_checked_for_equal_counts():
    hidden = torch.tensor([[True, False, True], [True, False, False]])
    with pytest.raises(ValueError, match="same number"):
        Mask.from_hidden(hidden)
    ok = Mask.from_hidden(torch.tensor([[True, False, True], [False, True, True]]))
    assert ok.keep.tolist() == [[1], [0]] and ok.masked.tolist() == [[0, 2], [1, 2]]


@pytest.mark.parametrize("rule", [RandomMask, TubeMask])
@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_open_unit_interval_is_rejected(rule, ratio):
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        rule(ratio)


def test_ratio_that_hides_everything_on_a_small_grid_is_rejected():
    with pytest.raises(ValueError, match="at least one"):
        TubeMask(0.9)(1, (2, 2, 2))

