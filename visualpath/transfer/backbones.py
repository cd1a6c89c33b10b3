"""Pretrained encoders as backbones for detection, segmentation and action detection.

Image backbone (COCO Mask R-CNN, ADE20K UperNet): ViTDet's *simple feature pyramid* (Li et
al., 2022) built from the **last block** only: the stride-16 token map is upsampled by two
transposed convolutions (stride 4) and one (stride 8), kept (16) and max-pooled (32); each
scale then passes a 1x1 and a 3x3 convolution, each with a channel LayerNorm. ViTDet showed
that this plain pyramid matches taps from intermediate blocks, and it needs no choice of taps
for encoders whose areas end at different depths.

Clip backbone (AVA): the dorsal encoder's tokens ``(B, D, t, h, w)`` of a 16-frame clip,
averaged over the ``t`` token-frames into one key-frame map ``(B, D, h, w)`` at stride 16,
from which RoIAlign pools each person box (VideoMAE's AVA head does the same temporal
pooling before its RoI head).

Both take an :class:`~visualpath.classifier.Encoder` (for instance
``Encoder.from_pathway(model, "ventral")``) and any input size: fixed sin-cos positions are
computed for the input's grid and stored tables are resized (bicubic, per frame).
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from visualpath.classifier import Encoder

__all__ = ["ChannelNorm", "SimpleFeaturePyramid", "ClipBackbone", "RoIActionHead"]


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ViTDet's ``LayerNorm2d``)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _token_map(encoder: Encoder, x: Tensor) -> Tensor:
    """Encoder tokens of normalised pixels as a map: ``(B, D, [t,] h, w)``."""
    grid = encoder.layout.grid(x.shape)
    tokens = encoder(x, normalized=True)[:, encoder.prefix:]  # (B, N, D), class token dropped
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, *grid)


class SimpleFeaturePyramid(nn.Module):
    """An image encoder as a 4-scale (+ pooled) backbone for torchvision's detectors.

    ``forward`` takes ImageNet-normalised images ``(B, 3, H, W)`` (H, W multiples of 16) and
    returns ``OrderedDict`` maps ``"0"`` (stride 4), ``"1"`` (8), ``"2"`` (16), ``"3"`` (32)
    and ``"pool"`` (64), each with ``out_channels`` channels: the layout torchvision's
    ``MaskRCNN`` and FPN-style heads expect.
    """

    def __init__(self, encoder: Encoder, out_channels: int = 256) -> None:
        super().__init__()
        if encoder.layout.is_video:
            raise ValueError("SimpleFeaturePyramid needs an image encoder (the ventral stream's)")
        self.encoder, self.out_channels = encoder, out_channels
        D = encoder.spec.width
        self.scales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(D, D // 2, 2, 2), ChannelNorm(D // 2), nn.GELU(),
                          nn.ConvTranspose2d(D // 2, D // 4, 2, 2)),  # stride 4
            nn.ConvTranspose2d(D, D // 2, 2, 2),  # stride 8
            nn.Identity(),  # stride 16
            nn.MaxPool2d(2),  # stride 32
        ])
        widths = (D // 4, D // 2, D, D)
        self.outputs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w, out_channels, 1, bias=False), ChannelNorm(out_channels),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), ChannelNorm(out_channels))
            for w in widths)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        top = _token_map(self.encoder, x)  # (B, D, H/16, W/16)
        maps = OrderedDict()
        for i, (scale, out) in enumerate(zip(self.scales, self.outputs)):
            maps[str(i)] = out(scale(top))
        maps["pool"] = F.max_pool2d(maps["3"], 1, 2)  # Mask R-CNN's extra RPN level
        return maps


class ClipBackbone(nn.Module):
    """A video encoder's key-frame token map: ``(B, 3, T, H, W)`` normalised clips ->
    ``(B, D, H/16, W/16)``, the mean over token-frames."""

    stride = 16

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        if not encoder.layout.is_video:
            raise ValueError("ClipBackbone needs a video encoder (the dorsal stream's)")
        self.encoder = encoder
        self.out_channels = encoder.spec.width

    def forward(self, clip: Tensor) -> Tensor:
        return _token_map(self.encoder, clip).mean(2)


class RoIActionHead(nn.Module):
    """AVA's head: RoIAlign of each person box on the key-frame map, max over the aligned
    cells, dropout and a linear classifier (sigmoid outputs: AVA actions are multi-label).

    Args:
        backbone: a :class:`ClipBackbone`.
        num_classes: 60 for AVA v2.2's evaluation classes.
        output_size: RoIAlign cells per box side.
    """

    def __init__(self, backbone: ClipBackbone, num_classes: int = 60, output_size: int = 7,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone, self.output_size = backbone, output_size
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.out_channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, clip: Tensor, boxes: list[Tensor]) -> Tensor:
        """Logits ``(sum of boxes, num_classes)`` for ``boxes[b]`` ``(n_b, 4)`` in pixels
        (x1, y1, x2, y2) of clip ``b``'s frames."""
        fmap = self.backbone(clip)  # (B, D, h, w)
        pooled = roi_align(fmap, [b.to(fmap.dtype) for b in boxes], self.output_size,
                           spatial_scale=1.0 / self.backbone.stride, sampling_ratio=2, aligned=True)
        return self.classifier(self.dropout(pooled.amax(dim=(2, 3))))
