"""MT: motion from frame differences (BIMM section 3.2, following MotionMAE).

"The motion information is derived by calculating the L1 difference between pixel values of
two temporally adjacent frames." For a clip ``f_0 .. f_{T-1}`` the motion frame at ``t`` is
``|f_{t+1} - f_t|``; the last frame, which has no successor, repeats the last difference
(``|f_{T-1} - f_{T-2}|``). Motion frames are tubed exactly like the pixels, so a token's
target is the motion over the same 2x16x16 tube, standardised per token.
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
class MTMotion(Area):
    """Absolute differences of adjacent frames; video streams only.

    Attributes:
        normalize: standardise each token's motion values; False predicts the raw
            differences in [0, 1].
        signed: predict ``f(t+1) - f(t)`` instead of its magnitude (the paper's target).
            The magnitude is the same for opposite directions of motion; the signed
            difference is not (an edge moving right brightens where an edge moving left
            darkens), so it can teach the direction selectivity that motivates MT. The
            paper's default is False.
    """

    target_scale: ClassVar[str] = "per token, MAE's normalisation, when normalize=true (the paper's)"
    modalities: ClassVar[tuple[str, ...]] = ("video",)

    name: str = attrs.field(default="MT", validator=area_name)
    blocks: int = attrs.field(default=8, validator=non_negative)
    decoder: DecoderSpec = attrs.field(factory=lambda: DecoderSpec(width=384, depth=4, heads=6))
    normalize: bool = True
    signed: bool = False

    def target_dim(self, layout: Layout) -> int:
        return layout.pixels_per_token * layout.channels

    def target(self, inp: TargetInput) -> Tensor:
        x = inp.pixels  # (B, C, T, H, W)
        if x.shape[2] < 2:
            raise ValueError(f"MTMotion needs clips of two or more frames, got {x.shape[2]}")
        motion = torch.empty_like(x)  # (B, C, T, H, W)
        torch.sub(x[:, :, 1:], x[:, :, :-1], out=motion[:, :, :-1])
        if not self.signed:
            motion.abs_()
        motion[:, :, -1:] = motion[:, :, -2:-1]
        tokens = inp.layout.patchify(motion)
        return normalize_tokens(tokens) if self.normalize else tokens
