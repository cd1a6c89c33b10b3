"""Each area alone can fit one small batch with a fixed mask: its readout is learnable."""

import pytest
import torch

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from visualpath import DecoderSpec, Mask, Pathway, Stream, ViTSpec

DECODER = DecoderSpec(width=64, depth=1, heads=2)


@pytest.mark.parametrize(
    "area, modality",
    [(V1Gabor, "image"), (V2Contour, "image"), (V4Color, "image"), (V1Gabor, "video"), (MTMotion, "video")],
)
def test_area_overfits_one_batch(area, modality, photos):
    torch.manual_seed(0)
    encoder = ViTSpec(width=64, depth=2, heads=2)
    model = Pathway(encoder=encoder, streams=[Stream("s", modality, [area(blocks=2, decoder=DECODER)])]).build()
    if modality == "image":
        batch = {"image": photos[:2, :, :32, :32]}
        hidden = torch.tensor([[True, False, True, False], [False, True, False, True]])
    else:
        clip = torch.stack([photos[:2, :, 2 * t:32 + 2 * t, 4 * t:32 + 4 * t] for t in range(4)], dim=2)
        batch = {"video": clip}  # content drifting down and right
        hidden = torch.tensor([[True, False, True, False] * 2, [False, True, False, True] * 2])
    mask = {"s": Mask.from_hidden(hidden)}
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(300):
        loss = model(batch, masks=mask).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])
