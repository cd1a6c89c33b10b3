"""Small tensor helpers shared by the paper's areas."""

from __future__ import annotations

import torch
from torch import Tensor

# Rec. 709 luma weights, as skimage.color.rgb2gray uses.
LUMA = (0.2125, 0.7154, 0.0721)


def luminance(pixels: Tensor) -> Tensor:
    """``(B, 3, ...)`` RGB in [0, 1] -> ``(B, 1, ...)`` luminance."""
    r, g, b = pixels.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def normalize_tokens(x: Tensor, eps: float = 1e-6) -> Tensor:
    """MAE's per-patch normalisation over the last dim: ``(x - mean) / sqrt(var + eps)``."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True)  # one pass over x
    return (x - mean).div_((var + eps).sqrt())


def frames(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``(B, C, [T,] H, W)`` -> ``(B*T, C, H, W)`` and the shape needed to undo it."""
    if x.ndim == 4:
        return x, ()
    B, C, T, H, W = x.shape
    return x.transpose(1, 2).reshape(B * T, C, H, W), (B, T)


def unframes(x: Tensor, undo: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`frames` for any channel count and spatial size."""
    if not undo:
        return x
    B, T = undo
    return x.reshape(B, T, *x.shape[1:]).transpose(1, 2)
