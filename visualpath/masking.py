"""Token masking, batched on the device (MAE's random masking, VideoMAE's tube masking).

Every sample of a batch hides the same number of tokens, so the encoder gathers a dense
``(B, N_visible, D)`` tensor of visible tokens and never pads (BIMM section 3.1: "Visible
patches ... are then fed to the encoder").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import attrs
import torch
from torch import Tensor

from visualpath._validate import open_unit_interval

__all__ = ["Mask", "RandomMask", "TubeMask", "MaskRule", "running_cell_subset"]


@dataclass(frozen=True)
class Mask:
    """A batch of token masks.

    Attributes:
        hidden: ``(B, N)`` bool, True where a token is masked (MAE: 1 remove, 0 keep).
        keep: ``(B, N_visible)`` indices of visible tokens, ascending.
        masked: ``(B, N_masked)`` indices of masked tokens, ascending.
    """

    hidden: Tensor
    keep: Tensor
    masked: Tensor

    @classmethod
    def from_hidden(cls, hidden: Tensor, n_masked: int | None = None) -> Mask:
        """Build index views from a ``(B, N)`` bool mask with the same count in every row.

        Args:
            hidden: True where a token is masked.
            n_masked: the known per-sample count. Mask rules pass it, which skips the check
                (and its device-to-host copy); user-given masks leave it out and are checked.
        """
        if hidden.dtype != torch.bool or hidden.ndim != 2:
            raise ValueError(
                f"mask must be a (B, N) bool tensor, got {hidden.dtype} {tuple(hidden.shape)}"
            )
        if n_masked is None:
            counts = hidden.sum(1).tolist()
            n_masked = counts[0]
            if any(c != n_masked for c in counts):
                raise ValueError(
                    f"every sample in a batch must mask the same number of tokens, got {counts}"
                )
        # A stable sort puts visible tokens (0) first, each group in ascending order.
        order = torch.argsort(hidden.to(torch.int8), dim=1, stable=True)
        n_visible = hidden.shape[1] - n_masked
        return cls(hidden=hidden, keep=order[:, :n_visible], masked=order[:, n_visible:])

    @property
    def num_visible(self) -> int:
        return self.keep.shape[1]

    @property
    def num_masked(self) -> int:
        return self.masked.shape[1]

    def to(self, device: torch.device | str) -> Mask:
        return Mask(self.hidden.to(device), self.keep.to(device), self.masked.to(device))


def _hide_count(ratio: float, n: int, what: str) -> int:
    k = round(ratio * n)
    if not 0 < k < n:
        raise ValueError(
            f"mask ratio {ratio} over {n} {what} hides {k}; it must hide at least one token and "
            f"leave at least one visible"
        )
    return k


def _random_hidden(batch: int, n: int, k: int, device, generator) -> Tensor:
    """``(batch, n)`` bool with exactly ``k`` True per row, uniformly at random (argsort of noise)."""
    noise = torch.rand(batch, n, device=device, generator=generator)
    hide = torch.argsort(noise, dim=1)[:, :k]
    return torch.zeros(batch, n, dtype=torch.bool, device=device).scatter_(1, hide, True)


@attrs.frozen
class RandomMask:
    """MAE masking: each sample hides ``round(ratio * N)`` tokens chosen uniformly.

    Attributes:
        ratio: fraction of tokens to hide, in (0, 1) (0.75 for images in the paper).
    """

    ratio: float = attrs.field(validator=open_unit_interval)

    def count(self, grid: tuple[int, ...]) -> int:
        """Tokens hidden per sample on ``grid``; raises ValueError if none or all would be."""
        return _hide_count(self.ratio, math.prod(grid), "tokens")

    def __call__(
        self, batch: int, grid: tuple[int, ...], device=None, generator: torch.Generator | None = None
    ) -> Mask:
        n = math.prod(grid)
        k = self.count(grid)
        return Mask.from_hidden(_random_hidden(batch, n, k, device, generator), n_masked=k)


@attrs.frozen
class TubeMask:
    """VideoMAE tube masking: one spatial mask per sample, repeated over every time step.

    Each sample hides ``round(ratio * h * w)`` spatial positions in all ``t`` token frames,
    so a hidden patch stays hidden for the whole clip and cannot be copied from a neighbour
    frame.

    Attributes:
        ratio: fraction of tokens to hide, in (0, 1) (0.9 in the paper, Table 7f).
    """

    ratio: float = attrs.field(validator=open_unit_interval)

    def count(self, grid: tuple[int, ...]) -> int:
        """Tokens hidden per sample on ``grid``; raises ValueError if none or all would be."""
        if len(grid) != 3:
            raise ValueError(f"TubeMask needs a video token grid (t, h, w), got {grid}")
        t, h, w = grid
        return t * _hide_count(self.ratio, h * w, "spatial positions per frame")

    def __call__(
        self, batch: int, grid: tuple[int, ...], device=None, generator: torch.Generator | None = None
    ) -> Mask:
        t, h, w = grid
        k = self.count(grid) // t
        spatial = _random_hidden(batch, h * w, k, device, generator)  # (B, h*w)
        hidden = spatial[:, None, :].expand(batch, t, h * w).reshape(batch, -1)
        return Mask.from_hidden(hidden, n_masked=k * t)


MaskRule = RandomMask | TubeMask


def running_cell_subset(masked: Tensor, grid: tuple[int, ...], keep: float,
                        generator: torch.Generator | None = None) -> Tensor:
    """A subset of the masked tokens for a decoder to reconstruct (VideoMAE V2's running cell).

    The grid is tiled by 2x2 spatial cells; at token-frame ``t`` a cell keeps the positions
    ``c`` (0..3, row-major in the cell) with ``(c + t) % 4 < round(4 * keep)``, so the kept
    positions run through the cell over time and every position is reconstructed in some
    frame. Every sample keeps ``round(keep * N_masked)`` tokens (a dense batch): masked
    tokens inside the running cell first, ties and any shortfall broken at random.

    Args:
        masked: ``(B, N_masked)`` ascending indices of the masked tokens.
        grid: token grid ``(t, h, w)`` or ``(h, w)``.
        keep: fraction in (0, 1].

    Returns:
        ``(B, K)`` ascending indices, a subset of each row of ``masked``.
    """
    B, n_masked = masked.shape
    k = max(1, round(keep * n_masked))
    if k >= n_masked:
        return masked
    *time, h, w = grid
    flat = masked
    t = flat // (h * w) if time else torch.zeros_like(flat)
    y, x = (flat % (h * w)) // w, flat % w
    cell = (y % 2) * 2 + (x % 2)
    inside = ((cell + t) % 4) < round(4 * keep)
    noise = torch.rand(B, n_masked, device=masked.device, generator=generator)
    chosen = (inside.float() + noise).topk(k, dim=1).indices  # running cell first
    return torch.gather(masked, 1, chosen).sort(dim=1).values
