"""Neuron-style probes: orientation, spatial-frequency and direction tuning of units.

A *unit* is one channel of an area's features, averaged over the tokens of the stimulus
(the stimuli fill the view, so every token sees the same pattern). Stimuli:

- static sinusoidal gratings at ``orientations`` x ``frequencies`` x ``phases``; a unit's
  response to an (orientation, frequency) is its mean over phases (a complex-cell-style
  read-out);
- drifting gratings: the same grating moving at ``speed`` pixels per frame along each of
  ``directions`` (the direction of motion is the grating's normal).

Responses are measured against a uniform grey stimulus of the same mean luminance and
rectified, as a firing rate above baseline: ``r = max(f(stimulus) - f(grey), 0)``. A unit
that no stimulus drives above baseline has no tuning (NaN) and is left out of the medians.

Indices (Ringach et al., 2002; Niell & Stryker, 2008):

- circular variance ``CV = 1 - |sum_k r_k exp(2 i theta_k)| / sum_k r_k`` (0: one
  orientation, 1: none preferred);
- ``OSI = (R_pref - R_orth) / (R_pref + R_orth)``, ``R_orth`` at the preferred orientation
  + 90 degrees;
- ``DSI = (R_pref - R_null) / (R_pref + R_null)``, ``R_null`` at the preferred direction
  + 180 degrees.

Angles are in degrees, counter-clockwise from the image's x axis with y pointing up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = ["gratings", "drifting_gratings", "orientation_tuning", "direction_tuning", "OrientationTuning",
           "DirectionTuning", "area_responder", "tuning_report", "AreaTuning"]

Respond = Callable[[Tensor], Tensor]  # (S, C, [T,] H, W) stimuli in [0, 1] -> (S, U) responses


def _plane(size: int, theta_deg: Tensor, freq: Tensor, phase: Tensor, shift: Tensor | float = 0.0) -> Tensor:
    """``0.5 + contrast/2 * cos(2 pi f (x cos t + y sin t) - 2 pi f shift + phase)``, y up."""
    c = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2)
    y, x = -c[:, None], c[None, :]
    t = torch.deg2rad(theta_deg.double())[..., None, None]
    f = freq.double()[..., None, None]
    arg = 2 * math.pi * f * (x * torch.cos(t) + y * torch.sin(t) - torch.as_tensor(shift).double()[..., None, None])
    return torch.cos(arg + phase.double()[..., None, None])


def gratings(size: int, orientations, frequencies, phases: int = 4, contrast: float = 1.0) -> Tensor:
    """Static grey-level gratings ``(O, F, P, 3, size, size)`` in [0, 1].

    Args:
        orientations: degrees of the grating's normal (0: vertical bars).
        frequencies: cycles per pixel (e.g. ``1/16`` for one cycle per patch).
        phases: evenly spaced spatial phases per (orientation, frequency).
    """
    o = torch.as_tensor(orientations, dtype=torch.float64)
    f = torch.as_tensor(frequencies, dtype=torch.float64)
    p = torch.arange(phases, dtype=torch.float64) * 2 * math.pi / phases
    O, Fq, P = torch.meshgrid(o, f, p, indexing="ij")
    wave = _plane(size, O, Fq, P)
    image = 0.5 + 0.5 * contrast * wave
    return image[..., None, :, :].expand(*image.shape[:3], 3, size, size).float()


def drifting_gratings(size: int, frames: int, directions, frequency: float, speed: float, phases: int = 2,
                      contrast: float = 1.0) -> Tensor:
    """Drifting gratings ``(Dir, P, 3, frames, size, size)`` in [0, 1], moving ``speed``
    pixels per frame along each direction (degrees)."""
    d = torch.as_tensor(directions, dtype=torch.float64)
    p = torch.arange(phases, dtype=torch.float64) * 2 * math.pi / phases
    D, P = torch.meshgrid(d, p, indexing="ij")
    clips = []
    for t in range(frames):
        clips.append(_plane(size, D, torch.full_like(D, frequency), P, shift=speed * t))
    video = 0.5 + 0.5 * contrast * torch.stack(clips, dim=2)  # (Dir, P, T, H, W)
    return video[:, :, None].expand(*video.shape[:2], 3, *video.shape[2:]).float()


def _rectified(respond: Respond, stimuli: Tensor, batch: int) -> Tensor:
    """``max(respond(stimuli) - respond(grey), 0)`` for a flat ``(S, ...)`` stack."""
    grey = torch.full_like(stimuli[:1], 0.5)
    base = respond(grey)
    out = [respond(stimuli[i:i + batch]) for i in range(0, len(stimuli), batch)]
    return (torch.cat(out) - base).clamp_min(0).double()


@dataclass
class OrientationTuning:
    """Per-unit orientation and spatial-frequency tuning.

    Attributes:
        responses: ``(O, F, U)`` rectified responses (mean over phases).
        orientations, frequencies: the stimulus grid.
        preferred_orientation: ``(U,)`` degrees in [0, 180), at the preferred frequency.
        preferred_frequency: ``(U,)`` cycles per pixel.
        circular_variance, osi: ``(U,)``; NaN for units with no response.
    """

    responses: Tensor
    orientations: Tensor
    frequencies: Tensor
    preferred_orientation: Tensor
    preferred_frequency: Tensor
    circular_variance: Tensor
    osi: Tensor

    def summary(self) -> dict[str, float]:
        return {"osi": _nanmedian(self.osi), "circular_variance": _nanmedian(self.circular_variance),
                "responsive": float((~self.osi.isnan()).double().mean())}


@dataclass
class DirectionTuning:
    """Per-unit direction tuning: ``responses (Dir, U)``, preferred direction, DSI."""

    responses: Tensor
    directions: Tensor
    preferred_direction: Tensor
    dsi: Tensor

    def summary(self) -> dict[str, float]:
        return {"dsi": _nanmedian(self.dsi), "responsive": float((~self.dsi.isnan()).double().mean())}


def _nanmedian(x: Tensor) -> float:
    x = x[~x.isnan()]
    return float(x.median()) if len(x) else float("nan")


def _nearest(angles: Tensor, target: Tensor, period: float) -> Tensor:
    """Index into ``angles`` nearest to each ``target`` on a circle of ``period`` degrees."""
    d = (angles[None, :] - target[:, None]).remainder(period)
    return torch.minimum(d, period - d).argmin(1)


def orientation_tuning(respond: Respond, size: int, orientations=None, frequencies=None, phases: int = 4,
                       batch: int = 32) -> OrientationTuning:
    """Orientation and spatial-frequency tuning of the units ``respond`` returns.

    Args:
        respond: stimuli ``(S, 3, size, size)`` in [0, 1] -> ``(S, U)`` unit responses
            (e.g. :func:`area_responder`); static images, or clips when it says so itself.
        orientations: degrees in [0, 180) (default 12 steps of 15).
        frequencies: cycles per pixel (default 1/32, 1/16, 1/8, 1/4).
    """
    o = torch.as_tensor(orientations if orientations is not None else torch.arange(0, 180, 15), dtype=torch.float64)
    f = torch.as_tensor(frequencies if frequencies is not None else [1 / 32, 1 / 16, 1 / 8, 1 / 4],
                        dtype=torch.float64)
    stim = gratings(size, o, f, phases)  # (O, F, P, 3, H, W)
    r = _rectified(respond, stim.flatten(0, 2), batch)
    r = r.reshape(len(o), len(f), phases, -1).mean(2)  # (O, F, U)
    best_f = r.amax(0).argmax(0)  # (U,)
    curve = r.gather(1, best_f[None, None].expand(len(o), 1, -1)).squeeze(1)  # (O, U) at preferred frequency
    pref_i = curve.argmax(0)
    total = curve.sum(0)
    angle = torch.deg2rad(2 * o)[:, None]
    vec = torch.sqrt((curve * torch.cos(angle)).sum(0) ** 2 + (curve * torch.sin(angle)).sum(0) ** 2)
    cv = torch.where(total > 0, 1 - vec / total.clamp_min(1e-30), torch.full_like(total, float("nan")))
    pref = o[pref_i]
    orth = _nearest(o, (pref + 90).remainder(180), 180)
    r_pref = curve.gather(0, pref_i[None])[0]
    r_orth = curve.gather(0, orth[None])[0]
    osi = torch.where(total > 0, (r_pref - r_orth) / (r_pref + r_orth).clamp_min(1e-30),
                      torch.full_like(total, float("nan")))
    return OrientationTuning(r, o, f, pref, f[best_f], cv, osi)


def direction_tuning(respond: Respond, size: int, frames: int, directions=None, frequency: float = 1 / 16,
                     speed: float = 2.0, phases: int = 2, batch: int = 16) -> DirectionTuning:
    """Direction tuning of the units ``respond`` returns for drifting gratings
    ``(S, 3, frames, size, size)``; directions default to 12 steps of 30 degrees."""
    d = torch.as_tensor(directions if directions is not None else torch.arange(0, 360, 30), dtype=torch.float64)
    stim = drifting_gratings(size, frames, d, frequency, speed, phases)
    r = _rectified(respond, stim.flatten(0, 1), batch).reshape(len(d), phases, -1).mean(1)  # (Dir, U)
    pref_i = r.argmax(0)
    pref = d[pref_i]
    null = _nearest(d, (pref + 180).remainder(360), 360)
    r_pref = r.gather(0, pref_i[None])[0]
    r_null = r.gather(0, null[None])[0]
    total = r.sum(0)
    dsi = torch.where(total > 0, (r_pref - r_null) / (r_pref + r_null).clamp_min(1e-30),
                      torch.full_like(total, float("nan")))
    return DirectionTuning(r, d, pref, dsi)


# --------------------------------------------------------------------------- pathway areas


def area_responder(model, stream: str, areas=None, frames: int = 16, device=None) -> Respond:
    """``respond`` for areas of a pathway: features averaged over tokens, the areas' units
    side by side (``areas`` default: all of the stream's, in order).

    Static images given to a video stream are repeated over ``frames`` frames."""
    from analysis.features import area_features

    device = device or next(model.parameters()).device
    layout = model.streams[stream].layout
    names = list(areas) if areas is not None else [a.name for a in model.pathway.stream(stream).areas]

    @torch.no_grad()
    def respond(x: Tensor) -> Tensor:
        if layout.is_video and x.ndim == 4:
            x = x[:, :, None].expand(-1, -1, frames, -1, -1)
        feats = area_features(model, x.to(device), stream)
        return torch.cat([feats[a].mean(1).float().cpu() for a in names], dim=1)

    return respond


def _units(tuning, lo: int, hi: int):
    """The tuning of units ``lo:hi`` only (per-unit fields sliced on their last axis)."""
    import dataclasses

    fixed = {"orientations", "frequencies", "directions"}
    return dataclasses.replace(tuning, **{f.name: getattr(tuning, f.name)[..., lo:hi]
                                          for f in dataclasses.fields(tuning) if f.name not in fixed})


@dataclass
class AreaTuning:
    """Tuning of every area of a pathway: ``orientation[stream][area]`` and
    ``direction[stream][area]`` (video streams only), with :meth:`table` rows."""

    orientation: dict[str, dict[str, OrientationTuning]] = field(default_factory=dict)
    direction: dict[str, dict[str, DirectionTuning]] = field(default_factory=dict)

    def table(self) -> list[dict]:
        rows = []
        for stream, areas in self.orientation.items():
            for area, tuning in areas.items():
                row = {"stream": stream, "area": area, **tuning.summary()}
                if area in self.direction.get(stream, {}):
                    row["dsi"] = self.direction[stream][area].summary()["dsi"]
                rows.append(row)
        return rows


@torch.no_grad()
def tuning_report(model, size: int = 64, frames: int = 16, streams=None, speed: float = 2.0,
                  frequency: float = 1 / 16) -> AreaTuning:
    """Orientation tuning of every area of every stream, and direction tuning of every area
    of the video streams: "is V1 more orientation-tuned than V4, is MT more
    direction-selective than V2?" in one call (see :meth:`AreaTuning.table`)."""
    was_training = model.training
    model.eval()
    report = AreaTuning()
    for stream in streams or list(model.streams):
        layout = model.streams[stream].layout
        areas = [a.name for a in model.pathway.stream(stream).areas]
        respond = area_responder(model, stream, areas, frames=frames)
        bounds, width = [], model.pathway.encoder.width
        for i in range(len(areas)):
            bounds.append((i * width, (i + 1) * width))
        ori = orientation_tuning(respond, size)
        report.orientation[stream] = {a: _units(ori, lo, hi) for a, (lo, hi) in zip(areas, bounds)}
        if layout.is_video:
            direc = direction_tuning(respond, size, frames, frequency=frequency, speed=speed)
            report.direction[stream] = {a: _units(direc, lo, hi) for a, (lo, hi) in zip(areas, bounds)}
    model.train(was_training)
    return report
