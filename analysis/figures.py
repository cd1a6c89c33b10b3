"""Figures of what each area predicts, built honestly from the predicted values only.

Visible tokens are drawn grey in the prediction panels: nothing of the ground truth is
pasted back into a prediction (reference demos often fill visible patches, and even the
masked patches' mean and variance, from the target).
"""

from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from visualpath.pathway import PathwayModel  # noqa: E402

__all__ = ["reconstruction_figure", "token_map"]


def token_map(values: Tensor, area, layout, grid) -> Tensor:
    """``(N, P)`` per-token values -> ``(T, H, W)`` (gray) or ``(T, H, W, 3)`` (RGB) in [0, 1].

    Each token's values are min-max scaled on their own (targets are standardised per token);
    multi-channel targets such as Gabor energies are averaged over channels. NaN rows (tokens
    without a value) are drawn grey.
    """
    side = area.target_side(layout)
    channels = values.shape[-1] // (layout.tube * side * side)
    lo = values.nan_to_num(float("inf")).amin(-1, keepdim=True)
    hi = values.nan_to_num(float("-inf")).amax(-1, keepdim=True)
    scaled = ((values - lo) / (hi - lo).clamp_min(1e-6)).nan_to_num(0.5)
    image = layout.unpatchify(scaled[None], grid, patch=side)[0]  # (C', [T,] H', W')
    if image.ndim == 3:
        image = image[:, None]
    image = image.permute(1, 2, 3, 0)  # (T, H', W', C')
    if channels == 3:
        return image
    return image.mean(-1)


@torch.no_grad()
def reconstruction_figure(model: PathwayModel, batch: Mapping[str, Tensor], stream: str, sample: int = 0,
                          max_frames: int = 4):
    """Input, visible tokens, and per area its target and prediction at masked tokens."""
    was_training = model.training
    model.eval()
    out = model(batch).streams[stream]
    model.train(was_training)
    spec = model.spec._stream(stream)
    layout = model.streams[stream].layout
    key = "video" if layout.is_video else "image"
    x = batch[key][sample]
    pixels = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).cpu()
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    hidden = out.mask.hidden[sample].cpu()
    masked = out.mask.masked[sample].cpu()
    areas = [a for a in spec.areas if a.name in out.predictions]
    n_tokens = hidden.numel()
    panels = []
    frames = pixels.permute(1, 2, 3, 0)  # (T, H, W, 3)
    shown = (~hidden).float()[:, None].expand(n_tokens, layout.pixels_per_token)  # 1 where visible
    vis_map = layout.unpatchify(shown[None], out.grid)[0]  # (1, [T,] H, W)
    vis_map = (vis_map if vis_map.ndim == 4 else vis_map[:, None])[0]  # (T, H, W)
    panels.append(("input", frames))
    panels.append(("visible", torch.where(vis_map[..., None] > 0.5, frames, torch.full_like(frames, 0.5))))
    for area in areas:
        for kind, values in (("target", out.targets[area.name]), ("prediction", out.predictions[area.name])):
            full = torch.full((n_tokens, values.shape[-1]), float("nan"))
            full[masked] = values[sample].float().cpu()
            panels.append((f"{area.name} {kind}", token_map(full, area, layout, out.grid)))
    step = layout.tube
    times = list(range(0, frames.shape[0], step))[:max_frames]
    fig, axes = plt.subplots(len(times), len(panels), figsize=(1.7 * len(panels), 1.8 * len(times)), squeeze=False)
    for row, t in enumerate(times):
        for col, (title, image) in enumerate(panels):
            ax = axes[row, col]
            frame = image[min(t if image.shape[0] == frames.shape[0] else t // step, image.shape[0] - 1)]
            ax.imshow(frame.numpy(), cmap=None if frame.ndim == 3 else "magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
        axes[row, 0].set_ylabel(f"t={t}", fontsize=8)
    fig.suptitle(f"{stream} stream: targets and predictions at masked tokens (visible tokens left flat)", fontsize=9)
    fig.tight_layout()
    return fig

