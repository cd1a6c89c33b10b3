"""V1: local texture as Gabor energy (BIMM section 3.2, "V1 ... predicts the Gabor feature").

The paper names Gabor features without fixing the bank; this module follows decision D2
(docs/decisions.md):
luminance (Rec. 709, as ``skimage.color.rgb2gray``), 8 orientations x wavelengths 4, 8 and
16 px, bandwidth 1 octave, kernels exactly as ``skimage.filters.gabor_kernel`` builds them
(``n_stds=3``), quadrature energy ``sqrt(real^2 + imag^2)``, averaged on a 4x4 grid of cells
inside each 16x16 patch, and standardised per token. That is ``8 * 3 * 16 = 384`` values per
frame patch and ``768`` per 2-frame tube.

Two ways to filter, equal up to float rounding:

- ``"direct"``: one ``conv2d`` per wavelength over symmetric padding (scipy's ``"reflect"``
  mode, which ``skimage.filters.gabor`` uses). About 65 k multiply-adds per pixel at the
  16 px wavelength's 55x55 kernels: the reference.
- ``"fft"``: the same linear convolution through ``torch.fft`` over the symmetrically padded
  frame. The padding is as wide as the largest kernel radius, so the circular convolution
  never wraps into the kept region; the result equals ``"direct"``.
- ``"separable"``: the bank's kernels are separable (an isotropic Gaussian envelope times a
  plane wave, truncated to a square), so each filter is ``A @ frame @ B.T`` with one matrix
  per axis that holds the 1-D taps *and* the symmetric padding; the orientations ``theta``
  and ``pi - theta`` share ``A`` and have conjugate ``B``. Two batched matrix products per
  chunk of frames; equal to ``"direct"`` up to float rounding.
- ``"auto"`` (default): ``"separable"`` on the CPU for frames up to 64 px a side, where it is
  the fastest, else ``"fft"`` (decision P2; the CUDA path is ``"fft"`` as before).
"""

from __future__ import annotations

from typing import ClassVar

import functools
import math
from typing import NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from areas._common import frames, luminance, normalize_tokens, unframes
from visualpath import Area, DecoderSpec, Layout, TargetInput
from visualpath.area import area_name
from visualpath._validate import non_negative, positive, positive_float

__all__ = ["V1Gabor", "GaborBank", "gabor_kernel", "gabor_bank", "gabor_responses", "gabor_energy", "pad_symmetric"]

MODES = ("auto", "fft", "separable", "direct")
SEPARABLE_MAX_SIDE = 64  # "auto" filters frames up to this side by matrices on the CPU (decision P2)


def _sigma_prefactor(bandwidth: float) -> float:
    """Gaussian sigma times frequency for a given octave bandwidth (skimage's formula)."""
    b = bandwidth
    return 1.0 / math.pi * math.sqrt(math.log(2) / 2.0) * (2.0**b + 1) / (2.0**b - 1)


def gabor_kernel(frequency: float, theta: float = 0.0, bandwidth: float = 1.0, n_stds: float = 3) -> Tensor:
    """Complex Gabor kernel, ``(2*y0+1, 2*x0+1)`` complex128.

    The same function of (frequency, theta, bandwidth, n_stds) as
    ``skimage.filters.gabor_kernel``: a Gaussian envelope of sigma
    ``prefactor(bandwidth) / frequency`` times ``exp(i * 2 pi f x')``, scaled by
    ``1 / (2 pi sigma^2)``.
    """
    sigma = _sigma_prefactor(bandwidth) / frequency
    ct, st = math.cos(theta), math.sin(theta)
    x0 = math.ceil(max(abs(n_stds * sigma * ct), abs(n_stds * sigma * st), 1))
    y0 = math.ceil(max(abs(n_stds * sigma * ct), abs(n_stds * sigma * st), 1))
    y = torch.arange(-y0, y0 + 1, dtype=torch.float64)[:, None]
    x = torch.arange(-x0, x0 + 1, dtype=torch.float64)[None, :]
    rotx = x * ct + y * st
    roty = -x * st + y * ct
    envelope = torch.exp(-0.5 * (rotx**2 + roty**2) / sigma**2) / (2 * math.pi * sigma**2)
    return envelope * torch.exp(1j * 2 * math.pi * frequency * rotx)


@functools.lru_cache(maxsize=8)
def gabor_bank(orientations: int, wavelengths: tuple[float, ...], bandwidth: float) -> tuple[Tensor, ...]:
    """One ``(orientations, S, S)`` complex128 stack per wavelength, zero-padded to a square.

    Orientation ``k`` is ``theta = k * pi / orientations``. Zero padding around a kernel does
    not change a convolution, so each stack is padded to its largest member (theta = 0).
    """
    stacks = []
    for wavelength in wavelengths:
        kernels = [gabor_kernel(1.0 / wavelength, k * math.pi / orientations, bandwidth)
                   for k in range(orientations)]
        size = max(max(k.shape) for k in kernels)
        stack = torch.zeros(orientations, size, size, dtype=torch.complex128)
        for i, k in enumerate(kernels):
            dy, dx = (size - k.shape[0]) // 2, (size - k.shape[1]) // 2
            stack[i, dy:dy + k.shape[0], dx:dx + k.shape[1]] = k
        stacks.append(stack)
    return tuple(stacks)


class GaborBank(NamedTuple):
    """What defines a bank: orientations over [0, pi), wavelengths in pixels, octave bandwidth."""

    orientations: int
    wavelengths: tuple[float, ...]
    bandwidth: float

    def stacks(self) -> tuple[Tensor, ...]:
        return gabor_bank(self.orientations, tuple(float(w) for w in self.wavelengths), float(self.bandwidth))


def _axis_operator(n: int, taps: Tensor) -> Tensor:
    """``(n, n)`` matrix ``M`` with ``M @ x`` the true 1-D convolution of ``x`` with the centred
    ``taps`` over scipy's ``"reflect"`` padding (as :func:`pad_symmetric`)."""
    h = (taps.shape[0] - 1) // 2
    source = _symmetric_index(n, h, torch.device("cpu"))  # padded position -> source sample
    rows = torch.arange(n)[:, None].expand(-1, 2 * h + 1)
    offsets = torch.arange(-h, h + 1)[None, :]
    matrix = torch.zeros(n, n, dtype=taps.dtype)
    # output i takes taps[u + h] times the padded sample at i - u (position i - u + h)
    matrix.index_put_((rows, source[rows + h - offsets]), taps[None, :].expand(n, -1), accumulate=True)
    return matrix


@functools.lru_cache(maxsize=16)
def _separable_operators(bank: GaborBank, H: int, W: int, device: torch.device, dtype
                         ) -> tuple[list[int], Tensor, Tensor]:
    """The ``"separable"`` mode's matrices for ``H x W`` frames.

    Kernel ``k`` of a wavelength is ``ky(y) * kx(x)`` with ``ky = g(y) exp(i 2 pi f sin(theta) y)
    / (2 pi sigma^2)`` and ``kx = g(x) exp(i 2 pi f cos(theta) x)`` on the square of half-width
    ``ceil(max(3 sigma |cos|, 3 sigma |sin|, 1))`` (``skimage.filters.gabor_kernel``'s).
    ``theta`` and ``pi - theta`` share ``ky`` and have conjugate ``kx``, so only the
    orientations ``k <= K / 2`` (``firsts``) are built.

    Returns:
        ``(firsts, A, B)``: ``A`` ``(n * 2H, H)`` stacks ``[Re a; Im a]`` of every (wavelength,
        first orientation), ``n`` of them; ``B`` ``(n, W, 2W)`` holds ``[Re b^T, Im b^T]``.
    """
    K = bank.orientations
    firsts = [k for k in range(K) if 2 * k <= K]
    A, B = [], []
    for wavelength in bank.wavelengths:
        f = 1.0 / wavelength
        sigma = _sigma_prefactor(bank.bandwidth) / f
        for k in firsts:
            ct, st = math.cos(k * math.pi / K), math.sin(k * math.pi / K)
            half = math.ceil(max(abs(3 * sigma * ct), abs(3 * sigma * st), 1))
            t = torch.arange(-half, half + 1, dtype=torch.float64)
            envelope = torch.exp(-0.5 * t**2 / sigma**2)
            a = _axis_operator(H, envelope * torch.exp(1j * 2 * math.pi * f * st * t) / (2 * math.pi * sigma**2))
            b = _axis_operator(W, envelope * torch.exp(1j * 2 * math.pi * f * ct * t))
            A.append(torch.cat([a.real, a.imag]))
            B.append(torch.cat([b.real.T, b.imag.T], dim=1))
    with torch.inference_mode(False):
        return firsts, torch.cat(A).to(device, dtype), torch.stack(B).to(device, dtype)


def cell_mean(x: Tensor, pool: int) -> Tensor:
    """Mean of ``(..., H, W)`` over ``pool x pool`` cells, by strided sums (on the CPU several
    times faster than ``avg_pool2d`` for these maps)."""
    if pool == 1:
        return x
    cols = x.unflatten(-1, (x.shape[-1] // pool, pool))
    x = sum(cols[..., i] for i in range(pool))
    rows = x.unflatten(-2, (x.shape[-2] // pool, pool))
    return sum(rows[..., i, :] for i in range(pool)).mul_(1.0 / (pool * pool))


def _separable(lum: Tensor, bank: GaborBank, chunk: int, pool: int) -> Tensor:
    H, W = lum.shape[-2:]
    firsts, A, B = _separable_operators(bank, H, W, lum.device, lum.dtype)
    K, n = bank.orientations, len(firsts) * len(bank.wavelengths)
    out = []
    for part in lum.split(chunk):
        # vertical taps: every (wavelength, first orientation) at once; then each its own horizontal taps
        S = torch.matmul(torch.matmul(A, part).view(-1, n, 2 * H, W), B)  # (F, n, 2H, 2W)
        yr_br, yr_bi = S[..., :H, :W], S[..., :H, W:]  # Re(a x) b_r^T, Re(a x) b_i^T
        yi_br, yi_bi = S[..., H:, :W], S[..., H:, W:]
        first = cell_mean(torch.hypot(yr_br - yi_bi, yr_bi + yi_br), pool)  # |a x b^T|
        mirror = cell_mean(torch.hypot(yr_br + yi_bi, yi_br - yr_bi), pool)  # |a x conj(b)^T|: pi - theta
        first, mirror = first.unflatten(1, (-1, len(firsts))), mirror.unflatten(1, (-1, len(firsts)))
        channels = []
        for w in range(len(bank.wavelengths)):
            per = {k: first[:, w, j] for j, k in enumerate(firsts)}
            per.update({K - k: mirror[:, w, j] for j, k in enumerate(firsts) if 0 < k and 2 * k != K})
            channels += [per[k] for k in range(K)]
        out.append(torch.stack(channels, dim=1))  # (F, wavelengths * K, H / pool, W / pool)
    return torch.cat(out)


def pad_symmetric(x: Tensor, r: int) -> Tensor:
    """Pad the last two dims by ``r`` with scipy's ``"reflect"`` (numpy ``"symmetric"``) rule.

    ``d c b a | a b c d | d c b a``; torch's own ``"reflect"`` mode skips the edge sample
    and would differ at the borders.
    """
    H, W = x.shape[-2:]
    return x.index_select(-2, _symmetric_index(H, r, x.device)).index_select(-1, _symmetric_index(W, r, x.device))


@functools.lru_cache(maxsize=64)
def _symmetric_index(n: int, r: int, device: torch.device) -> Tensor:
    """Source index of each of the ``n + 2r`` positions of a symmetrically padded axis."""
    with torch.inference_mode(False):
        i = torch.arange(-r, n + r, device=device) % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)


def _direct(lum: Tensor, bank: tuple[Tensor, ...]) -> Tensor:
    out = []
    for stack in bank:
        r = stack.shape[-1] // 2
        # conv2d is a correlation; flipping the kernel makes it scipy's convolution.
        kernel = torch.cat([stack.real, stack.imag]).flip(-2, -1)[:, None].to(lum)
        response = F.conv2d(pad_symmetric(lum, r), kernel)  # (F, 2K, H, W)
        real, imag = response.chunk(2, dim=1)
        out.append(torch.complex(real, imag))
    return torch.cat(out, dim=1)


@functools.lru_cache(maxsize=16)
def _bank_spectrum(bank: tuple[Tensor, ...], shape: tuple[int, int], device: torch.device, dtype) -> Tensor:
    """FFT of every kernel placed with its centre at the origin of a ``shape`` canvas."""
    kernels = []
    for stack in bank:
        r = stack.shape[-1] // 2
        canvas = torch.zeros(stack.shape[0], *shape, dtype=torch.complex128)
        canvas[:, : 2 * r + 1, : 2 * r + 1] = stack
        kernels.append(torch.roll(canvas, shifts=(-r, -r), dims=(-2, -1)))
    return torch.fft.fft2(torch.cat(kernels)).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def fast_fft_size(n: int) -> int:
    """The smallest ``m >= n`` whose prime factors are 2, 3, 5 and 7 (a fast FFT length).

    The padded canvas of a 224 frame is 278 = 2 x 139 pixels; a prime factor that large makes
    the FFT several times slower than at 280 = 2^3 x 5 x 7.
    """
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _fft(lum: Tensor, bank: tuple[Tensor, ...], chunk: int, reduce=None) -> Tensor:
    H, W = lum.shape[-2:]
    cdtype = torch.complex128 if lum.dtype == torch.float64 else torch.complex64
    # One canvas per wavelength, padded by that wavelength's kernel radius: the 4 px kernels
    # (radius 7) need far less padding than the 16 px ones (radius 27). Zeros after the
    # symmetric padding: a kernel of radius r never wraps around into the H x W window, so
    # the larger, fast canvas gives the same responses.
    plans = []
    for stack in bank:
        r = stack.shape[-1] // 2
        size = (fast_fft_size(H + 2 * r), fast_fft_size(W + 2 * r))
        plans.append((r, size, _bank_spectrum((stack,), size, lum.device, cdtype)))  # (K_w, L1, L2)
    R = max(r for r, _, _ in plans)
    out = []
    for part in lum.split(chunk):
        padded = pad_symmetric(part, R)  # once per chunk; each wavelength takes its own margin
        per_wavelength = []
        for r, size, spectrum in plans:
            image = torch.fft.fft2(padded[..., R - r:R + H + r, R - r:R + W + r], s=size)  # (F, 1, L1, L2)
            response = torch.fft.ifft2(image * spectrum)[..., r:r + H, r:r + W]  # true convolution
            per_wavelength.append(response if reduce is None else reduce(response))
        out.append(torch.cat(per_wavelength, dim=1))  # (F, K, ...)
    return torch.cat(out)


def resolve_mode(mode: str, lum: Tensor) -> str:
    """``"auto"`` -> ``"separable"`` for CPU frames up to :data:`SEPARABLE_MAX_SIDE` a side, else
    ``"fft"``; any other mode as given."""
    if mode != "auto":
        return mode
    small = max(lum.shape[-2:]) <= SEPARABLE_MAX_SIDE
    return "separable" if lum.device.type == "cpu" and small else "fft"


def default_chunk(mode: str, lum: Tensor) -> int:
    """Frames filtered at once: small chunks stay in cache on the CPU (``"fft"``: 4; the
    matrices of ``"separable"``: 8), 32 on accelerators."""
    if lum.device.type != "cpu":
        return 32
    return 8 if mode == "separable" else 4


def gabor_energy(lum: Tensor, bank: GaborBank, mode: str = "auto", chunk: int | None = None, pool: int = 1
                 ) -> Tensor:
    """Quadrature energy ``|response|`` of ``(F, 1, H, W)`` luminance, averaged over
    ``pool x pool`` cells: ``(F, K, H / pool, W / pool)``.

    Computed a chunk of frames at a time, so the full-resolution responses of all frames
    never exist at once (they are the largest tensors of a BIMM step).
    """
    mode = resolve_mode(mode, lum)
    chunk = chunk or default_chunk(mode, lum)

    def reduce(response: Tensor) -> Tensor:
        # |z| as sqrt(re^2 + im^2) over real views: several times faster on the CPU than the
        # complex abs (a hypot per element); the values here are far from overflow.
        return cell_mean((response.real.square() + response.imag.square()).sqrt_(), pool)

    if mode == "separable":
        return _separable(lum, bank, chunk, pool)
    if mode == "fft":
        return _fft(lum, bank.stacks(), chunk, reduce)
    if mode == "direct":
        return torch.cat([reduce(_direct(part, bank.stacks())) for part in lum.split(chunk)])
    raise ValueError(f"V1Gabor.mode must be one of {MODES}, got {mode!r}")


def gabor_responses(lum: Tensor, bank: tuple[Tensor, ...], mode: str = "fft", chunk: int = 32) -> Tensor:
    """Complex responses ``(F, K, H, W)`` of ``(F, 1, H, W)`` luminance to the bank.

    Channel ``k`` is wavelength ``k // orientations``, orientation ``k % orientations``; its
    real and imaginary parts equal ``skimage.filters.gabor(image, 1 / wavelength, theta,
    bandwidth)`` with ``mode="reflect"``.
    """
    if mode == "direct":
        return _direct(lum, bank)
    if mode == "fft":
        return _fft(lum, bank, chunk)
    raise ValueError(f"gabor_responses: mode must be 'fft' or 'direct', got {mode!r}")


def _wavelengths(instance, attribute, value) -> None:
    if not value or any(not w > 2 for w in value):
        raise ValueError(f"{type(instance).__name__}.wavelengths must be a non-empty tuple of pixel wavelengths > 2 "
                         f"(below Nyquist otherwise), got {value!r}")


def _mode(instance, attribute, value) -> None:
    if value not in MODES:
        raise ValueError(f"{type(instance).__name__}.mode must be one of {MODES}, got {value!r}")


@attrs.frozen(kw_only=True)
class V1Gabor(Area):
    """Gabor energy of masked patches, pooled on a grid of cells.

    Attributes:
        orientations: orientations evenly spaced over [0, pi).
        wavelengths: wavelengths in pixels (frequency = 1 / wavelength).
        bandwidth: half-magnitude bandwidth in octaves.
        cells: cells per patch side; energies are averaged within each cell.
        mode: ``"auto"`` (default), ``"separable"``, ``"fft"`` or ``"direct"`` filtering;
            equal results up to float rounding (module docstring).
        normalize: standardise each token's values.
        chunk: frames filtered at once (bounds memory); None picks by mode and device
            (:func:`default_chunk`: small chunks stay in cache on the CPU).
    """

    target_scale: ClassVar[str] = "per token, MAE's normalisation, when normalize=true (the paper's)"
    name: str = attrs.field(default="V1", validator=area_name)
    blocks: int = attrs.field(default=2, validator=non_negative)
    decoder: DecoderSpec = attrs.field(factory=lambda: DecoderSpec(width=384, depth=1, heads=6))
    orientations: int = attrs.field(default=8, validator=positive)
    wavelengths: tuple[float, ...] = attrs.field(default=(4.0, 8.0, 16.0), converter=tuple, validator=_wavelengths)
    bandwidth: float = attrs.field(default=1.0, validator=positive_float)
    cells: int = attrs.field(default=4, validator=positive)
    mode: str = attrs.field(default="auto", validator=_mode)
    normalize: bool = True
    chunk: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive))

    @property
    def channels(self) -> int:
        return self.orientations * len(self.wavelengths)

    def bank(self) -> GaborBank:
        return GaborBank(self.orientations, tuple(float(w) for w in self.wavelengths), float(self.bandwidth))

    def target_dim(self, layout: Layout) -> int:
        return layout.tube * self.cells * self.cells * self.channels

    def target_side(self, layout: Layout) -> int:
        return self.cells

    def _frame_energy(self, pixels: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        # Luminance in 0-255 units keeps the 1e-6 of the per-token standardisation negligible
        # on textured patches, as it is for MAE's normalised pixels.
        lum, undo = frames(luminance(pixels) * 255)
        mode = "direct" if self.mode == "direct" else "fft"  # complex responses: the fft or the reference
        return gabor_responses(lum, self.bank().stacks(), mode, self.chunk or default_chunk(mode, lum)).abs(), undo

    def energy(self, pixels: Tensor) -> Tensor:
        """Gabor energy maps ``(B, K, [T,] H, W)`` of ``(B, 3, [T,] H, W)`` pixels in [0, 1].

        Energies are of luminance in 0-255 units, the scale :meth:`target` pools.
        """
        energy, undo = self._frame_energy(pixels)
        return unframes(energy, undo)

    def target(self, inp: TargetInput) -> Tensor:
        patch = inp.layout.patch
        if patch % self.cells:
            raise ValueError(f"V1Gabor.cells ({self.cells}) must divide the patch size {patch}")
        lum, undo = frames(luminance(inp.pixels) * 255)
        pooled = gabor_energy(lum, self.bank(), self.mode, self.chunk, pool=patch // self.cells)
        pooled = unframes(pooled, undo)  # (B, K, [T,] h, w)
        tokens = inp.layout.patchify(pooled, patch=self.cells)
        return normalize_tokens(tokens) if self.normalize else tokens
