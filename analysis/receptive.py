"""Receptive fields by reverse correlation: what in the stimulus drives each unit.

A unit's receptive field is estimated as its spike-triggered average (Chichilnisky 2001;
Ringach & Shapley 2004) over random stimuli: the mean stimulus weighted by the unit's
response minus its mean, divided by the stimulus variance,
``RF = E[(r - E r)(s - E s)] / Var(s)``, which for a linear unit ``r = <w, s>`` is ``w``
itself. Two kinds of stimulus:

- ``"white"``: binary white noise, every pixel (and channel, and frame) independently
  ``0.5 +- 0.25``;
- ``"sparse"``: a grey field with ``dots`` pixels per stimulus (per frame for clips) set to
  black or white at random (sparse noise, as mapped in V1).

For a video stream the stimulus is a clip, and each unit gets a spatio-temporal receptive
field ``(C, T, H, W)``. An area's units are the channels of its output at one token -- the
centre of the grid by default -- so each field is drawn in the input's pixels around that
token. :func:`reverse_correlation` takes any ``respond(stimuli) -> {name: (B, D)}``, which is
how it is checked on units whose field is known (tests/analysis/test_receptive.py).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

from visualpath.model import PathwayModel

__all__ = ["reverse_correlation", "area_receptive_fields", "NOISES"]

NOISES = ("white", "sparse")
_MAX_FIELD_BYTES = 2 * 2**30  # the running sums of every unit's field


def _stimuli(kind: str, shape: tuple[int, ...], n: int, generator: torch.Generator, dots: int) -> Tensor:
    """``n`` stimuli ``(n, *shape)`` in [0, 1]."""
    if kind == "white":
        signs = torch.randint(0, 2, (n, *shape), generator=generator).float()
        return 0.25 + 0.5 * signs
    out = torch.full((n, *shape), 0.5)
    C, *rest = shape
    frames = rest[0] if len(rest) == 3 else 1
    H, W = rest[-2:]
    flat = out.view(n, C, frames, H * W)
    where = torch.randint(0, H * W, (n, 1, frames, dots), generator=generator).expand(n, C, frames, dots)
    value = torch.randint(0, 2, (n, 1, frames, dots), generator=generator).float().expand(n, C, frames, dots)
    flat.scatter_(3, where, value)  # black (0) or white (1) dots on grey, the same in every channel
    return out


def reverse_correlation(respond: Callable[[Tensor], Mapping[str, Tensor]], shape: tuple[int, ...], *,
                        n: int = 2048, noise: str = "white", batch: int = 64, seed: int = 0, dots: int = 2
                        ) -> dict[str, Tensor]:
    """Every unit's receptive field: ``{name: (D, *shape)}`` for ``respond``'s outputs
    ``{name: (B, D)}`` to ``n`` random stimuli of ``shape`` (``(C, H, W)`` or ``(C, T, H, W)``).

    Raises:
        ValueError: an unknown ``noise``, ``n`` below 2, or fields too large to accumulate
            (units x stimulus size over 2 GiB; probe fewer units or a smaller stimulus).
    """
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    if n < 2 or batch < 1 or dots < 1:
        raise ValueError(f"n must be >= 2 and batch, dots >= 1, got n={n}, batch={batch}, dots={dots}")
    generator = torch.Generator().manual_seed(seed)
    sum_rs: dict[str, Tensor] = {}
    sum_r: dict[str, Tensor] = {}
    sum_s = torch.zeros(shape, dtype=torch.float64)
    sum_ss = torch.zeros((), dtype=torch.float64)
    seen = 0
    while seen < n:
        s = _stimuli(noise, shape, min(batch, n - seen), generator, dots)
        with torch.no_grad():
            responses = respond(s)
        flat = s.flatten(1).double()
        for name, r in responses.items():
            r = r.detach().double().cpu()
            if name not in sum_rs:
                if r.shape[1] * flat.shape[1] * 8 > _MAX_FIELD_BYTES:
                    raise ValueError(f"{name}: {r.shape[1]} units x {flat.shape[1]} stimulus values are too many "
                                     "fields to accumulate; use a smaller stimulus")
                sum_rs[name] = torch.zeros(r.shape[1], flat.shape[1], dtype=torch.float64)
                sum_r[name] = torch.zeros(r.shape[1], dtype=torch.float64)
            sum_rs[name] += r.T @ flat
            sum_r[name] += r.sum(0)
        sum_s += s.double().sum(0)
        sum_ss += (s.double() ** 2).sum()
        seen += s.shape[0]
    mean_s = sum_s.flatten() / seen
    variance = float(sum_ss / (seen * mean_s.numel()) - (mean_s ** 2).mean())
    return {name: ((sum_rs[name] / seen - torch.outer(sum_r[name] / seen, mean_s)) / variance)
            .float().view(-1, *shape) for name in sum_rs}


def area_receptive_fields(model: PathwayModel, stream: str, *, size: int, frames: int = 8, token: int | None = None,
                          **options) -> dict[str, Tensor]:
    """Each area's units' receptive fields, ``{area: (D, C, [T,] H, W)}``: the channels of the
    area's output at ``token`` (default: the centre of the token grid) under
    :func:`reverse_correlation` of stimuli at the stream's input size (``frames`` for a
    video stream). ``options``: ``n``, ``noise``, ``batch``, ``seed``, ``dots``."""
    from analysis.features import token_grid

    video = model.pathway.stream(stream).modality == "video"
    enc = model.pathway.encoder
    shape = (enc.channels, frames, size, size) if video else (enc.channels, size, size)
    device = next(model.parameters()).device
    grid = token_grid(model, stream, torch.zeros(1, *shape))  # a stream's own frame step included
    if token is None:  # the centre: the middle of each axis of the grid
        token = 0
        for extent in grid:
            token = token * extent + extent // 2
    was_training = model.training
    model.eval()

    def respond(s: Tensor) -> dict[str, Tensor]:
        return {area: f[:, token] for area, f in model.features(s.to(device), stream).items()}

    try:
        return reverse_correlation(respond, shape, **options)
    finally:
        model.train(was_training)


def receptive_field_figure(fields: Mapping[str, Tensor], units: int = 4, title: str | None = None):
    """The ``units`` strongest fields (by energy) of each area, as luminance (the mean over
    channels; red brighter, blue darker than grey), one column per frame for clips."""
    import matplotlib.pyplot as plt

    areas = list(fields)
    frames = fields[areas[0]].shape[2] if fields[areas[0]].ndim == 5 else 1
    fig, axes = plt.subplots(len(areas) * units, frames, figsize=(1.2 * frames + 1, 1.2 * len(areas) * units),
                             squeeze=False)
    for i, area in enumerate(areas):
        rf = fields[area].mean(1)  # (D, [T,] H, W) luminance
        energy = rf.flatten(1).pow(2).sum(1)
        for j, unit in enumerate(energy.argsort(descending=True)[:units].tolist()):
            unit_rf = rf[unit] if rf.ndim == 4 else rf[unit][None]
            limit = float(unit_rf.abs().max()) or 1.0
            for t in range(frames):
                ax = axes[i * units + j, t]
                ax.imshow(unit_rf[t], cmap="RdBu_r", vmin=-limit, vmax=limit)
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(f"{area} #{unit}", fontsize=7)
                if i == j == 0 and frames > 1:
                    ax.set_title(f"t={t}", fontsize=7)
    fig.suptitle(title or "receptive fields (reverse correlation)", fontsize=9)
    fig.tight_layout()
    return fig
