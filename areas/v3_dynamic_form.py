"""V3: dynamic form, the orientation energy of frame differences (beyond the paper).

The paper leaves V3 open ("Applying other neuroscience knowledge, involving the function of
V3 area ... still deserves further exploration"). What the literature agrees V3 adds to V1
and V2 is form carried by motion:

- most macaque V3 neurons are orientation selective and a large share are direction
  selective, more than in V1 or V2 (Felleman & Van Essen 1987, J. Neurophysiol. 57:889;
  Gegenfurtner, Kiper & Levitt 1997, J. Neurophysiol. 77:1906), and V3 projects to MT;
- human V3/V3A and the kinetic occipital region beside V3B respond to kinetic contours,
  boundaries defined by motion alone (Tootell et al. 1997, J. Neurosci. 17:7060; Orban et al.
  1995, PNAS 92:993; Zeki, Perry & Bartels 2003, Cereb. Cortex 13:189).

So V3's target is an oriented filter bank applied to what moved: the Gabor quadrature energy
of the luminance difference of adjacent frames, ``|G_theta,lambda * (L(t+1) - L(t))|``,
averaged over a coarse grid of cells (larger receptive fields than V1's), at the coarser of
V1's scales. A static scene gives no energy; a moving edge gives energy at its orientation,
a moving texture at the texture's orientations, a kinetic boundary along the boundary. The
energy is the same for a difference and its negative, so like the paper's MT target it does
not carry the direction's sign. As MT (decision D6), the last frame repeats the last
difference, and a token's target is its tube's frames, standardised per token.

It reuses V1's filter bank (:func:`areas.v1_gabor.gabor_energy`), so it costs one
FFT filtering of the clip per wavelength, like V1.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from areas._common import frames, luminance, normalize_tokens, unframes
from areas.v1_gabor import GaborBank, _mode, _wavelengths, gabor_energy
from visualpath import Area, DecoderSpec, Layout, TargetInput
from visualpath.area import area_name
from visualpath._validate import non_negative, positive, positive_float

__all__ = ["V3DynamicForm"]


@attrs.frozen(kw_only=True)
class V3DynamicForm(Area):
    """Orientation energy of adjacent-frame differences; video streams only.

    Attributes:
        orientations: orientations evenly spaced over [0, pi).
        wavelengths: wavelengths in pixels (V1's two coarser scales by default).
        bandwidth: half-magnitude bandwidth in octaves.
        cells: cells per patch side; energies are averaged within each cell (2: receptive
            fields twice as wide as V1's 4 cells per patch).
        mode: ``"auto"`` (default), ``"separable"``, ``"fft"`` or ``"direct"``, as :class:`V1Gabor`.
        normalize: standardise each token's values.
    """

    target_scale: ClassVar[str] = "per token, MAE's normalisation, when normalize=true"
    modalities: ClassVar[tuple[str, ...]] = ("video",)

    name: str = attrs.field(default="V3", validator=area_name)
    blocks: int = attrs.field(default=2, validator=non_negative)
    decoder: DecoderSpec = attrs.field(factory=lambda: DecoderSpec(width=384, depth=2, heads=6))
    orientations: int = attrs.field(default=8, validator=positive)
    wavelengths: tuple[float, ...] = attrs.field(default=(8.0, 16.0), converter=tuple, validator=_wavelengths)
    bandwidth: float = attrs.field(default=1.0, validator=positive_float)
    cells: int = attrs.field(default=2, validator=positive)
    mode: str = attrs.field(default="auto", validator=_mode)
    normalize: bool = True

    @property
    def channels(self) -> int:
        return self.orientations * len(self.wavelengths)

    def target_dim(self, layout: Layout) -> int:
        return layout.tube * self.cells * self.cells * self.channels

    def target_side(self, layout: Layout) -> int:
        return self.cells

    def difference(self, pixels: Tensor) -> Tensor:
        """``(B, 1, T, H, W)`` luminance differences (0-255 units) of ``(B, 3, T, H, W)`` pixels
        in [0, 1]; frame ``t`` is ``L(t+1) - L(t)``, the last repeating the one before."""
        if pixels.ndim != 5 or pixels.shape[2] < 2:
            raise ValueError(f"V3DynamicForm needs clips of two or more frames (B, 3, T, H, W), "
                             f"got shape {tuple(pixels.shape)}")
        lum = luminance(pixels) * 255
        diff = lum[:, :, 1:] - lum[:, :, :-1]
        return torch.cat([diff, diff[:, :, -1:]], dim=2)

    def target(self, inp: TargetInput) -> Tensor:
        patch = inp.layout.patch
        if patch % self.cells:
            raise ValueError(f"V3DynamicForm.cells ({self.cells}) must divide the patch size {patch}")
        diff, undo = frames(self.difference(inp.pixels))
        bank = GaborBank(self.orientations, tuple(float(w) for w in self.wavelengths), float(self.bandwidth))
        pooled = unframes(gabor_energy(diff, bank, self.mode, pool=patch // self.cells), undo)
        tokens = inp.layout.patchify(pooled, patch=self.cells)  # (B, N, tube * cells^2 * K)
        return normalize_tokens(tokens) if self.normalize else tokens
