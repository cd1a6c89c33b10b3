"""analysis.fit.target_fit: the unexplained fraction of each target's variance, by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from analysis.fit import target_fit


class _Fixed(torch.nn.Module):
    """A model whose prediction is ``scale`` times the target plus ``offset``."""

    def __init__(self, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, batch, generator=None):
        x = batch["video"].float()
        target = x.flatten(2)  # (B, C, T*H*W): C "tokens" of T*H*W values each
        return SimpleNamespace(streams={"dorsal": SimpleNamespace(
            targets={"MT": target}, predictions={"MT": self.scale * target + self.offset})})


def test_fraction_by_hand():
    torch.manual_seed(0)
    clips = torch.rand(6, 3, 2, 4, 4)
    t = clips.flatten(2).reshape(-1, 32).double()
    total = ((t - t.mean(0)) ** 2).sum()
    for scale, offset in ((1.0, 0.0), (0.5, 0.0), (0.0, 0.0), (1.0, 0.1)):
        expected = float((((scale - 1) * t + offset) ** 2).sum() / total)
        got = target_fit(_Fixed(scale, offset), clips, batch_size=4, batches=None)["dorsal"]["MT"]
        assert abs(got - expected) < 1e-6, (scale, offset, got, expected)
    assert target_fit(_Fixed(1.0), clips, batch_size=4)["dorsal"]["MT"] == 0.0


def test_mean_prediction_scores_one():
    """Predicting each dimension's mean over the tokens measured leaves all the variance."""
    clips = torch.rand(8, 3, 2, 4, 4)
    mean = clips.flatten(2).reshape(-1, 32).mean(0)

    class Mean(_Fixed):
        def forward(self, batch, generator=None):
            out = super().forward(batch)
            pred = out.streams["dorsal"].predictions
            pred["MT"] = mean.expand_as(pred["MT"])
            return out

    assert abs(target_fit(Mean(0.0), clips, batch_size=8)["dorsal"]["MT"] - 1.0) < 1e-5


def test_restores_training_mode():
    model = _Fixed(1.0).train()
    target_fit(model, torch.rand(2, 3, 2, 4, 4))
    assert model.training


def test_neighbour_mean_by_hand():
    from analysis.fit import _neighbour_mean

    x = torch.arange(9.0).reshape(1, 3, 3, 1)  # one frame, 3x3 grid, one value per token
    n = _neighbour_mean(x)[0, ..., 0]
    assert n[1, 1] == (36 - 4) / 8  # every other token
    assert n[0, 0] == (1 + 3 + 4) / 3  # the three inside the grid
    assert n[0, 1] == (0 + 2 + 3 + 4 + 5) / 5


class _Targets(torch.nn.Module):
    """A graph whose one target per token is given: ``targets(batch, stream)`` only."""

    def __init__(self, field) -> None:
        super().__init__()
        self.field = field
        self.streams = {"dorsal": SimpleNamespace(layout=SimpleNamespace(is_video=True, grid=lambda shape: (2, 6, 6)))}
        self.pathway = SimpleNamespace(stream=lambda name: SimpleNamespace(frame_step=1))

    def target_input(self, batch, stream):
        return SimpleNamespace(layout=self.streams[stream].layout, pixels=batch["video"])

    def targets(self, batch, stream, inp=None):
        return {"MT": self.field(batch["video"].shape[0])}


def test_neighbour_fit_separates_smooth_from_independent_targets():
    from analysis.fit import neighbour_fit

    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")

    def smooth(b):  # each clip a plane of random slope: a token's neighbours average to it inside the grid
        slopes = torch.randn(b, 1, 1, 1, 2)
        plane = slopes[..., 0] * rows + slopes[..., 1] * cols  # (b, 1, 6, 6)
        return plane.expand(b, 2, 6, 6).reshape(b, 72, 1)

    def noise(b):
        return torch.randn(b, 72, 3)

    clips = torch.zeros(32, 3, 4, 12, 12)
    assert neighbour_fit(_Targets(smooth), clips, batches=None, batch_size=8)["dorsal"]["MT"] < 0.1
    assert neighbour_fit(_Targets(noise), clips, batches=None, batch_size=8)["dorsal"]["MT"] > 0.97


def test_neighbour_mean_keeps_tokens_and_channels_apart_in_clips():
    from analysis.fit import _neighbour_mean

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 6)  # (B, T, H, W, P): a clip grid with 6 values per token
    got = _neighbour_mean(x)
    expected = torch.empty_like(x)
    for b in range(2):
        for t in range(3):
            for i in range(4):
                for j in range(5):
                    around = [x[b, t, i + di, j + dj] for di in (-1, 0, 1) for dj in (-1, 0, 1)
                              if (di or dj) and 0 <= i + di < 4 and 0 <= j + dj < 5]
                    expected[b, t, i, j] = torch.stack(around).mean(0)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("frame_step", [1, 2])
def test_neighbour_fit_of_a_real_graph_reads_what_each_stream_sees(frame_step):
    """Every area of both streams, on the grid the stream sees (every ``frame_step``-th frame)."""
    import attrs

    from analysis.fit import neighbour_fit
    from tests.conftest import random_batch, tiny_pathway
    from visualpath import Pathway

    spec = tiny_pathway(share="none")
    spec = Pathway(encoder=spec.encoder, streams=[spec.streams[0], attrs.evolve(spec.streams[1], frame_step=frame_step)])
    clips = random_batch(b=4, t=8)["video"]
    fit = neighbour_fit(spec.build().eval(), clips, batches=None, batch_size=2)
    assert {s: set(a) for s, a in fit.items()} == {"ventral": {"V1", "V2", "V4"}, "dorsal": {"V1", "V2", "MT"}}
    # independent random pixels: no token's target is given away by its neighbours'
    assert all(0.9 < v < 1.1 for areas in fit.values() for v in areas.values()), fit


def test_interpolate_visible_by_hand():
    from analysis.fit import _grid_coords, interpolate_visible

    coords = _grid_coords((1, 4), "cpu")  # one row of four tokens
    assert coords.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3]]
    t = torch.tensor([[[1.0], [10.0], [3.0], [7.0]]], dtype=torch.float64)
    keep, masked = torch.tensor([[0, 3]]), torch.tensor([[1, 2]])
    got = interpolate_visible(t, keep, masked, coords)[0, :, 0]
    # token 1: distances 1 and 2, weights 1 and 1/4; token 2: distances 2 and 1
    assert torch.allclose(got, torch.tensor([(1 + 7 / 4) / 1.25, (1 / 4 + 7) / 1.25], dtype=torch.float64))
    got = interpolate_visible(t, keep, masked, coords, power=1.0)[0, :, 0]
    assert torch.allclose(got, torch.tensor([(1 + 7 / 2) / 1.5, (1 / 2 + 7) / 1.5], dtype=torch.float64))


class _Masked(_Targets):
    """A graph with given targets and one fixed mask: tokens of even column visible."""

    def __init__(self, field) -> None:
        super().__init__(field)
        from visualpath.masking import Mask

        def rule(b, grid, device=None, generator=None):
            hidden = (torch.arange(72) % 2 == 1).expand(b, 72)
            return Mask.from_hidden(hidden.clone())

        self.pathway = SimpleNamespace(stream=lambda name: SimpleNamespace(frame_step=1, mask=rule))


def test_visible_fit_separates_smooth_from_independent_targets():
    from analysis.fit import visible_fit

    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")

    def rows_only(b):  # constant along each row: the visible tokens beside a masked one equal it
        level = torch.randn(b, 1, 6, 1) * rows[None, None]
        return level.expand(b, 2, 6, 6).reshape(b, 72, 1)

    def noise(b):
        return torch.randn(b, 72, 3)

    clips = torch.zeros(32, 3, 4, 12, 12)
    assert visible_fit(_Masked(rows_only), clips, batches=None, batch_size=8)["dorsal"]["MT"] < 0.35
    assert visible_fit(_Masked(noise), clips, batches=None, batch_size=8)["dorsal"]["MT"] > 0.97


@pytest.mark.parametrize("frame_step", [1, 2])
def test_visible_fit_of_a_real_graph_uses_each_stream_s_mask(frame_step):
    import attrs

    from analysis.fit import visible_fit
    from tests.conftest import random_batch, tiny_pathway
    from visualpath import Pathway

    spec = tiny_pathway(share="none")
    spec = Pathway(encoder=spec.encoder, streams=[spec.streams[0], attrs.evolve(spec.streams[1], frame_step=frame_step)])
    model = spec.build().eval()
    clips = random_batch(b=4, t=8)["video"]
    fit = visible_fit(model, clips, batches=None, batch_size=2)
    assert {s: set(a) for s, a in fit.items()} == {"ventral": {"V1", "V2", "V4"}, "dorsal": {"V1", "V2", "MT"}}
    # independent random pixels: the visible tokens give nothing away
    assert all(0.9 < v <= 1.0 for areas in fit.values() for v in areas.values()), fit
    assert fit == visible_fit(model, clips, batches=None, batch_size=2)  # masks from a fixed seed


def test_visible_fit_draws_each_stream_s_own_mask_on_its_grid(monkeypatch):
    """The rule of each stream is called with the grid that stream sees (frames every
    ``frame_step``), and only its visible tokens feed the interpolation."""
    import attrs

    import analysis.fit as fit
    from tests.conftest import random_batch, tiny_pathway
    from visualpath import Pathway

    spec = tiny_pathway(share="none")
    spec = Pathway(encoder=spec.encoder, streams=[spec.streams[0], attrs.evolve(spec.streams[1], frame_step=2)])
    model = spec.build().eval()
    seen = []
    real = fit.interpolate_visible

    def spy(targets, keep, masked, coords, power=2.0):
        seen.append((targets.shape[1], keep.shape[1], masked.shape[1], len(coords)))
        return real(targets, keep, masked, coords, power)

    monkeypatch.setattr(fit, "interpolate_visible", spy)
    clips = random_batch(b=2, t=8)["video"]
    fit.visible_fit(model, clips, batches=None, batch_size=2)
    ventral_grid = model.streams["ventral"].layout.grid(clips[:, :, 0].shape)
    dorsal_grid = model.streams["dorsal"].layout.grid(clips[:, :, ::2].shape)
    for (n, keep, masked, coords), grid, rule in zip(seen[::3], (ventral_grid, dorsal_grid), spec.streams):
        tokens = math.prod(grid)
        assert n == coords == tokens and keep + masked == tokens
        assert masked == rule.mask.count(grid)


def test_channel_means_by_hand():
    from analysis.fit import channel_means

    tokens = torch.tensor([[1.0, 10.0, 3.0, 20.0], [0.0, 0.0, 2.0, 4.0]])  # 2 pixels x 2 channels each
    expected = torch.tensor([[2.0, 15.0, 2.0, 15.0], [1.0, 2.0, 1.0, 2.0]])
    torch.testing.assert_close(channel_means(tokens, 2), expected)
    with pytest.raises(ValueError, match="do not split into 3 channels"):
        channel_means(tokens, 3)


def test_channel_fit_splits_what_a_token_holds_from_where_inside_it():
    """Tokens of one colour each, brightening at a constant rate: V4's pixels and MT's frame
    differences are their channel means (about 0 left); random pixels are not (about 1)."""
    from analysis.fit import channel_fit
    from tests.conftest import random_batch, tiny_pathway

    model = tiny_pathway(share="none").build().eval()
    p = model.streams["dorsal"].layout.patch
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 100, (4, 3, 1, 32 // p, 32 // p), generator=g)
    rate = torch.randint(1, 15, (4, 3, 1, 32 // p, 32 // p), generator=g)
    flat = (base + rate * torch.arange(8).view(1, 1, 8, 1, 1)).repeat_interleave(p, -1).repeat_interleave(p, -2)
    fit = channel_fit(model, flat.to(torch.uint8), batches=None, batch_size=2)
    assert {s: set(a) for s, a in fit.items()} == {"ventral": {"V1", "V2", "V4"}, "dorsal": {"V1", "V2", "MT"}}
    assert fit["ventral"]["V4"] < 1e-6 and fit["dorsal"]["MT"] < 1e-6, fit
    noisy = channel_fit(model, random_batch(b=4, t=8)["video"], batches=None, batch_size=2)
    assert noisy["ventral"]["V4"] > 0.9 and noisy["dorsal"]["MT"] > 0.9, noisy
    assert noisy["ventral"]["V2"] > 0.9  # one channel: its mean is the token's contour density


def test_channel_fit_reads_each_area_s_own_channels(monkeypatch):
    """V1's channels are its orientations x wavelengths, V2's map has one, V4's and MT's three."""
    import analysis.fit as fit
    from tests.conftest import random_batch, tiny_pathway

    model = tiny_pathway(share="none").build().eval()
    seen = []
    real = fit.channel_means

    def spy(targets, channels):
        seen.append(channels)
        return real(targets, channels)

    monkeypatch.setattr(fit, "channel_means", spy)
    fit.channel_fit(model, random_batch(b=2, t=8)["video"], batches=None, batch_size=2)
    v1 = next(a for a in model.pathway.stream("ventral").areas if a.name == "V1")
    gabor = v1.orientations * len(v1.wavelengths)
    assert seen == [gabor, 1, 3, gabor, 1, 3]  # ventral V1, V2, V4; dorsal V1, V2, MT


class _MeansOnly(torch.nn.Module):
    """Predicts each token's channel means exactly and nothing inside it: 2x2-pixel tokens of
    3 channels (12 values)."""

    def __init__(self) -> None:
        super().__init__()
        from areas.mt_motion import MTMotion

        area = MTMotion(blocks=1)  # its own target_side and target_channels, on 2x2-pixel tokens
        self.streams = {"dorsal": SimpleNamespace(layout=SimpleNamespace(tube=1, patch=2))}
        self.pathway = SimpleNamespace(stream=lambda name: SimpleNamespace(areas=[area]))

    def forward(self, batch, generator=None):
        from analysis.fit import channel_means

        g = torch.Generator().manual_seed(int(batch["video"].float().sum()) % 1000)
        target = torch.randn(batch["video"].shape[0], 5, 12, generator=g)
        pred = channel_means(target.reshape(-1, 12), 3).reshape(target.shape)
        return SimpleNamespace(streams={"dorsal": SimpleNamespace(targets={"MT": target}, predictions={"MT": pred})})


def test_target_fit_scores_each_part_of_the_target():
    clips = torch.arange(8 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(8, 3, 2, 2, 2)
    model = _MeansOnly()
    means = target_fit(model, clips, batches=None, batch_size=4, part="means")["dorsal"]["MT"]
    inside = target_fit(model, clips, batches=None, batch_size=4, part="inside")["dorsal"]["MT"]
    whole = target_fit(model, clips, batches=None, batch_size=4)["dorsal"]["MT"]
    # nothing predicted inside: the residuals' own size over their per-dimension spread, 1 up to sampling
    assert means == pytest.approx(0.0, abs=1e-12) and inside == pytest.approx(1.0, abs=0.05)
    assert 0.5 < whole < 1.0  # a quarter of random values' variance lies in 3 means of 4 pixels each
    with pytest.raises(ValueError, match="part must be"):
        target_fit(model, clips, part="colour")


def test_the_average_share_is_what_predicting_the_average_target_saves_against_predicting_zero():
    """A model that predicts each value's average over the test tokens: it leaves all of the
    variance (1) while its squared error is (1 - average share) of the target's mean square."""
    from analysis.fit import target_fit_details

    g = torch.Generator().manual_seed(0)
    target = torch.randn(64, 5, 4, generator=g) + torch.tensor([2.0, 0.0, -1.0, 0.0])

    class _Average(torch.nn.Module):
        def forward(self, batch, generator=None):
            pred = target.mean((0, 1)).expand_as(target)
            return SimpleNamespace(streams={"s": SimpleNamespace(targets={"A": target}, predictions={"A": pred})})

    details = target_fit_details(_Average(), torch.zeros(64, 3, 1, 2, 2), batches=None, batch_size=64)["s"]["A"]
    mean_square = float((target ** 2).mean())
    assert details["left"] == pytest.approx(1.0, abs=1e-6)
    assert details["average_share"] == pytest.approx(1 - float(target.var((0, 1), unbiased=False).mean()) / mean_square)
    assert details["average_share"] == pytest.approx(5 / (5 + 4), abs=0.05)  # (4 + 1) of 9 per value on average


def test_the_table_explains_target_left_and_warns_when_an_area_is_worse_than_the_mean():
    import io

    from rich.console import Console

    from analysis.report import print_table, target_left_warnings

    row = {"stream": "ventral", "area": "V3", "probe_top1": 0.5, "probe_ci95": (0.4, 0.6), "knn_top1": 0.4,
           "knn_ci95": (0.3, 0.5), "random_init_probe_top1": 0.3, "osi": 0.1, "circular_variance": 0.9, "dsi": None,
           "responsive": 0.5, "target_left": 7.18, "target_left_neighbours": 0.9}
    fine = {**row, "area": "V1", "target_left": 0.6}
    warnings = target_left_warnings([row, fine])
    assert len(warnings) == 1 and warnings[0].startswith("ventral.V3 leaves 7.18") and "scale" in warnings[0]
    assert "training loss" not in warnings[0]  # its average share unknown: nothing said of it
    (averaged,) = target_left_warnings([{**row, "target_left": 1.02, "target_average_share": 0.16}])
    assert averaged.endswith("its training loss can read below 1 all the same (about 0.84 for a standardised "
                             "target): the loss is measured against predicting zero, and the target's average alone "
                             "accounts for 16% of its mean square")
    out = io.StringIO()
    print_table({"run_dir": "r", "rows": [row, fine], "chance": 0.1, "warnings": warnings, "figures": []},
                Console(file=out, width=200))
    text = " ".join(out.getvalue().split())
    assert "1 - R^2" in text and "worse than the" in text and "ventral.V3 leaves 7.18" in text
