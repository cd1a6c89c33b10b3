"""A user's target of any scale learns at the other areas' scale: the loss sees it standardised
per sample unless the area sets its own scale (decision D22)."""

from typing import ClassVar

import attrs
import pytest
import torch

import areas
from tests.conftest import TINY_DECODER, random_batch
from visualpath import Area, Pathway, RandomMask, Stream, TargetInput, vit_tiny
from visualpath.tokens import Layout, standardise_sample


@attrs.frozen(kw_only=True)
class Contrast(Area):
    """A small-scale target: local contrast of the pixels, one value per pixel, times ``scale``."""

    name: str = "V3"
    blocks: int = 1
    scale: float = 0.01

    def target_dim(self, layout):
        return layout.tube * layout.patch ** 2

    def target(self, inp):
        contrast = (inp.pixels - inp.pixels.mean(dim=(-1, -2), keepdim=True)).abs().mean(1, keepdim=True)
        return self.scale * inp.layout.patchify(contrast)


@attrs.frozen(kw_only=True)
class OwnScale(Contrast):
    target_scale: ClassVar[str] = "raw contrast, kept small on purpose"


def _model(cls, **kw):
    torch.manual_seed(0)
    stream = Stream("ventral", "image", [cls(decoder=TINY_DECODER, **kw)], mask=RandomMask(0.75))
    return Pathway(encoder=vit_tiny(depth=1, width=32, heads=2), streams=[stream]).build()


def test_standardise_sample_gives_each_sample_mean_0_and_variance_1_keeping_its_structure():
    x = torch.rand(3, 16, 1) * torch.tensor([0.01, 1.0, 100.0]).view(3, 1, 1)  # one value per token
    y = standardise_sample(x)
    assert torch.allclose(y.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 2), correction=0), torch.ones(3), atol=1e-3)
    order = x.squeeze(-1).argsort(dim=1)
    assert torch.equal(y.squeeze(-1).argsort(dim=1), order)  # per token (MAE's) would give zeros


def test_a_user_target_reaches_the_loss_standardised_and_an_area_with_its_own_scale_as_it_is():
    layout = Layout("image", 8, 1, 3)
    inp = TargetInput(pixels=torch.rand(2, 3, 32, 32), layout=layout)
    raw = Contrast(blocks=1).target(inp)
    assert raw.std() < 0.01  # the scale that learned nothing
    assert torch.allclose(Contrast(blocks=1).loss_target(inp), standardise_sample(raw))
    assert torch.equal(OwnScale(blocks=1).loss_target(inp), raw)
    model = _model(Contrast)
    out = model(random_batch(size=32) | {"image": random_batch(size=32)["video"][:, :, 0]})
    target = out.streams["ventral"].targets["V3"]
    assert 0.3 < float(target.std()) < 3  # at the masked tokens: the unit scale, not 0.01


@pytest.mark.parametrize("name", [n for n in areas.__all__ if isinstance(getattr(areas, n), type)
                                  and issubclass(getattr(areas, n), Area)])
def test_every_area_of_ours_says_how_it_scales_its_target(name):
    """Our areas keep their own scale (MAE's per-token normalisation): their targets and
    losses are what they were."""
    assert isinstance(getattr(areas, name).target_scale, str)


def _fit_left(cls, steps=40) -> float:
    """The target left (MSE over the target's variance, at the masked tokens) after ``steps``
    steps on one batch, read on the raw target's scale."""
    model = _model(cls)
    batch = {"image": random_batch(b=4, size=32)["video"][:, :, 0]}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        model(batch, generator=torch.Generator().manual_seed(1)).loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(batch, generator=torch.Generator().manual_seed(1)).streams["ventral"]
    pred, target = out.predictions["V3"], out.targets["V3"]
    return float(((pred - target) ** 2).mean() / target.var(correction=0))


def test_a_small_scale_target_learns_when_standardised_and_not_when_left_raw():
    """40 steps on one batch: standardised, the area fits its target (0.47 of its variance
    left, measured); raw at a 0.01 scale, its predictions stay at the decoder's own scale,
    worse than the target's mean by three orders of magnitude (1308), as the issue's V3 did."""
    standardised, raw = _fit_left(Contrast), _fit_left(OwnScale)
    assert standardised < 0.8 and raw > 1, (standardised, raw)
