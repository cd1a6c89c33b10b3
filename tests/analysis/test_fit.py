"""analysis.fit.target_fit: the unexplained fraction of each target's variance, by hand."""

from types import SimpleNamespace

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
