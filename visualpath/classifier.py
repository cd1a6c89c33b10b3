"""Finetuning models: a stream's encoder as a plain ViT, and a classifier on top of it.

BIMM finetunes "the pretrained position embedding layers along with the encoder from dorsal
branch for video tasks and ventral branch for image tasks" with a task head (section 3.3,
Table 9). Following VideoMAE, the default head is mean pooling over tokens, a LayerNorm
(``fc_norm``) and a linear layer; ``pool="cls"`` adds a learned class token instead.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor, nn

from visualpath.pathway import IMAGENET_MEAN, IMAGENET_STD, PathwayModel
from visualpath.tokens import Layout, PatchEmbed, cached_position_table
from visualpath.vit import ViTSpec, init_weights

__all__ = ["Encoder", "Classifier"]


class Encoder(nn.Module):
    """Patch/tube embedding + fixed sin-cos positions + all blocks of one stream.

    ``forward`` takes ``(B, C, [T,] H, W)`` uint8 or [0, 1] pixels and returns ``(B, N, D)``.
    """

    def __init__(self, spec: ViTSpec, layout: Layout, pos_embed: str) -> None:
        super().__init__()
        self.spec, self.layout, self.pos_embed = spec, layout, pos_embed
        self.embed = PatchEmbed(layout, spec.width)
        self.blocks = nn.ModuleList(spec.block(i) for i in range(spec.depth))
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        shape = (1, 3, 1, 1, 1) if layout.is_video else (1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean.view(shape), persistent=False)
        self.register_buffer("pixel_std", std.view(shape), persistent=False)

    @classmethod
    def from_pathway(cls, model: PathwayModel, stream: str, drop_path: float | None = None) -> Encoder:
        """Copy stream ``stream``'s embedding and blocks out of a pathway (weights copied).

        Args:
            drop_path: stochastic-depth rate for finetuning (Table 9: 0.1-0.2); None keeps
                the pretraining spec's.
        """
        s = model.spec._stream(stream)
        spec = model.spec.encoder if drop_path is None else attrs.evolve(model.spec.encoder, drop_path=drop_path)
        encoder = cls(spec, model.streams[stream].layout, s.pos_embed)
        encoder.embed.load_state_dict(model.streams[stream].embed.state_dict())
        for mine, theirs in zip(encoder.blocks, model.blocks(stream)):
            mine.load_state_dict(theirs.state_dict())
        return encoder

    def positions(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        return cached_position_table(self.pos_embed, grid, self.spec.width, like.device)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 or [0, 1] pixels -> ImageNet-normalised float pixels."""
        pixels = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return (pixels - self.pixel_mean) / self.pixel_std

    def tokens(self, x: Tensor, normalized: bool = False) -> Tensor:
        """Embedded tokens with positions, before the blocks: ``(B, N, D)``.

        Args:
            x: pixels, uint8 or in [0, 1]; or already normalised with ``normalized=True``
                (the finetuning step erases regions after normalising, as VideoMAE does).
        """
        grid = self.layout.grid(x.shape)
        tokens = self.embed(x if normalized else self.normalize(x))
        return tokens + self.positions(grid, tokens).to(tokens.dtype)

    def forward(self, x: Tensor, normalized: bool = False) -> Tensor:
        h = self.tokens(x, normalized)
        for block in self.blocks:
            h = block(h)
        return h


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
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
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
        """``(B, C, [T,] H, W)`` -> ``(B, num_classes)`` logits (see :meth:`Encoder.tokens`)."""
        h = self.encoder.tokens(x, normalized)
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
        for block in self.encoder.blocks:
            h = block(h)
        pooled = h[:, 0] if self.cls_token is not None else h.mean(1)
        return self.head(self.dropout(self.fc_norm(pooled)))
