"""The one configurable Vision Transformer block and the encoder size factories.

Follows ViT (Dosovitskiy et al.) as used by MAE and VideoMAE (BIMM paper, section 3.1):
pre-norm blocks, multi-head self-attention through ``F.scaled_dot_product_attention``, a
GELU MLP. Parameter names match timm's ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that timm and VideoMAE weights map one-to-one.

A :class:`ViTSpec` only describes an encoder; streams build their own embeddings and the
pathway builds the blocks stage by stage (see :mod:`visualpath.model`).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visualpath._validate import positive, positive_float, unit_interval

__all__ = [
    "Attention",
    "Block",
    "ViTSpec",
    "vit_tiny",
    "vit_small",
    "vit_base",
    "vit_large",
]


class Mlp(nn.Module):
    """The block's MLP, ``fc2(gelu(fc1(x)))``, named as timm's ``Mlp`` (``fc1``, ``fc2``).

    Written here rather than imported from timm: importing ``timm.layers`` loads torchvision
    and ``torch._dynamo``, about 2 s of every command's start (decision P7)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth as timm's ``DropPath``: in training, each sample's branch is dropped
    with probability ``p`` and kept ones are scaled by ``1 / (1 - p)``; the identity otherwise."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.drop_prob = p

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_prob)
        return x * keep.div_(1 - self.drop_prob) if self.drop_prob < 1 else x * keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Attention(nn.Module):
    """Multi-head self-attention on ``(B, N, D)`` tokens, computed by SDPA."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, D/heads)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@attrs.frozen(kw_only=True)
class ViTSpec:
    """Shape of a ViT encoder, shared by every stream of a pathway.

    Attributes:
        width: token width ``D``.
        depth: number of blocks; each stream's areas must span exactly this many.
        heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``width``.
        qkv_bias: bias on the query/key/value projection.
        drop_path: stochastic-depth rate of the last block (linear from 0 over depth).
        norm_eps: LayerNorm epsilon (1e-6 as in timm, MAE and VideoMAE).
        patch: spatial patch size in pixels.
        tube: frames per video token (VideoMAE's tubelet size).
        channels: input channels.
    """

    width: int = attrs.field(validator=positive)
    depth: int = attrs.field(validator=positive)
    heads: int = attrs.field(validator=positive)
    mlp_ratio: float = attrs.field(default=4.0, validator=positive_float)
    qkv_bias: bool = True
    drop_path: float = attrs.field(default=0.0, validator=unit_interval)
    norm_eps: float = attrs.field(default=1e-6, validator=positive_float)
    patch: int = attrs.field(default=16, validator=positive)
    tube: int = attrs.field(default=2, validator=positive)
    channels: int = attrs.field(default=3, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(
                f"ViT width must be divisible by heads, got width={self.width}, heads={self.heads}"
            )

    def block(self, index: int) -> Block:
        """Build block ``index`` (0-based) with its stochastic-depth rate."""
        rate = self.drop_path * index / max(self.depth - 1, 1)
        return Block(self.width, self.heads, self.mlp_ratio, self.qkv_bias, rate, self.norm_eps)


def vit_tiny(**overrides) -> ViTSpec:
    """ViT-Ti/16: width 192, 12 blocks, 3 heads (5.7 M encoder parameters)."""
    return ViTSpec(**{"width": 192, "depth": 12, "heads": 3, **overrides})


def vit_small(**overrides) -> ViTSpec:
    """ViT-S/16: width 384, 12 blocks, 6 heads (22 M)."""
    return ViTSpec(**{"width": 384, "depth": 12, "heads": 6, **overrides})


def vit_base(**overrides) -> ViTSpec:
    """ViT-B/16: width 768, 12 blocks, 12 heads (86 M), the paper's main encoder."""
    return ViTSpec(**{"width": 768, "depth": 12, "heads": 12, **overrides})


def vit_large(**overrides) -> ViTSpec:
    """ViT-L/16: width 1024, 24 blocks, 16 heads (304 M)."""
    return ViTSpec(**{"width": 1024, "depth": 24, "heads": 16, **overrides})


def init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@torch.no_grad()
def init_embedding(proj: nn.Conv2d | nn.Conv3d) -> None:
    """MAE's patch-embedding init: xavier-uniform on the flattened kernel."""
    nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
    if proj.bias is not None:
        nn.init.zeros_(proj.bias)
