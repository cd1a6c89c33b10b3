"""Linear probes and kNN on cached features, one accuracy per area.

- :func:`linear_probe`: scikit-learn's multinomial logistic regression on standardised
  features, for small and medium sets.
- :func:`torch_linear_probe`: MAE's linear probing head for large sets: a BatchNorm
  without affine parameters (``eps=1e-6``) before a linear layer, trained with SGD.
- :func:`knn`: DINO's weighted k-nearest-neighbour vote on cosine similarity, each neighbour
  weighted by ``exp(similarity / 0.07)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.features import Features

__all__ = ["wilson_interval", "newcombe_interval", "linear_probe", "probe_correct", "torch_linear_probe", "knn",
           "knn_predict"]


SMALL_PROBE = 2**20  # feature values below which a probe's BLAS runs on one thread (decision P8)


def _check_labels(train: Features, test: Features) -> None:
    if train.labels is None or test.labels is None:
        raise ValueError("probes need labels on both the training and the test features")


def _pairs(train: Features, test: Features, areas):
    _check_labels(train, test)
    names = list(areas) if areas is not None else [n for n in train.names if n in test.areas]
    for name in names:
        a, b = train.areas[name], test.areas[name]
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"{name}: probes take pooled (M, D) features, got {tuple(a.shape)}; "
                             "extract with pooled=True")
        yield name, a.float(), b.float()


def linear_probe(train: Features, test: Features, areas=None, C: float = 1.0, max_iter: int = 1000
                 ) -> dict[str, float]:
    """Test accuracy of a logistic-regression probe per area (features standardised on the
    training set)."""
    return {name: float(np.mean(correct)) for name, correct in probe_correct(train, test, areas, C, max_iter).items()}


def probe_correct(train: Features, test: Features, areas=None, C: float = 1.0, max_iter: int = 1000
                  ) -> dict[str, np.ndarray]:
    """Per area, whether :func:`linear_probe`'s probe classifies each test item correctly
    (a boolean per item): what a paired comparison of two runs resamples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    _check_labels(train, test)
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    pairs = list(_pairs(train, test, areas))
    out = {}
    # BLAS on one thread for small sets (decision P8): its threads contending with torch's made
    # a probe of 720 x 128 features 19x slower on 2 cores, for the same answer
    small = all(a.numel() <= SMALL_PROBE for _, a, _ in pairs)
    with threadpool_limits(1 if small else None, user_api="blas"):
        for name, a, b in pairs:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
            clf.fit(a.numpy(), y_train)
            out[name] = clf.predict(b.numpy()) == y_test
    return out


def torch_linear_probe(train: Features, test: Features, areas=None, epochs: int = 90, lr: float = 0.1,
                       batch_size: int = 256, weight_decay: float = 0.0, device: str | torch.device = "cpu",
                       seed: int = 0) -> dict[str, float]:
    """MAE-style linear probe per area: ``BatchNorm1d(affine=False, eps=1e-6)`` + ``Linear``,
    SGD with momentum 0.9 and a cosine schedule, on the GPU if given one.

    MAE trains its probe with LARS at batch 16,384; on cached features plain SGD converges to
    the same linear classifier, so LARS is not needed here.
    """
    _check_labels(train, test)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    out = {}
    for name, a, b in _pairs(train, test, areas):
        g = torch.Generator().manual_seed(seed)
        head = nn.Sequential(nn.BatchNorm1d(a.shape[1], affine=False, eps=1e-6), nn.Linear(a.shape[1], num_classes))
        nn.init.trunc_normal_(head[1].weight, std=0.01)
        nn.init.zeros_(head[1].bias)
        head.to(device)
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        steps = epochs * max(1, -(-len(a) // batch_size))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        x, y = a.to(device), train.labels.to(device)
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=g).to(device)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                if len(idx) < 2:  # BatchNorm needs two items
                    continue
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        head.eval()
        with torch.no_grad():
            pred = head(b.to(device)).argmax(1).cpu()
        out[name] = float((pred == test.labels).float().mean())
    return out


def knn_predict(train_x: Tensor, train_y: Tensor, test_x: Tensor, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 1024) -> Tensor:
    """DINO's weighted kNN: ``(M_test,)`` predicted classes.

    Features are L2-normalised; each of the ``k`` most cosine-similar training items votes
    for its class with weight ``exp(similarity / temperature)``.
    """
    num_classes = num_classes or int(train_y.max()) + 1
    train_x = F.normalize(train_x.float(), dim=1)
    test_x = F.normalize(test_x.float(), dim=1)
    k = min(k, len(train_x))
    preds = []
    for i in range(0, len(test_x), chunk):
        sim = test_x[i:i + chunk] @ train_x.T  # (m, M_train)
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top), num_classes)
        votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn(train: Features, test: Features, areas=None, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """Weighted-kNN test accuracy per area (DINO, ``k=20``, ``T=0.07``)."""
    _check_labels(train, test)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    return {name: float((knn_predict(a, train.labels, b, k, temperature, num_classes) == test.labels)
                        .float().mean())
            for name, a, b in _pairs(train, test, areas)}


def wilson_interval(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% (``z`` = 1.96) Wilson score interval of an accuracy measured on ``n`` items."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def newcombe_interval(a: float, n_a: int, b: float, n_b: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% interval of the difference ``a - b`` of two accuracies measured on different
    items (``n_a`` and ``n_b``): Newcombe's hybrid score interval (1998, method 10), built
    from each accuracy's Wilson interval."""
    la, ua = wilson_interval(a, n_a, z)
    lb, ub = wilson_interval(b, n_b, z)
    d = a - b
    return float(d - np.sqrt((a - la) ** 2 + (ub - b) ** 2)), float(d + np.sqrt((ua - a) ** 2 + (b - lb) ** 2))
