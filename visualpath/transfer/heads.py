"""UperNet (Xiao et al., 2018) over a feature pyramid: semantic segmentation for ADE20K.

A pyramid pooling module (bins 1, 2, 3, 6) on the coarsest map, a top-down path with
lateral 1x1 convolutions, a 3x3 convolution per level, all levels upsampled to the finest,
concatenated, fused by a 3x3 convolution and classified per pixel; logits are upsampled to
the input size. Convolutions are followed by BatchNorm and ReLU, as in UperNet.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UperNetHead", "Segmenter"]


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UperNetHead(nn.Module):
    """Pixel logits from multi-scale maps, finest first.

    Args:
        in_channels: channels of each input level.
        num_classes: output classes (150 for ADE20K).
        channels: width of the head (512 in UperNet).
        bins: pyramid pooling grid sizes.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 512,
                 bins: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:
        super().__init__()
        top = in_channels[-1]
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), _conv(top, channels, 1)) for b in bins)
        self.bottleneck = _conv(top + len(bins) * channels, channels, 3)
        self.lateral = nn.ModuleList(_conv(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(_conv(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = _conv(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        top = features[-1]
        pooled = [F.interpolate(p(top), size=top.shape[-2:], mode="bilinear", align_corners=False) for p in self.ppm]
        levels = [lat(f) for lat, f in zip(self.lateral, features[:-1])]
        levels.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(levels) - 1, 0, -1):  # top-down
            levels[i - 1] = levels[i - 1] + F.interpolate(levels[i], size=levels[i - 1].shape[-2:], mode="bilinear",
                                                          align_corners=False)
        outs = [conv(x) for conv, x in zip(self.fpn, levels[:-1])] + [levels[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))


class Segmenter(nn.Module):
    """Backbone (a :class:`~visualpath.transfer.backbones.SimpleFeaturePyramid`) + UperNet;
    ``forward`` returns logits at the input's size."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int = 512) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = UperNetHead([backbone.out_channels] * 4, num_classes, channels)

    def forward(self, x: Tensor) -> Tensor:
        maps: Mapping[str, Tensor] = self.backbone(x)
        logits = self.head([maps[k] for k in ("0", "1", "2", "3")])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
