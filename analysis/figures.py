"""Figures of what each area predicts, built honestly from the predicted values only.

Visible tokens are drawn grey in the prediction panels: nothing of the ground truth is
pasted back into a prediction (reference demos often fill visible patches, and even the
masked patches' mean and variance, from the target).
"""

from __future__ import annotations

import logging
from typing import Mapping

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from visualpath.model import PathwayModel

log = logging.getLogger(__name__)

__all__ = ["reconstruction_figure", "token_map", "cka_heatmap", "tuning_curves", "attention_weights",
           "attention_figure", "neural_figure"]


def token_map(values: Tensor, area, layout, grid) -> Tensor:
    """``(N, P)`` per-token values -> ``(T, H, W)`` (gray) or ``(T, H, W, 3)`` (RGB) in [0, 1].

    Each token's values are min-max scaled on their own (targets are standardised per token);
    multi-channel targets such as Gabor energies are averaged over channels. NaN rows (tokens
    without a value) are drawn grey.
    """
    side = area.target_side(layout)
    channels = area.target_channels(layout, values.shape[-1])
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
    spec = model.pathway.stream(stream)
    layout = model.streams[stream].layout
    key = "video" if layout.is_video else "image"
    x = batch[key][sample]
    if layout.is_video and spec.frame_step > 1:  # the frames this stream sees
        x = x[:, ::spec.frame_step]
    pixels = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).cpu()
    if pixels.ndim == 3:
        pixels = pixels[:, None]
    hidden = out.mask.hidden[sample].cpu()
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
            where = out.predicted.get(area.name, out.mask.masked)[sample].cpu()
            full[where] = values[sample].float().cpu()
            try:
                panels.append((f"{area.name} {kind}", token_map(full, area, layout, out.grid)))
            except ValueError as err:  # a user's area whose target is not a per-pixel map
                log.warning("reconstruction figure: %s is not drawn (%s)", area.name, err)
                break
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



# --------------------------------------------------------------------------- similarity, tuning, attention


def cka_heatmap(matrix, title: str | None = None):
    """A :class:`~analysis.similarity.SimilarityMatrix` as an annotated heatmap."""
    values = matrix.values.numpy()
    fig, ax = plt.subplots(figsize=(0.7 * len(matrix.cols) + 2, 0.6 * len(matrix.rows) + 1.5))
    im = ax.imshow(values, cmap="viridis", vmin=min(0.0, float(values.min())), vmax=1.0)
    ax.set_xticks(range(len(matrix.cols)), matrix.cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix.rows)), matrix.rows, fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if values[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or matrix.measure, fontsize=9)
    fig.tight_layout()
    return fig


def tuning_curves(report, stream: str, units: int = 4):
    """Orientation (and, for video streams, direction) tuning curves of the most selective
    responsive units of each area of ``stream`` (an :class:`~analysis.tuning.AreaTuning`)."""
    areas = list(report.orientation[stream])
    rows = 2 if stream in report.direction else 1
    fig, axes = plt.subplots(rows, len(areas), figsize=(2.6 * len(areas), 2.3 * rows), squeeze=False)
    for col, area in enumerate(areas):
        ori = report.orientation[stream][area]
        pick = _most_selective(ori.osi, units)
        curves = ori.responses.amax(1)  # (O, U): best frequency per orientation
        ax = axes[0, col]
        for u in pick:
            c = curves[:, u].numpy()
            ax.plot(ori.orientations.numpy(), c / max(c.max(), 1e-12), marker=".", lw=1)
        ax.set_title(f"{area}: median OSI {ori.summary()['osi']:.2f}", fontsize=8)
        ax.set_xlabel("orientation (deg)", fontsize=7)
        if rows == 2:
            d = report.direction[stream][area]
            ax = axes[1, col]
            for u in _most_selective(d.dsi, units):
                c = d.responses[:, u].numpy()
                ax.plot(d.directions.numpy(), c / max(c.max(), 1e-12), marker=".", lw=1)
            ax.set_title(f"{area}: median DSI {d.summary()['dsi']:.2f}", fontsize=8)
            ax.set_xlabel("direction of motion (deg)", fontsize=7)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{stream} stream: normalised tuning curves of the most selective units", fontsize=9)
    fig.tight_layout()
    return fig


def _most_selective(index: Tensor, n: int) -> list[int]:
    valid = (~index.isnan()).nonzero().flatten()
    order = index[valid].argsort(descending=True)
    return valid[order[:n]].tolist()


@torch.no_grad()
def attention_weights(model: PathwayModel, x: Tensor, stream: str, block: int) -> Tensor:
    """``(B, heads, N, N)`` attention probabilities of block ``block`` (0-based) of a stream,
    on unmasked input (recomputed from the block's own query/key projections)."""
    from analysis.features import _stream_input

    x = _stream_input(model, stream, x)
    blocks = model.blocks(stream)
    if not 0 <= block < len(blocks):
        raise ValueError(f"block must be in [0, {len(blocks)}), got {block}")
    h = model.embed(x, stream)
    for i, (_, out) in enumerate(model.forward_encoder(stream, h, by="block"), start=1):
        if i > block:
            break
        h = out  # the output of block i, the input of block i + 1
    attn = blocks[block].attn
    B, N, D = h.shape
    qkv = attn.qkv(blocks[block].norm1(h)).reshape(B, N, 3, attn.heads, D // attn.heads)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return torch.softmax(q @ k.transpose(-2, -1) / (D // attn.heads) ** 0.5, dim=-1)


def attention_figure(model: PathwayModel, x: Tensor, stream: str, blocks=None, heads=None, query=None,
                     sample: int = 0):
    """Where a query token looks, per chosen block and head, over the token grid.

    Args:
        blocks: 0-based block indices (default: the last block of each area).
        heads: head indices (default: the first four).
        query: token index (default: the centre token of the middle token-frame).
    """
    from analysis.features import _stream_input

    layout = model.streams[stream].layout
    frame_input = _stream_input(model, stream, x)
    step = model.pathway.stream(stream).frame_step
    seen = frame_input[:, :, ::step] if layout.is_video and step > 1 else frame_input  # what the stream sees
    grid = layout.grid(seen.shape)
    *time, gh, gw = grid
    if blocks is None:
        ends, total = [], 0
        for a in model.pathway.stream(stream).areas:
            total += a.blocks
            if a.blocks:
                ends.append(total - 1)
        blocks = ends
    n_heads = model.pathway.encoder.heads
    heads = list(heads) if heads is not None else list(range(min(4, n_heads)))
    t_mid = time[0] // 2 if time else 0
    if query is None:
        query = t_mid * gh * gw + (gh // 2) * gw + gw // 2
    image = seen[sample].float()
    image = image / 255 if seen.dtype == torch.uint8 else image
    shown = image[:, image.shape[1] // 2] if image.ndim == 4 else image
    fig, axes = plt.subplots(len(blocks), len(heads) + 1, figsize=(1.9 * (len(heads) + 1), 1.9 * len(blocks)),
                             squeeze=False)
    qy, qx = (query % (gh * gw)) // gw, query % gw
    for row, b in enumerate(blocks):
        weights = attention_weights(model, x[sample:sample + 1], stream, b)[0]  # (heads, N, N)
        axes[row, 0].imshow(shown.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        axes[row, 0].scatter([(qx + 0.5) * layout.patch], [(qy + 0.5) * layout.patch], c="red", s=12)
        axes[row, 0].set_ylabel(f"block {b + 1}", fontsize=8)
        H, W = shown.shape[-2:]
        for col, head in enumerate(heads, start=1):
            m = weights[head, query].reshape(*(time or [1]), gh, gw)[t_mid if time else 0]
            axes[row, col].imshow(shown.mean(0).cpu().numpy(), cmap="gray", extent=(0, W, H, 0))
            axes[row, col].imshow(m.cpu().numpy(), cmap="inferno", alpha=0.7, extent=(0, W, H, 0))
            if row == 0:
                axes[row, col].set_title(f"head {head}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{stream} stream: attention of the red token (its token-frame shown)", fontsize=9)
    fig.tight_layout()
    return fig


def tuning_distributions(report):
    """Histograms of OSI (every stream) and DSI (video streams) over every responsive unit of
    each area: the whole population, not only its median or best units."""
    rows = [(s, a) for s, areas in report.orientation.items() for a in areas]
    fig, axes = plt.subplots(2, len(rows), figsize=(2.2 * len(rows), 3.6), squeeze=False, sharey="row")
    bins = torch.linspace(0, 1, 11).tolist()
    for col, (stream, area) in enumerate(rows):
        for row, (name, values) in enumerate((("OSI", report.orientation[stream][area].osi),
                                              ("DSI", report.direction.get(stream, {}).get(area)))):
            ax = axes[row, col]
            if values is not None and not isinstance(values, torch.Tensor):
                values = values.dsi
            if values is None:
                ax.axis("off")
                continue
            v = values[~values.isnan()].clamp(0, 1)
            ax.hist(v.numpy(), bins=bins, color="tab:blue" if row == 0 else "tab:orange")
            ax.set_title(f"{stream}.{area} {name}\n{len(v)} responsive units", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def loss_curves(metrics_file):
    """Each stage's per-area losses over its steps, from a run's ``metrics.jsonl``."""
    from visualpath.rundir import metrics_records

    records = metrics_records(metrics_file)
    stages = [s for s in dict.fromkeys(r["stage"] for r in records) if s != "test"]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4 * max(1, len(stages)), 3), squeeze=False)
    skip = {"stage", "time", "epoch", "step", "lr", "clips_per_s", "top1", "top5", "count"}
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in records if r["stage"] == stage]
        for key in [k for k in rows[0] if k not in skip]:
            points = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key, lw=1)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def neural_figure(result: Mapping):
    """Per region (rows): each area's median noise-corrected predictivity with its 95%
    bootstrap interval, trained (filled) beside random weights (hatched), the dashed line at
    1 the recording's ceiling; and each area's RSA with the recording (mean and standard
    error over data RDMs) inside rsatoolbox's noise-ceiling band. From
    :func:`analysis.neural.neural_report`'s results."""
    import numpy as np

    trained, random_init = result["trained"], result.get("random_init")
    regions = list(trained["encoding"]["regions"])
    areas = list(next(iter(trained["encoding"]["regions"].values()))["areas"])
    x = np.arange(len(areas))
    fig, axes = plt.subplots(len(regions), 2, figsize=(max(6.0, 1.1 * len(areas) + 3), 2.6 * len(regions)),
                             squeeze=False)

    def nan(v):
        return float("nan") if v is None else v

    for row, region in enumerate(regions):
        enc, ax = trained["encoding"]["regions"][region], axes[row, 0]
        runs = [("trained", trained, {"color": "tab:blue"})]
        if random_init:
            runs.append(("random weights", random_init, {"color": "white", "edgecolor": "tab:blue", "hatch": "///"}))
        width = 0.8 / len(runs)
        for k, (label, run, style) in enumerate(runs):
            rows = run["encoding"]["regions"][region]["areas"]
            med = np.array([nan(rows[a]["median_corrected"]) for a in areas])
            lo = np.array([nan(rows[a]["lo"]) for a in areas])
            hi = np.array([nan(rows[a]["hi"]) for a in areas])
            ax.bar(x + (k - (len(runs) - 1) / 2) * width, med, width, label=label,
                   yerr=np.nan_to_num(np.stack([med - lo, hi - med]).clip(0)), capsize=2, **style)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xticks(x, areas, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("noise-corrected r", fontsize=8)
        readout = result.get("readout", {}).get(region, "")
        ax.set_title(f"{region}: encoding, {readout} readout ({enc['neuroids']} neuroids, ceiling "
                     f"{nan(enc['median_ceiling']):.2f}); best: {enc['assigned_area']}", fontsize=8)
        if row == 0:
            ax.legend(fontsize=6)
        rsa, ax = trained["rsa"]["regions"][region], axes[row, 1]
        low, high = (nan(v) for v in rsa["noise_ceiling"])
        if np.isfinite(low):
            ax.axhspan(low, high, color="0.85", label="noise ceiling")
        for k, (label, run, style) in enumerate(runs):
            rows = run["rsa"]["regions"][region]["areas"]
            ax.bar(x + (k - (len(runs) - 1) / 2) * width, [rows[a]["mean"] for a in areas], width, label=label,
                   yerr=[nan(rows[a]["sem"]) if rows[a]["sem"] is not None else 0 for a in areas], capsize=2, **style)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xticks(x, areas, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"RSA ({trained['rsa']['method']})", fontsize=8)
        ax.set_title(f"{region}: RSA with rsatoolbox", fontsize=8)
        if row == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
