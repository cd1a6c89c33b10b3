"""How well each area predicts its target at masked tokens: the fraction of the target's
variance its decoder leaves unexplained (``1 - R^2``).

A training loss alone does not say whether an area learned: V2's contour target is mostly
zeros, so its MSE is small whatever the model does, while the normalised targets (V1, V4,
MT) start near 1. Dividing the masked-token error by the target's own variance (about the
per-dimension mean over every masked token measured) puts every area on one scale: 1 is no
better than predicting the average target, 0 is exact. Masks are drawn from a fixed seed, so
two checkpoints are measured on the same tokens.
"""

from __future__ import annotations

import torch

from analysis.features import _batches, _stream_input
from visualpath.pathway import PathwayModel

__all__ = ["target_fit", "neighbour_fit"]


@torch.no_grad()
def target_fit(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16, seed: int = 0,
               device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """``{stream: {area: unexplained fraction}}`` over ``batches`` batches of ``data``.

    ``data`` is a clip dataset (e.g. :func:`analysis.features.run_dataset`) or a
    ``(N, C, T, H, W)`` tensor; every stream of ``model`` sees each batch (an image stream
    takes one frame per clip, as in training).
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    sums: dict[tuple[str, str], list] = {}  # (stream, area) -> [sse, sum t, sum t^2, count]
    try:
        for i, (x, _) in enumerate(_batches(data, batch_size, workers=0)):
            if batches is not None and i >= batches:
                break
            out = model({"video": x.to(device)}, generator=generator)
            for stream, s in out.streams.items():
                for area, pred in s.predictions.items():
                    t = s.targets[area].float().reshape(-1, s.targets[area].shape[-1])
                    p = pred.float().reshape(-1, pred.shape[-1])
                    acc = sums.setdefault((stream, area), [0.0, 0.0, 0.0, 0])
                    acc[0] += float(((p - t) ** 2).sum())
                    acc[1] = acc[1] + t.sum(0).double()
                    acc[2] = acc[2] + (t.double() ** 2).sum(0)
                    acc[3] += t.shape[0]
    finally:
        model.train(was_training)
    result: dict[str, dict[str, float]] = {}
    for (stream, area), (sse, s1, s2, n) in sums.items():
        total = float((s2 - s1 ** 2 / n).sum())  # sum over dims of the per-dimension squared deviations
        result.setdefault(stream, {})[area] = sse / total if total > 0 else float("nan")
    return result


def _neighbour_mean(x: torch.Tensor) -> torch.Tensor:
    """``(B, [T,] H, W, P)`` -> the mean of each token's 8 spatial neighbours (same time),
    over those inside the grid."""
    lead = x.shape[:-3]
    H, W, P = x.shape[-3:]
    x = x.reshape(-1, H, W, P).permute(0, 3, 1, 2)  # (B*T, P, H, W)
    ones = torch.ones_like(x[:, :1])
    kernel = torch.ones(1, 1, 3, 3, dtype=x.dtype, device=x.device)
    kernel[..., 1, 1] = 0
    total = torch.nn.functional.conv2d(x.reshape(-1, 1, H, W), kernel, padding=1).view_as(x)
    count = torch.nn.functional.conv2d(ones, kernel, padding=1)
    return (total / count).permute(0, 2, 3, 1).reshape(*lead, H, W, P)


@torch.no_grad()
def neighbour_fit(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16,
                  device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """How much of each target a token's surroundings give away: ``{stream: {area: fraction}}``,
    the fraction of the target's variance (as :func:`target_fit` measures it) left when each
    token's target is predicted by the mean of its 8 spatial neighbours' true targets,
    scaled by the best single factor.

    A reference for :func:`target_fit`, which needs no training: with every neighbour
    visible, which a 0.75 or 0.9 mask rarely leaves, this simple interpolation is what a
    target's local redundancy offers. Weights are not used, only the graph's targets and
    token grid (decision S5). An image stream reads each clip's middle frame; a grid of one
    token has no neighbours (NaN).
    """
    sums: dict[tuple[str, str], dict] = {}  # (stream, area) -> running sums
    for i, (x, _) in enumerate(_batches(data, batch_size, workers=0)):
        if batches is not None and i >= batches:
            break
        x = x.to(device)
        batch = {"video": x, "image": x[:, :, x.shape[2] // 2]}
        for stream in model.streams:
            layout = model.streams[stream].layout
            seen = _stream_input(model, stream, x)  # an image stream's middle frame, as batch["image"]
            if layout.is_video:
                seen = seen[:, :, ::model.spec.stream(stream).frame_step]
            grid = layout.grid(seen.shape)
            for area, t in model.targets(batch, stream).items():
                y = t.double().reshape(t.shape[0], *grid, t.shape[-1])
                n = _neighbour_mean(y).reshape(-1, t.shape[-1])
                y = y.reshape(-1, t.shape[-1])
                acc = sums.setdefault((stream, area), {"yn": 0.0, "nn": 0.0, "yy": 0.0, "sy": 0.0, "sn": 0.0, "count": 0})
                acc["yn"] += float((y * n).sum())
                acc["nn"] += float((n * n).sum())
                acc["yy"] += float((y * y).sum())
                acc["sy"] = acc["sy"] + y.sum(0)
                acc["sn"] = acc["sn"] + n.sum(0)
                acc["count"] += y.shape[0]
    result: dict[str, dict[str, float]] = {}
    for (stream, area), a in sums.items():
        # centred on their per-dimension means, as target_fit's denominator: an offset is not structure
        k = a["count"]
        yn = a["yn"] - float((a["sy"] * a["sn"]).sum()) / k
        nn = a["nn"] - float((a["sn"] ** 2).sum()) / k
        yy = a["yy"] - float((a["sy"] ** 2).sum()) / k
        value = float("nan") if yy <= 0 else 1.0 - (yn ** 2 / (nn * yy) if nn > 0 else 0.0)
        result.setdefault(stream, {})[area] = value
    return result
