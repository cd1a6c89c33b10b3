"""V4: colour and shape from RGB pixels (BIMM section 3.2, "V4 ... RGB pixels").

Images use MAE's normalised-pixel target (each 16x16x3 patch standardised as a whole);
clips use VideoMAE's target (each 2x16x16 tube standardised per colour channel), or with
``per_channel=False`` each tube standardised as a whole, as MAE does a patch.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from areas._common import normalize_tokens
from visualpath import Area, DecoderSpec, Layout, TargetInput
from visualpath.area import area_name
from visualpath._validate import non_negative


@attrs.frozen(kw_only=True)
class V4Color(Area):
    """RGB pixels of masked patches.

    Attributes:
        normalize: standardise each patch (MAE norm-pix / VideoMAE per-channel); False
            predicts raw pixels in [0, 1].
        per_channel: for tubes, standardise each colour channel on its own (VideoMAE, the
            default); False standardises the tube as a whole, as MAE does an image patch.
            Per-channel standardisation removes a patch's colour (a flat red patch and a flat
            blue one both become their noise), which is most of what a small model can
            predict at a masked tube (decision S6). Images always use MAE's rule.
    """

    target_scale: ClassVar[str] = "per token, MAE's normalisation, when normalize=true (the paper's)"
    name: str = attrs.field(default="V4", validator=area_name)
    blocks: int = attrs.field(default=8, validator=non_negative)
    decoder: DecoderSpec = attrs.field(factory=lambda: DecoderSpec(width=384, depth=4, heads=6))
    normalize: bool = True
    per_channel: bool = True

    def target_dim(self, layout: Layout) -> int:
        return layout.pixels_per_token * layout.channels

    def target(self, inp: TargetInput) -> Tensor:
        x = inp.layout.patchify(inp.pixels)  # (B, N, P) with P ordered (tube, ph, pw, C)
        if not self.normalize:
            return x
        if not inp.layout.is_video or not self.per_channel:
            return normalize_tokens(x)
        B, N, P = x.shape
        C = inp.layout.channels
        x = x.view(B, N, P // C, C)
        # VideoMAE: (x - mean) / (std + 1e-6) over the tube's pixels, per channel.
        var, mean = torch.var_mean(x, dim=-2, keepdim=True)  # one pass over x
        return (x - mean).div_(var.sqrt() + 1e-6).view(B, N, P)
