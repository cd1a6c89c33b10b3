"""The direction-carrying MT target (decision D6b) against the paper's unsigned one, on a tiny
model trained on drifting gratings with each: what its MT decoder predicts for opposite
directions of motion, and the tuning probe's median DSI of its MT units (reported; at this
budget it does not separate the two targets, see the closing comment)."""

import math

import pytest
import torch

from analysis.tuning import area_responder, direction_tuning, drifting_gratings
from areas import MTMotion
from visualpath import DecoderSpec, Pathway, Stream, TubeMask, vit_tiny

SIZE, FRAMES = 32, 4


def _clips(batch: int, g: torch.Generator) -> torch.Tensor:
    """Drifting gratings in random directions, frequencies, speeds and phases: (B, 3, T, H, W)."""
    out = []
    for _ in range(batch):
        direction = float(torch.rand(1, generator=g)) * 360
        frequency = 1 / (6 + 6 * float(torch.rand(1, generator=g)))
        speed = 1 + float(torch.rand(1, generator=g))
        clip = drifting_gratings(SIZE, FRAMES, [direction], frequency, speed, phases=1)[0, 0]
        shift = float(torch.rand(1, generator=g)) * 2 * math.pi  # a random phase: roll along the normal
        out.append(torch.roll(clip, shifts=int(shift / (2 * math.pi) / frequency), dims=-1))
    return torch.stack(out)


def _train(signed: bool, steps: int = 400, seed: int = 0):
    torch.manual_seed(seed)
    mt = MTMotion(blocks=2, signed=signed, decoder=DecoderSpec(width=32, depth=1, heads=2))
    graph = Pathway(encoder=vit_tiny(width=32, heads=2, depth=2, patch=8),
                    streams=[Stream("dorsal", "video", [mt], mask=TubeMask(0.75))])
    model = graph.build()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model({"video": _clips(16, g)}, generator=g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _opposite_predictions(model) -> float:
    """Correlation of MT's predictions, at the same masked tokens, for gratings drifting in
    opposite directions (8 directions, each against its opposite)."""
    stim = drifting_gratings(SIZE, FRAMES, torch.arange(0, 360, 45), 1 / 8, 1.5, phases=1)[:, 0]  # (8, 3, T, H, W)
    mask = model.pathway.streams[0].mask(8, model.streams["dorsal"].layout.grid(stim.shape),
                                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model({"video": stim}, masks={"dorsal": mask}).streams["dorsal"].predictions["MT"]
    a, b = pred[:4].flatten(), pred[4:].flatten()  # direction d against d + 180
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _median_dsi(model) -> float:
    tuning = direction_tuning(area_responder(model, "dorsal", frames=FRAMES), SIZE, FRAMES, frequency=1 / 8,
                              speed=1.5)
    return float(tuning.dsi.nanmedian())


@pytest.mark.slow  # two tiny models, 400 steps each: about a minute and a half on 2 cores (CI runs it)
def test_signed_mt_predicts_opposite_motion_with_opposite_sign():
    unsigned, signed = _train(False), _train(True)
    r_unsigned, r_signed = _opposite_predictions(unsigned), _opposite_predictions(signed)
    dsi_unsigned, dsi_signed = _median_dsi(unsigned), _median_dsi(signed)
    print(f"opposite-direction correlation of MT predictions: unsigned {r_unsigned:.2f}, signed {r_signed:.2f}; "
          f"median DSI of MT units: unsigned {dsi_unsigned:.3f}, signed {dsi_signed:.3f}")
    assert r_unsigned > 0.5  # the magnitude is the same both ways (measured 0.95)
    assert r_signed < -0.1  # the signed difference flips, and the decoder follows (measured -0.25)
    # Measured at 400 steps: median DSI of token-averaged MT units 0.38 (unsigned) and 0.04
    # (signed). The direction the signed decoder reads out is not a unit-level selectivity of
    # the pooled features; the tuning probe does not show it at this budget.
    assert math.isfinite(dsi_unsigned) and math.isfinite(dsi_signed)
