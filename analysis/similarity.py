"""Representational similarity: CKA, RDMs and RSA, between areas, streams, runs or models.

- CKA (Kornblith et al., 2019): ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` on Gram
  matrices of two representations of the same ``n`` items; a linear kernel or an RBF kernel
  whose bandwidth is a fraction of the median pairwise distance. HSIC is the biased
  estimator ``tr(K H L H) / (n - 1)^2`` or the unbiased one of Song et al. (2012), with which
  the CKA of independent features is near zero even for few items.
- RDMs: pairwise dissimilarities of items, ``1 - Pearson correlation`` or Euclidean.
- RSA: Spearman correlation of two RDMs' upper triangles (ties get average ranks).

All functions take ``(n, D)`` tensors (or :class:`~analysis.features.Features`) and return
floats or ``(A, B)`` matrices with their row and column names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor

from analysis.features import Features

__all__ = ["top_component_share", "gram_linear", "gram_rbf", "hsic", "cka", "rdm", "rsa", "spearman", "SimilarityMatrix",
           "similarity_matrix"]


def _flat(x: Tensor) -> Tensor:
    """``(n, ...)`` -> ``(n, D)`` float64 (token features are flattened per item)."""
    return x.reshape(x.shape[0], -1).double()


def gram_linear(x: Tensor) -> Tensor:
    """``X X^T`` of ``(n, D)`` features."""
    x = _flat(x)
    return x @ x.T


def gram_rbf(x: Tensor, threshold: float = 0.5) -> Tensor:
    """RBF Gram matrix ``exp(-d^2 / (2 sigma^2))`` with ``sigma = threshold * median(d)``."""
    x = _flat(x)
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None] - 2 * x @ x.T).clamp_min(0)
    median = d2.sqrt()[~torch.eye(len(x), dtype=torch.bool)].median() if len(x) > 1 else d2.new_tensor(1.0)
    sigma = threshold * median
    return torch.exp(-d2 / (2 * sigma.clamp_min(1e-12) ** 2))


def hsic(K: Tensor, L: Tensor, unbiased: bool = False) -> Tensor:
    """HSIC of two ``(n, n)`` Gram matrices.

    Biased: ``tr(K H L H) / (n - 1)^2`` with ``H`` the centring matrix. Unbiased (Song et al.,
    2012; needs ``n >= 4``), with ``K~``, ``L~`` the Gram matrices with zeroed diagonals:
    ``[tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n-3))``.
    """
    n = K.shape[0]
    if K.shape != L.shape or K.shape != (n, n):
        raise ValueError(f"HSIC needs two (n, n) Gram matrices of the same n, got {tuple(K.shape)}, {tuple(L.shape)}")
    if not unbiased:
        H = torch.eye(n, dtype=K.dtype) - 1.0 / n
        return torch.trace(K @ H @ L @ H) / (n - 1) ** 2
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 items, got {n}")
    K = K - torch.diag(torch.diag(K))
    L = L - torch.diag(torch.diag(L))
    ones = torch.ones(n, dtype=K.dtype)
    term = torch.trace(K @ L) + (ones @ K @ ones) * (ones @ L @ ones) / ((n - 1) * (n - 2)) \
        - 2.0 / (n - 2) * (ones @ K @ L @ ones)
    return term / (n * (n - 3))


def cka(x: Tensor, y: Tensor, kernel: str = "linear", unbiased: bool = False, threshold: float = 0.5) -> float:
    """CKA between two representations ``(n, D1)`` and ``(n, D2)`` of the same items."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA compares representations of the same items, got {x.shape[0]} and {y.shape[0]}")
    if kernel == "linear":
        K, L = gram_linear(x), gram_linear(y)
    elif kernel == "rbf":
        K, L = gram_rbf(x, threshold), gram_rbf(y, threshold)
    else:
        raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    kl = hsic(K, L, unbiased)
    denom = (hsic(K, K, unbiased) * hsic(L, L, unbiased)).clamp_min(0).sqrt()
    return float(kl / denom) if denom > 0 else float("nan")


def rdm(x: Tensor, metric: str = "correlation") -> Tensor:
    """``(n, n)`` representational dissimilarity matrix of ``(n, D)`` features:
    ``1 - Pearson r`` between items (``"correlation"``) or Euclidean distance."""
    x = _flat(x)
    if metric == "correlation":
        z = x - x.mean(1, keepdim=True)
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = (1 - z @ z.T).clamp_min(0)
    elif metric == "euclidean":
        sq = (x * x).sum(1)
        d = (sq[:, None] + sq[None] - 2 * x @ x.T).clamp_min(0).sqrt()
    else:
        raise ValueError(f"metric must be 'correlation' or 'euclidean', got {metric!r}")
    # A blocked matmul may round (i, j) and (j, i) differently: make the matrix exactly symmetric.
    return ((d + d.T) / 2).fill_diagonal_(0)


def _ranks(v: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank."""
    order = torch.argsort(v, stable=True)
    sorted_v = v[order]
    ranks = torch.empty_like(v, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(v) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks[order])
    ranks[order] = (sums / counts)[inverse]
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two vectors."""
    ra, rb = _ranks(a.double().flatten()), _ranks(b.double().flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()).clamp_min(1e-12))


def rsa(rdm_a: Tensor, rdm_b: Tensor) -> float:
    """Spearman correlation of two RDMs' upper triangles (diagonal excluded)."""
    if rdm_a.shape != rdm_b.shape:
        raise ValueError(f"RSA compares RDMs of the same items, got {tuple(rdm_a.shape)} and {tuple(rdm_b.shape)}")
    i, j = torch.triu_indices(*rdm_a.shape, offset=1)
    return spearman(rdm_a[i, j], rdm_b[i, j])


@dataclass
class SimilarityMatrix:
    """``values[i, j]`` = similarity of ``rows[i]`` and ``cols[j]``."""

    values: Tensor
    rows: list[str]
    cols: list[str]
    measure: str

    def __getitem__(self, key: tuple[str, str]) -> float:
        return float(self.values[self.rows.index(key[0]), self.cols.index(key[1])])


_MEASURES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "cka": lambda a, b: cka(a, b),
    "cka_rbf": lambda a, b: cka(a, b, kernel="rbf"),
    "cka_unbiased": lambda a, b: cka(a, b, unbiased=True),
    "rsa": lambda a, b: rsa(rdm(a), rdm(b)),
    "rsa_euclidean": lambda a, b: rsa(rdm(a, "euclidean"), rdm(b, "euclidean")),
}


def similarity_matrix(a: Features | Mapping[str, Tensor], b: Features | Mapping[str, Tensor] | None = None,
                      measure: str = "cka", prefix: tuple[str, str] = ("", "")) -> SimilarityMatrix:
    """Every area (or block) of ``a`` against every one of ``b`` (default: ``a`` itself).

    ``a`` and ``b`` may come from different streams, runs or models, provided they describe
    the same items in the same order. ``measure``: ``"cka"`` (linear), ``"cka_rbf"``,
    ``"cka_unbiased"``, ``"rsa"`` (correlation RDMs) or ``"rsa_euclidean"``.
    """
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {list(_MEASURES)}, got {measure!r}")
    fa = a.areas if isinstance(a, Features) else dict(a)
    fb = fa if b is None else (b.areas if isinstance(b, Features) else dict(b))
    fn = _MEASURES[measure]
    values = torch.tensor([[fn(x, y) for y in fb.values()] for x in fa.values()], dtype=torch.float64)
    return SimilarityMatrix(values, [prefix[0] + k for k in fa], [prefix[1] + k for k in fb], measure)


def top_component_share(x: Tensor) -> float:
    """The share of the variance of ``(n, D)`` features along their first principal component.
    Near 1, linear CKA between such features mostly compares that one direction (saturated)."""
    x = _flat(x).double()
    x = x - x.mean(0, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = float((s ** 2).sum())
    return float(s[0] ** 2 / total) if total > 0 else float("nan")
