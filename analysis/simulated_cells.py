"""A simulated recording with a known answer, built without the model: V1 complex cells and
MT direction-selective cells responding to video clips, with Poisson spike counts.

- **V1 complex cells** (Adelson & Bergen's energy model, static form): a quadrature pair of
  Gabor filters (scikit-image's ``gabor_kernel``: even and odd parts) at one position,
  orientation and spatial frequency; the response to a clip is the energy
  ``sqrt(even^2 + odd^2)`` of each frame's luminance, averaged over frames. Receptive
  fields are small (a Gaussian envelope of a few pixels) and spread over the view.
- **MT cells** (pattern-motion cells after Simoncelli & Heeger, 1998): quadrature pairs of
  space-time Gabor filters whose spatial orientations lie within 60 degrees of a preferred
  direction, at two spatial frequencies, each tuned to the temporal frequency that motion
  at the preferred velocity (direction and speed in pixels per frame) gives it; their
  energy is pooled over a 3 x 3 set of positions of a large receptive field (about half
  the view) and divided by the energy of the same filters for the opposite direction, so
  the unit answers a velocity, little the texture that carries it or its contrast.

Each unit's energy over the stimuli is scaled to a rate ``baseline + gain * E / E_95``
(``E_95`` its 95th percentile) and spike counts are Poisson draws, independent across
``repetitions``. Because the rates are known, so is each unit's true reliability of the
repetition average, ``var_s(rate) / (var_s(rate) + mean_s(rate) / R)``: the noise ceiling
an analysis estimates can be checked against it (:func:`true_reliability`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.recordings import Recording

__all__ = ["SimulatedCells", "luminance", "v1_complex_energy", "mt_motion_energy", "simulate_recording",
           "true_reliability"]


@dataclass
class SimulatedCells:
    """The simulation's ground truth: ``rates`` ``(S, N)`` and each unit's parameters."""

    rates: np.ndarray
    regions: list[str]
    params: list[dict]
    repetitions: int

    @property
    def reliability(self) -> np.ndarray:
        return true_reliability(self.rates, self.repetitions)


def true_reliability(rates: np.ndarray, repetitions: int) -> np.ndarray:
    """``(N,)``: the share of the R-repetition average's variance over stimuli that is signal,
    for Poisson counts of mean ``rates`` ``(S, N)``."""
    signal = rates.var(0)
    return signal / (signal + rates.mean(0) / repetitions)


def luminance(clips: np.ndarray) -> np.ndarray:
    """``(S, T, H, W)`` luminance in [0, 1] of ``(S, 3, T, H, W)`` uint8 clips, each clip's mean
    removed (the filters answer contrast, not brightness)."""
    clips = np.asarray(clips, dtype=np.float64) / 255.0
    y = 0.299 * clips[:, 0] + 0.587 * clips[:, 1] + 0.114 * clips[:, 2]
    return y - y.mean(axis=(1, 2, 3), keepdims=True)


def _patch(y: np.ndarray, cy: int, cx: int, half: int) -> np.ndarray:
    """``(..., 2 half + 1, 2 half + 1)`` windows of the last two axes, zero outside the view."""
    H, W = y.shape[-2:]
    padded = np.pad(y, [(0, 0)] * (y.ndim - 2) + [(half, half), (half, half)])
    return padded[..., cy:cy + 2 * half + 1, cx:cx + 2 * half + 1]


def v1_complex_energy(lum: np.ndarray, cy: int, cx: int, frequency: float, theta: float) -> np.ndarray:
    """``(S,)``: the frame-averaged Gabor energy of a complex cell at ``(cy, cx)``."""
    from skimage.filters import gabor_kernel

    kernel = gabor_kernel(frequency, theta=theta, bandwidth=1.0)
    kernel = kernel - kernel.mean()  # no response to uniform light
    half = min(kernel.shape) // 2
    kernel = kernel[kernel.shape[0] // 2 - half: kernel.shape[0] // 2 + half + 1,
                    kernel.shape[1] // 2 - half: kernel.shape[1] // 2 + half + 1]
    window = _patch(lum, cy, cx, half)  # (S, T, k, k)
    S, T = window.shape[:2]
    flat = window.reshape(S * T, -1)
    response = flat @ kernel.real.reshape(-1) - 1j * (flat @ kernel.imag.reshape(-1))
    return np.abs(response).reshape(S, T).mean(1)


def _spatial_gabor(half: int, frequency: float, orientation: float) -> np.ndarray:
    """``(k, k)`` complex zero-mean Gabor of ``frequency`` cycles/px along ``orientation``,
    its Gaussian envelope's width ``0.5 / frequency``."""
    sigma = 0.5 / frequency
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    u = np.cos(orientation) * x + np.sin(orientation) * y
    envelope = np.exp(-(x * x + y * y) / (2 * sigma ** 2))
    g = envelope * np.exp(2j * np.pi * frequency * u)
    return g - envelope * g.sum() / envelope.sum()  # the envelope's share of the mean taken out


def _temporal(frames: int, temporal_frequency: float) -> np.ndarray:
    """``(T,)`` the temporal part of a space-time Gabor: a Gaussian over the clip times
    ``exp(-2 pi i f_t t)``, so that with a spatial carrier ``exp(2 pi i f u.x)`` the filter is
    tuned to patterns drifting along ``u`` at ``f_t / f`` pixels per frame."""
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2
    return np.exp(-t * t / (2 * (frames / 3) ** 2)) * np.exp(-2j * np.pi * temporal_frequency * t)


def mt_motion_energy(lum: np.ndarray, cy: int, cx: int, radius: int, frequency: float, direction: float,
                     speed: float) -> np.ndarray:
    """``(S,)``: the response of a pattern-motion cell (after Simoncelli & Heeger, 1998):
    motion energy summed over components whose spatial orientation lies within 60 degrees of
    ``direction`` at two spatial frequencies, each tuned to the temporal frequency that a
    pattern moving at ``speed`` along ``direction`` gives it, so the cell answers that velocity
    whatever the texture's orientation, pooled over a 3 x 3 set of positions ``radius``
    apart; divided by the same sum for the opposite direction plus the preferred one (and a
    constant, 5% of its median), which makes it direction selective and nearly independent
    of contrast. The space-time filters are separable (space x time), so each position needs
    one matrix product."""
    S, T = lum.shape[:2]
    half = int(np.ceil(2.5 * 0.5 / frequency))
    offsets = np.deg2rad([-60, -30, 0, 30, 60])
    components = [(f, o) for f in (frequency, 2 * frequency) for o in offsets]
    bank = np.stack([_spatial_gabor(half, f, direction + o).reshape(-1) for f, o in components], 1)  # (k*k, C)
    tf = np.array([f * speed * np.cos(o) for f, o in components])  # each component's temporal frequency
    preferred_t = np.stack([_temporal(T, v) for v in tf], 1)  # (T, C)
    opposite_t = np.stack([_temporal(T, -v) for v in tf], 1)
    preferred, opposite = np.zeros(S), np.zeros(S)
    for dy in (-radius, 0, radius):
        for dx in (-radius, 0, radius):
            flat = _patch(lum, cy + dy, cx + dx, half).reshape(S * T, -1)
            spatial = (flat @ bank.real - 1j * (flat @ bank.imag)).reshape(S, T, -1)  # correlation with the bank
            preferred += (np.abs(np.einsum("stc,tc->sc", spatial, np.conj(preferred_t))) ** 2).sum(1)
            opposite += (np.abs(np.einsum("stc,tc->sc", spatial, np.conj(opposite_t))) ** 2).sum(1)
    total = preferred + opposite
    return preferred / (total + 0.05 * np.median(total) + 1e-12)


def _rates(energy: np.ndarray, rng) -> tuple[np.ndarray, float, float]:
    baseline, gain = rng.uniform(0.5, 2.0), rng.uniform(1.0, 6.0)
    scale = np.percentile(energy, 95)
    return baseline + gain * energy / (scale if scale > 0 else 1.0), baseline, gain


def simulate_recording(clips: np.ndarray, stimulus_ids: list[str] | None = None, v1: int = 40, mt: int = 40,
                       repetitions: int = 6, seed: int = 0) -> tuple[Recording, SimulatedCells]:
    """A recording of ``v1`` V1 complex cells and ``mt`` MT cells to ``clips`` ``(S, 3, T, H, W)``
    uint8, with Poisson counts over ``repetitions``; and its ground truth."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"clips must be (S, 3, T, H, W), got {clips.shape}")
    rng = np.random.default_rng(seed)
    lum = luminance(clips)
    S, T, H, W = lum.shape
    scale = H / 64  # the filters' sizes follow the view
    rates, regions, params = [], [], []
    for _ in range(v1):
        p = dict(region="V1", cy=int(rng.integers(H // 8, H - H // 8)), cx=int(rng.integers(W // 8, W - W // 8)),
                 frequency=float(rng.uniform(1 / 12, 1 / 5) / scale), theta=float(rng.uniform(0, np.pi)))
        rate, p["baseline"], p["gain"] = _rates(v1_complex_energy(lum, p["cy"], p["cx"], p["frequency"], p["theta"]),
                                                rng)
        rates.append(rate)
        params.append(p)
    for _ in range(mt):
        p = dict(region="MT", cy=int(rng.integers(H // 4, H - H // 4)), cx=int(rng.integers(W // 4, W - W // 4)),
                 radius=max(1, H // 8), frequency=float(rng.uniform(1 / 16, 1 / 8) / scale),
                 direction=float(rng.uniform(0, 2 * np.pi)), speed=float(rng.uniform(1.0, 4.0) * scale))
        energy = mt_motion_energy(lum, p["cy"], p["cx"], p["radius"], p["frequency"], p["direction"], p["speed"])
        rate, p["baseline"], p["gain"] = _rates(energy, rng)
        rates.append(rate)
        params.append(p)
    regions = [p["region"] for p in params]
    rates = np.stack(rates, 1)  # (S, N)
    counts = rng.poisson(rates[:, :, None, None], size=(S, len(params), repetitions, 1)).astype(np.float64)
    ids = stimulus_ids if stimulus_ids is not None else [str(i) for i in range(S)]
    names = [f"{p['region']}_{i:03d}" for i, p in enumerate(params)]
    recording = Recording(counts, ids, names, regions, "simulated V1/MT cells")
    return recording, SimulatedCells(rates, regions, params, repetitions)
