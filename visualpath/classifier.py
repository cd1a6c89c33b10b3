"""Finetuning models: a stream's encoder as a plain ViT, and a classifier on top of it.

BIMM finetunes "the pretrained position embedding layers along with the encoder from dorsal
branch for video tasks and ventral branch for image tasks" with a task head (section 3.3,
Table 9). Following VideoMAE, the default head is mean pooling over tokens, a LayerNorm
(``fc_norm``) and a linear layer; ``pool="cls"`` adds a learned class token instead.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visualpath.model import PathwayModel
from visualpath.tokens import normalize_pixels
from visualpath.tokens import Layout, PatchEmbed, cached_position_table
from visualpath.vit import ViTSpec, init_weights

__all__ = ["Encoder", "Classifier", "resize_positions"]


class Encoder(nn.Module):
    """Patch/tube embedding + positions + all blocks of one stream, as a plain ViT.

    ``forward`` takes ``(B, C, [T,] H, W)`` uint8 or [0, 1] pixels and returns
    ``(B, [1 +] N, D)`` tokens (the class token first when there is one).

    The pathway's streams use fixed sin-cos positions, no class token and no final norm;
    the options exist so that checkpoints of other ViTs load exactly (see
    :mod:`visualpath.interop`): timm and MAE image ViTs carry a class token, a stored
    position table and a final LayerNorm.

    Args:
        spec: encoder shape.
        layout: token geometry (image or video).
        pos_embed: ``"grid"`` / ``"flat"`` (fixed sin-cos tables, any input size) or
            ``"learned"`` (a stored table of ``grid``'s size, resized by bicubic
            interpolation per frame when the input grid differs).
        class_token: prepend a learned class token (it takes no position with fixed tables,
            MAE's zero entry; a learned table holds one for it, as timm's does).
        final_norm: a LayerNorm after the last block (timm's ``norm``).
        grid: token grid of the learned table, ``(h, w)`` or ``(t, h, w)``.
        frame_step: a video encoder sees every ``frame_step``-th frame of its input clip, as
            the stream it comes from did (``Stream.frame_step``).
    """

    def __init__(self, spec: ViTSpec, layout: Layout, pos_embed: str, class_token: bool = False,
                 final_norm: bool = False, grid: tuple[int, ...] | None = None, frame_step: int = 1) -> None:
        super().__init__()
        self.frame_step = frame_step
        if pos_embed not in ("grid", "flat", "learned"):
            raise ValueError(f"pos_embed must be 'grid', 'flat' or 'learned', got {pos_embed!r}")
        self.spec, self.layout, self.position_kind = spec, layout, pos_embed
        self.embed = PatchEmbed(layout, spec.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.width)) if class_token else None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.grid = tuple(grid) if grid is not None else None
        if pos_embed == "learned":
            rank = 3 if layout.is_video else 2
            if self.grid is None or len(self.grid) != rank:
                raise ValueError(f"pos_embed='learned' needs the table's token grid with {rank} sizes, "
                                 f"got grid={grid!r}")
            self.pos_embed = nn.Parameter(torch.zeros(1, int(class_token) + math.prod(self.grid), spec.width))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList(spec.block(i) for i in range(spec.depth))
        self.norm = nn.LayerNorm(spec.width, eps=spec.norm_eps) if final_norm else None

    @classmethod
    def from_pathway(cls, model: PathwayModel, stream: str, drop_path: float | None = None) -> Encoder:
        """Copy stream ``stream``'s embedding and blocks out of a pathway (weights copied).

        Args:
            drop_path: stochastic-depth rate for finetuning (Table 9: 0.1-0.2); None keeps
                the pretraining spec's.
        """
        s = model.pathway.stream(stream)
        spec = model.pathway.encoder if drop_path is None else attrs.evolve(model.pathway.encoder, drop_path=drop_path)
        encoder = cls(spec, model.streams[stream].layout, s.pos_embed, frame_step=s.frame_step)
        encoder.embed.load_state_dict(model.streams[stream].embed.state_dict())
        for mine, theirs in zip(encoder.blocks, model.blocks(stream)):
            mine.load_state_dict(theirs.state_dict())
        return encoder

    @property
    def prefix(self) -> int:
        """Tokens before the patch tokens (1 with a class token)."""
        return 0 if self.cls_token is None else 1

    def positions(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        """Positions of the patch tokens on ``grid``: ``(N, D)`` or ``(1, N, D)``."""
        if self.pos_embed is None:
            return cached_position_table(self.position_kind, grid, self.spec.width, like.device)
        table = self.pos_embed[:, self.prefix:]
        if tuple(grid) != self.grid:
            table = resize_positions(table, self.grid, grid)
        return table

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 or [0, 1] pixels -> ImageNet-normalised float pixels."""
        return normalize_pixels(x)

    def tokens(self, x: Tensor, normalized: bool = False) -> Tensor:
        """Embedded tokens with positions, before the blocks: ``(B, [1 +] N, D)``.

        Args:
            x: pixels, uint8 or in [0, 1]; or already normalised with ``normalized=True``
                (the finetuning step erases regions after normalising, as VideoMAE does).
        """
        if self.frame_step > 1 and x.ndim == 5:
            x = x[:, :, ::self.frame_step]
        grid = self.layout.grid(x.shape)
        tokens = self.embed(x if normalized else self.normalize(x))
        tokens = tokens + self.positions(grid, tokens).to(tokens.dtype)
        if self.cls_token is None:
            return tokens
        cls = self.cls_token
        if self.pos_embed is not None:
            cls = cls + self.pos_embed[:, :1]
        return torch.cat([cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)

    def forward_blocks(self, h: Tensor) -> Tensor:
        """The blocks and the final norm (when it has one) on tokens ``(B, N, D)``."""
        for block in self.blocks:
            h = block(h)
        return h if self.norm is None else self.norm(h)

    def forward(self, x: Tensor, normalized: bool = False) -> Tensor:
        return self.forward_blocks(self.tokens(x, normalized))


def resize_positions(table: Tensor, old: tuple[int, ...], new: tuple[int, ...]) -> Tensor:
    """Resize a stored position table ``(1, N_old, D)`` from token grid ``old`` to ``new``.

    Spatially each frame is resized by bicubic interpolation (``align_corners=False``, no
    antialiasing), as VideoMAE and MAE do when finetuning at another resolution; for video a
    different number of token frames is then linearly interpolated along time (VideoMAE keeps
    the frame count fixed, so this step is ours).
    """
    old, new = tuple(old), tuple(new)
    if old == new:
        return table
    if len(old) != len(new):
        raise ValueError(f"cannot resize a position table from grid {old} to grid {new}")
    D = table.shape[-1]
    *t_old, h, w = old
    *t_new, H, W = new
    frames = t_old[0] if t_old else 1
    x = table.reshape(frames, h, w, D).permute(0, 3, 1, 2).float()  # (t, D, h, w)
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(H, W), mode="bicubic", align_corners=False)
    if t_old and t_old[0] != t_new[0]:
        x = x.permute(2, 3, 1, 0).reshape(H * W, D, frames)
        x = F.interpolate(x, size=t_new[0], mode="linear", align_corners=False)
        x = x.reshape(H, W, D, t_new[0]).permute(3, 2, 0, 1)
    return x.permute(0, 2, 3, 1).reshape(1, -1, D).to(table.dtype)


class Classifier(nn.Module):
    """Encoder + pooling + ``fc_norm`` + linear head (VideoMAE's finetuning model).

    Args:
        encoder: the stream encoder.
        num_classes: output classes.
        pool: ``"mean"`` over tokens (default) or ``"cls"`` (a learned class token).
        head_dropout: dropout before the head.
        head_init_scale: scale of the head's initial weights (VideoMAE uses 0.001).
    """

    def __init__(self, encoder: Encoder, num_classes: int, pool: str = "mean", head_dropout: float = 0.0,
                 head_init_scale: float = 0.001) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.encoder, self.pool = encoder, pool
        width = encoder.spec.width
        own_token = pool == "cls" and encoder.cls_token is None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if own_token else None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.fc_norm = nn.LayerNorm(width, eps=encoder.spec.norm_eps)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(width, num_classes)
        init_weights(self.fc_norm)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.zero_()

    def forward(self, x: Tensor, normalized: bool = False) -> Tensor:
        """``(B, C, [T,] H, W)`` -> ``(B, num_classes)`` logits (see :meth:`Encoder.tokens`).

        With an encoder that has its own class token (a timm or MAE checkpoint), ``"cls"``
        pools that token and ``"mean"`` averages the patch tokens only (MAE's global pool).
        """
        h = self.encoder.tokens(x, normalized)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
        h = self.encoder.forward_blocks(h)
        has_cls = self.cls_token is not None or self.encoder.cls_token is not None
        pooled = h[:, 0] if self.pool == "cls" else h[:, int(has_cls):].mean(1)
        return self.head(self.dropout(self.fc_norm(pooled)))
