"""Linear probes and weighted kNN on features whose answer is known."""

import pytest
import torch

from analysis.features import Features
from analysis.readouts import knn, knn_predict, linear_probe, torch_linear_probe


def _separable(n_per_class=40, classes=3, dim=16, seed=0):
    """Gaussian clouds around well-separated class centres, plus a noise-only area."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 6
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = centres[labels] + torch.randn(len(labels), dim, generator=g)
    noise = torch.randn(len(labels), dim, generator=g)
    return Features({"V1": x, "noise": noise}, labels)


@pytest.mark.parametrize("probe", [linear_probe, torch_linear_probe, knn])
def test_readouts_reach_full_accuracy_on_separable_features_and_chance_on_noise(probe):
    train, test = _separable(seed=0), _separable(seed=0)
    test = Features({k: v + 0.3 * torch.randn_like(v) for k, v in test.areas.items()}, test.labels)
    acc = probe(train, test)
    assert acc["V1"] >= 0.99
    fresh = _separable(seed=0)
    fresh.areas["noise"] = torch.randn_like(fresh.areas["noise"])  # new noise: nothing to learn
    assert probe(train, fresh, areas=["noise"])["noise"] < 0.6


def test_knn_weights_neighbours_by_exp_similarity_over_temperature():
    """One very close neighbour of class 0 outvotes two distant ones of class 1 (k=3):
    exp(1/0.07) > 2 exp(0.5/0.07), where a plain majority vote would say class 1."""
    train = torch.tensor([[1.0, 0.0], [0.5, 0.866], [0.5, -0.866]])
    labels = torch.tensor([0, 1, 1])
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=3).item() == 0
    assert knn_predict(train, labels, torch.tensor([[1.0, 0.0]]), k=3, temperature=100.0).item() == 1


def test_probes_reject_token_features_and_missing_labels():
    tokens = Features({"V1": torch.zeros(4, 5, 8)}, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="pooled"):
        knn(tokens, tokens)
    with pytest.raises(ValueError, match="labels"):
        linear_probe(Features({"V1": torch.zeros(4, 8)}), tokens)


def test_wilson_interval_matches_the_hand_computed_case():
    from analysis.readouts import wilson_interval

    lo, hi = wilson_interval(0.5, 20)  # p = 0.5, n = 20: 0.5 -/+ 1.96 sqrt(0.0125 + 0.0024) / 1.192
    assert abs(lo - 0.2993) < 1e-3 and abs(hi - 0.7007) < 1e-3
    assert wilson_interval(0.0, 10)[0] == 0.0 and wilson_interval(1.0, 10)[1] == 1.0


@pytest.mark.parametrize("dim, threads", [(16, 1), (2**20 // 120 + 1, None)])
def test_a_small_probe_runs_blas_on_one_thread_and_a_large_one_keeps_its_threads(monkeypatch, dim, threads):
    """Decision P8: BLAS's threads contending with torch's made small probes many times
    slower; above ``SMALL_PROBE`` feature values the probe keeps BLAS's own threads."""
    import threadpoolctl

    from analysis import readouts

    asked = []
    real = threadpoolctl.threadpool_limits

    def recording(limits=None, user_api=None):
        asked.append((limits, user_api))
        return real(limits=limits, user_api=user_api)

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", recording)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    train = Features({"V1": torch.randn(120, dim, generator=g)}, labels)
    readouts.probe_correct(train, train, max_iter=5 if threads is None else 100)
    assert asked == [(threads, "blas")]
