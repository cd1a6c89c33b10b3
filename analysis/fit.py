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
from visualpath.model import PathwayModel

__all__ = ["target_fit", "target_fit_details", "neighbour_fit", "visible_fit", "channel_fit", "channel_means", "interpolate_visible"]


def target_fit(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16, seed: int = 0,
               device: str | torch.device = "cpu", part: str | None = None) -> dict[str, dict[str, float]]:
    """``{stream: {area: unexplained fraction}}`` over ``batches`` batches of ``data``.

    Each area's fraction is ``sum (prediction - target)^2 / sum (target - its mean)^2``,
    the mean taken per target value over all the masked test tokens: 1 is no better than
    predicting the average target.

    ``data`` is a clip dataset (e.g. :func:`analysis.features.run_dataset`) or a
    ``(N, C, T, H, W)`` tensor; every stream of ``model`` sees each batch (an image stream
    takes one frame per clip, as in training). ``part`` scores one of the two parts that
    :func:`channel_fit` splits a target into, the prediction's part against the target's:
    ``"means"``, each token's channel means; ``"inside"``, what is left of it (None: the
    whole target).
    """
    details = target_fit_details(model, data, batches=batches, batch_size=batch_size, seed=seed, device=device,
                                 part=part)
    return {stream: {area: d["left"] for area, d in areas.items()} for stream, areas in details.items()}


@torch.no_grad()
def target_fit_details(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16, seed: int = 0,
                       device: str | torch.device = "cpu", part: str | None = None
                       ) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`target_fit` (same arguments) with each target's average share:
    ``{stream: {area: {"left": fraction, "average_share": share}}}``.

    ``average_share`` is the part of the target's sum of squares, ``sum target^2``, that its
    average (per value, over the masked test tokens) accounts for. The training loss is
    measured against predicting zero, so a decoder that learned only the average target
    trains at a loss near ``1 - average_share`` (of a target standardised to mean square 1),
    below 1, while it leaves all of the target's variance (``left`` near 1).
    """
    if part not in (None, "means", "inside"):
        raise ValueError(f"part must be None, 'means' or 'inside', got {part!r}")
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
                    if part is not None:
                        channels = _channels(model, stream, area, t.shape[-1])
                        t_means, p_means = channel_means(t, channels), channel_means(p, channels)
                        t, p = (t_means, p_means) if part == "means" else (t - t_means, p - p_means)
                    acc = sums.setdefault((stream, area), [0.0, 0.0, 0.0, 0])
                    acc[0] += float(((p - t) ** 2).sum())
                    acc[1] = acc[1] + t.sum(0).double()
                    acc[2] = acc[2] + (t.double() ** 2).sum(0)
                    acc[3] += t.shape[0]
    finally:
        model.train(was_training)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for (stream, area), (sse, s1, s2, n) in sums.items():
        total = float((s2 - s1 ** 2 / n).sum())  # sum over dims of the per-dimension squared deviations
        squares = float(s2.sum())
        # no variance beyond rounding (e.g. the channel means of a target standardised per channel): undefined
        defined = total > 1e-12 * n * s1.numel()
        result.setdefault(stream, {})[area] = {"left": sse / total if defined else float("nan"),
                                               "average_share": 1 - total / squares if squares > 0 else float("nan")}
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


def _stream_batches(model: PathwayModel, data, batches: int | None, batch_size: int, device):
    """``(stream, grid, targets)`` for every stream of every batch of ``data``: each clip's
    middle frame is what an image stream reads; the grid is the token grid the stream sees
    (the model's own rule: every ``frame_step``-th frame of a clip)."""
    for i, (x, _) in enumerate(_batches(data, batch_size, workers=0)):
        if batches is not None and i >= batches:
            break
        x = x.to(device)
        batch = {"video": x, "image": x[:, :, x.shape[2] // 2]}
        for stream in model.streams:
            inp = model.target_input(batch, stream)
            yield stream, inp.layout.grid(inp.pixels.shape), model.targets(batch, stream, inp)


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
    for stream, grid, targets in _stream_batches(model, data, batches, batch_size, device):
        for area, t in targets.items():
            y = t.double().reshape(t.shape[0], *grid, t.shape[-1])
            n = _neighbour_mean(y).reshape(-1, t.shape[-1])
            y = y.reshape(-1, t.shape[-1])
            _accumulate(sums.setdefault((stream, area), {}), y, n)
    return _scaled_fractions(sums)


def _accumulate(acc: dict, y: torch.Tensor, n: torch.Tensor) -> None:
    """Add ``(K, P)`` targets ``y`` and their references ``n`` to the running sums ``acc``."""
    for key, value in (("yn", float((y * n).sum())), ("nn", float((n * n).sum())), ("yy", float((y * y).sum())),
                       ("sy", y.sum(0)), ("sn", n.sum(0)), ("count", y.shape[0])):
        acc[key] = acc.get(key, 0) + value


def _scaled_fractions(sums: dict) -> dict[str, dict[str, float]]:
    """``{stream: {area: fraction}}`` left by each reference scaled by its best single factor,
    on target_fit's per-dimension-centred scale (an offset is not structure): 1 - r^2."""
    result: dict[str, dict[str, float]] = {}
    for (stream, area), a in sums.items():
        k = a["count"]
        yn = a["yn"] - float((a["sy"] * a["sn"]).sum()) / k
        nn = a["nn"] - float((a["sn"] ** 2).sum()) / k
        yy = a["yy"] - float((a["sy"] ** 2).sum()) / k
        value = float("nan") if yy <= 0 else 1.0 - (yn ** 2 / (nn * yy) if nn > 0 else 0.0)
        result.setdefault(stream, {})[area] = value
    return result


def _grid_coords(grid: tuple[int, ...], device) -> torch.Tensor:
    """``(N, len(grid))`` float64 coordinates of a token grid, in token units, in token order."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64, device=device) for n in grid], indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, len(grid))


def interpolate_visible(targets: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor, coords: torch.Tensor,
                        power: float = 2.0) -> torch.Tensor:
    """Each masked token's target as the inverse-distance-weighted mean of the visible tokens'.

    Args:
        targets: ``(B, N, P)`` every token's target.
        keep, masked: ``(B, N_visible)``, ``(B, N_masked)`` token indices (a :class:`Mask`).
        coords: ``(N, G)`` token coordinates on the grid.
        power: weights are ``distance ** -power``.

    Returns:
        ``(B, N_masked, P)``.
    """
    if not power > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    seen = coords[keep]  # (B, Nv, G)
    hidden = coords[masked]  # (B, Nm, G)
    weights = torch.cdist(hidden, seen).clamp_min(1e-12) ** -power  # no masked token sits on a visible one
    weights = weights / weights.sum(-1, keepdim=True)
    visible = torch.gather(targets, 1, keep[..., None].expand(-1, -1, targets.shape[-1]))
    return torch.bmm(weights.to(targets.dtype), visible)


@torch.no_grad()
def visible_fit(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16, seed: int = 0,
                power: float = 2.0, device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """How much of each target the visible tokens give away: ``{stream: {area: fraction}}``.

    Each masked token's target is predicted by the inverse-distance-weighted mean
    (``distance ** -power``, in token units over the stream's whole grid, time included) of
    the true targets of the tokens the stream's own mask rule leaves visible, scaled by the
    best single factor as :func:`neighbour_fit` scales its mean (so that noise scores 1, not
    worse), on :func:`target_fit`'s per-dimension-centred scale.
    Unlike :func:`neighbour_fit`, it sees only what a masked model sees (a 0.9 tube mask
    leaves a token's nearest visible neighbour two or three tokens away); unlike a decoder,
    it knows nothing of the scene but those targets. A reference, not a bound, needing no
    training: a target that this interpolation leaves at about 1 has to be inferred (shapes
    continued, motion followed), which takes a model many steps to learn (decision S6).
    Masks are drawn from a fixed seed; an image stream reads each clip's middle frame.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    sums: dict[tuple[str, str], dict] = {}  # (stream, area) -> running sums
    for stream, grid, targets in _stream_batches(model, data, batches, batch_size, device):
        coords = _grid_coords(grid, device)
        mask = None
        for area, t in targets.items():
            if mask is None:  # one mask per stream and batch, as in training
                mask = model.pathway.stream(stream).mask(t.shape[0], grid, device=device, generator=generator)
            t = t.double()
            pred = interpolate_visible(t, mask.keep, mask.masked, coords, power)
            truth = torch.gather(t, 1, mask.masked[..., None].expand(-1, -1, t.shape[-1]))
            _accumulate(sums.setdefault((stream, area), {}), truth.reshape(-1, t.shape[-1]),
                        pred.reshape(-1, t.shape[-1]))
    return _scaled_fractions(sums)


def _channels(model: PathwayModel, stream: str, area: str, values: int) -> int:
    """Channels of ``area``'s target map in ``stream`` (:meth:`visualpath.Area.target_channels`)."""
    spec = next(a for a in model.pathway.stream(stream).areas if a.name == area)
    return spec.target_channels(model.streams[stream].layout, values)


def channel_means(targets: torch.Tensor, channels: int) -> torch.Tensor:
    """``(K, P)`` tokens, values ordered ``(..., channel)``: each value replaced by the mean of
    its channel over the token (a pixel tube's colour, a Gabor token's energy per orientation
    and wavelength)."""
    K, P = targets.shape
    if P % channels:
        raise ValueError(f"{P} values per token do not split into {channels} channels")
    v = targets.reshape(K, P // channels, channels)
    return v.mean(1, keepdim=True).expand_as(v).reshape(K, P)


@torch.no_grad()
def channel_fit(model: PathwayModel, data, *, batches: int | None = 8, batch_size: int = 16,
                device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """How much of each target lies inside its tokens: ``{stream: {area: fraction}}``, the
    fraction of the variance (scaled and centred as :func:`neighbour_fit` does) left when each
    token's target is predicted by its own channel means (:func:`channel_means`; the map's
    channels as ``area.target_side`` gives them, so pixels have 3 and a contour map 1).

    Not a reference from what a model sees (it reads the token's own target), but a split of
    the target in two: what a token holds on average per channel, and how that varies from
    pixel to pixel or cell to cell inside it. A model that learned the first part exactly and
    nothing of the second scores about this fraction (this one is over every token, not only
    masked ones); at the demo's scale, V4's first part is the colour of the scene, and MT has
    almost none (decision S6). Weights are not used; an image
    stream reads each clip's middle frame.
    """
    sums: dict[tuple[str, str], dict] = {}
    for stream, grid, targets in _stream_batches(model, data, batches, batch_size, device):
        for area, t in targets.items():
            channels = _channels(model, stream, area, t.shape[-1])
            y = t.double().reshape(-1, t.shape[-1])
            _accumulate(sums.setdefault((stream, area), {}), y, channel_means(y, channels))
    return _scaled_fractions(sums)
