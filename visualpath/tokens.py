"""Token layouts: how images and clips become tokens, and back.

An image ``(B, C, H, W)`` is cut into 16x16 patches (MAE); a clip ``(B, C, T, H, W)`` into
2x16x16 tubes (VideoMAE, "joint space-time cube embedding", BIMM section 3.1). Tokens are
ordered ``(t, h, w)`` with time slowest, and the values of one token are ordered
``(tube, patch-row, patch-col, channel)``, the order MAE and VideoMAE use for their targets.
Every target of every area is expressed in this order, so a prediction at token ``n`` and
the target at token ``n`` always describe the same pixels.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import attrs
import torch
from einops import rearrange
import torch.nn.functional as F
from torch import Tensor, nn

from visualpath._validate import positive

__all__ = ["Layout", "PatchEmbed", "sincos_flat", "sincos_grid", "MODALITIES", "IMAGENET_MEAN", "IMAGENET_STD",
           "normalize_pixels", "standardise_sample"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Modality = Literal["image", "video"]
MODALITIES: tuple[str, ...] = ("image", "video")


def _modality(instance, attribute, value) -> None:
    if value not in MODALITIES:
        raise ValueError(
            f"{type(instance).__name__}.{attribute.name} must be one of {MODALITIES}, got {value!r}"
        )


@attrs.frozen
class Layout:
    """Geometry of one stream's tokens.

    Attributes:
        modality: ``"image"`` (``(B, C, H, W)`` input) or ``"video"`` (``(B, C, T, H, W)``).
        patch: spatial patch size in pixels.
        tube: frames per token (2 in VideoMAE); must be 1 for images.
        channels: input channels.
    """

    modality: str = attrs.field(validator=_modality)
    patch: int = attrs.field(default=16, validator=positive)
    tube: int = attrs.field(default=1, validator=positive)
    channels: int = attrs.field(default=3, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.modality == "image" and self.tube != 1:
            raise ValueError(f"Layout.tube must be 1 for images, got {self.tube}")

    @property
    def is_video(self) -> bool:
        return self.modality == "video"

    @property
    def expected(self) -> str:
        """The expected input form, for error messages."""
        if self.is_video:
            return (
                f"a video batch (B, {self.channels}, T, H, W) with T divisible by {self.tube} "
                f"and H, W divisible by {self.patch}"
            )
        return f"an image batch (B, {self.channels}, H, W) with H, W divisible by {self.patch}"

    def grid(self, shape: tuple[int, ...] | torch.Size, name: str = "input") -> tuple[int, ...]:
        """Token grid ``(t, h, w)`` for video or ``(h, w)`` for images; checks the shape.

        Raises:
            ValueError: naming the expected form when ``shape`` does not fit this layout.
        """
        shape = tuple(shape)
        rank = 5 if self.is_video else 4
        if len(shape) != rank:
            raise ValueError(f"{name}: expected {self.expected}, got shape {shape}")
        if shape[1] != self.channels:
            raise ValueError(
                f"{name}: expected {self.expected}, got {shape[1]} channels in shape {shape}"
            )
        *time, H, W = shape[2:]
        if H % self.patch or W % self.patch or H == 0 or W == 0:
            raise ValueError(
                f"{name}: expected {self.expected}, got spatial size {H}x{W} in shape {shape}"
            )
        if self.is_video:
            (T,) = time
            if T % self.tube or T == 0:
                raise ValueError(
                    f"{name}: expected {self.expected}, got {T} frames in shape {shape}"
                )
            return (T // self.tube, H // self.patch, W // self.patch)
        return (H // self.patch, W // self.patch)

    @property
    def pixels_per_token(self) -> int:
        """Pixel positions covered by one token (tube x patch x patch)."""
        return self.tube * self.patch * self.patch

    def patchify(self, x: Tensor, patch: int | None = None) -> Tensor:
        """``(B, C, [T,] H, W)`` maps -> ``(B, N, P)`` per-token values.

        Args:
            x: per-pixel maps aligned with the input (any channel count).
            patch: side of one token in ``x``'s own pixels; defaults to the layout's patch.
                A map pooled 4x (e.g. Gabor cells) passes ``patch // 4``.
        """
        p = patch or self.patch
        if self.is_video:
            return rearrange(
                x, "b c (t pt) (h ph) (w pw) -> b (t h w) (pt ph pw c)", pt=self.tube, ph=p, pw=p
            )
        return rearrange(x, "b c (h ph) (w pw) -> b (h w) (ph pw c)", ph=p, pw=p)

    def unpatchify(self, tokens: Tensor, grid: tuple[int, ...], patch: int | None = None) -> Tensor:
        """Inverse of :meth:`patchify`: ``(B, N, P)`` -> ``(B, C, [T,] H, W)``."""
        p = patch or self.patch
        if self.is_video:
            t, h, w = grid
            return rearrange(
                tokens, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
                t=t, h=h, w=w, pt=self.tube, ph=p, pw=p,
            )
        h, w = grid
        return rearrange(tokens, "b (h w) (ph pw c) -> b c (h ph) (w pw)", h=h, w=w, ph=p, pw=p)


class PatchEmbed(nn.Module):
    """Linear embedding of 16x16 patches (Conv2d) or 2x16x16 tubes (Conv3d).

    ``(B, C, [T,] H, W)`` -> ``(B, N, D)`` in the layout's token order.
    """

    def __init__(self, layout: Layout, width: int) -> None:
        super().__init__()
        self.layout = layout
        p = layout.patch
        if layout.is_video:
            kernel = (layout.tube, p, p)
            self.proj = nn.Conv3d(layout.channels, width, kernel_size=kernel, stride=kernel)
        else:
            self.proj = nn.Conv2d(layout.channels, width, kernel_size=p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)

    def visible(self, pixels: Tensor, keep: Tensor) -> Tensor:
        """Embeddings of the tokens at ``keep`` only: ``(B, C, [T,] H, W)`` pixels in [0, 1]
        and ``(B, K)`` token indices -> ``(B, K, D)``, equal to ``forward(normalize_pixels(
        pixels))`` at those tokens up to float rounding.

        The patch embedding is one linear map per token, so a masked step embeds (and
        normalises) only the tokens its encoder sees: a tenth of them under a 0.9 tube mask
        (decision P1).
        """
        p, t = self.layout.patch, self.layout.tube
        if self.layout.is_video:  # values of a token in the kernel's (C, tube, row, col) order
            patches = rearrange(pixels, "b c (t pt) (h ph) (w pw) -> b (t h w) c (pt ph pw)", pt=t, ph=p, pw=p)
        else:
            patches = rearrange(pixels, "b c (h ph) (w pw) -> b (h w) c (ph pw)", ph=p, pw=p)
        index = keep[:, :, None, None].expand(-1, -1, *patches.shape[2:])
        patches = torch.gather(patches, 1, index)  # (B, K, C, tube * p * p)
        mean, std = _imagenet_stats(pixels.device)
        patches = (patches - mean[:, None]) / std[:, None]
        return F.linear(patches.flatten(2), self.proj.weight.flatten(1), self.proj.bias)


def _sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """MAE's 1-D table: ``[sin(p * w), cos(p * w)]`` halves, ``w = 10000^(-k / (dim/2))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_grid(grid: tuple[int, ...], dim: int) -> Tensor:
    """Fixed sin-cos embedding on a token grid, ``(N, dim)`` float32.

    2-D grids follow MAE exactly (first half of the channels encodes the column, second
    half the row). 3-D grids ``(t, h, w)`` add a 1-D temporal table to the 2-D spatial one
    (the separable space + time form of MAE-ST), so every frame shares the spatial code.
    """
    if dim % 4:
        raise ValueError(f"sin-cos grid embedding needs a width divisible by 4, got {dim}")
    *time, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    spatial = torch.cat(
        [_sincos_1d(cols.flatten(), dim // 2), _sincos_1d(rows.flatten(), dim // 2)], dim=1
    )  # (h*w, dim)
    if not time:
        return spatial.float()
    temporal = _sincos_1d(torch.arange(time[0]), dim)  # (t, dim)
    return (temporal[:, None, :] + spatial[None]).reshape(-1, dim).float()


def sincos_flat(num_tokens: int, dim: int) -> Tensor:
    """VideoMAE's 1-D sinusoid table over the flattened token index, ``(N, dim)`` float32.

    ``angle(n, j) = n / 10000^(2 * (j // 2) / dim)``, sine on even and cosine on odd channels.
    """
    j = torch.arange(dim, dtype=torch.float64)
    angles = torch.arange(num_tokens, dtype=torch.float64)[:, None] / 10000 ** (
        2 * torch.div(j, 2, rounding_mode="floor") / dim
    )
    table = torch.empty_like(angles)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


def position_table(kind: str, grid: tuple[int, ...], dim: int) -> Tensor:
    """Dispatch on the stream's ``pos_embed`` kind: ``"grid"`` or ``"flat"``."""
    if kind == "grid":
        return sincos_grid(grid, dim)
    if kind == "flat":
        return sincos_flat(math.prod(grid), dim)
    raise ValueError(f"pos_embed must be 'grid' or 'flat', got {kind!r}")


@functools.lru_cache(maxsize=64)
def cached_position_table(kind: str, grid: tuple[int, ...], dim: int, device: torch.device) -> Tensor:
    """:func:`position_table` on ``device``, built once per (kind, grid, width, device).

    Modules share these constants, so a step copies no table to the device. Built outside
    inference mode so a table first made during evaluation can still be used in training.
    """
    with torch.inference_mode(False):
        return position_table(kind, grid, dim).to(device)


@functools.lru_cache(maxsize=16)
def _imagenet_stats(device: torch.device) -> tuple[Tensor, Tensor]:
    with torch.inference_mode(False):
        return torch.tensor(IMAGENET_MEAN, device=device), torch.tensor(IMAGENET_STD, device=device)


def normalize_pixels(x: Tensor) -> Tensor:
    """The one pixel normalisation: ``(B, 3, [T,] H, W)`` uint8 in [0, 255] or float in [0, 1]
    -> float32 ImageNet mean/std normalised (the statistics live on the device once)."""
    pixels = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    mean, std = _imagenet_stats(x.device)
    shape = (1, 3) + (1,) * (x.ndim - 2)
    return (pixels - mean.view(shape)) / std.view(shape)


def standardise_sample(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Each sample of a target ``(B, N, P)`` to mean 0 and variance 1 over all its tokens and
    values: its scale fixed, its structure across tokens kept (where MAE's per-token
    normalisation would flatten a target of one value per token to 0). What the loss sees of
    an area that sets no scale of its own (``Area.target_scale``, decision D22). ``eps`` is
    small enough for a target of standard deviation 1e-4 to reach unit variance; a constant
    sample gives zeros."""
    flat = x.flatten(1)
    var, mean = torch.var_mean(flat, dim=1, keepdim=True, correction=0)
    return ((flat - mean) / (var + eps).sqrt()).view_as(x)
