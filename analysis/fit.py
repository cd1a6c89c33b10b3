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

from analysis.features import _batches
from visualpath.pathway import PathwayModel

__all__ = ["target_fit"]


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
