"""The embedded digits model: quality and mode coverage against the held-out digits, measured
in the shipped classifier's feature space beside the real-vs-real floor."""
import pytest
import torch

from diffcore.evaluation import class_coverage, evaluate_digits, frechet_distance, load_classifier
from diffcore import data as datasets
from diffcore.models.spec import DEFAULT_MODEL, load_model
from diffcore.sampling import sample


def test_frechet_distance_of_gaussians_matches_closed_form():
    """Features drawn from N(m1, S1) and N(m2, S2): the estimate approaches
    |m1 - m2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), here with commuting diagonal covariances."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.5]), torch.tensor([2.0, 1.0, 0.5, 3.0])
    m2 = torch.tensor([1.0, 0.0, -1.0, 0.5])
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * s1.sqrt()
    b = m2 + torch.randn(n, d, generator=g, dtype=torch.float64) * s2.sqrt()
    exact = (m2 ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    assert abs(frechet_distance(a, b) - exact.item()) < 0.03
    assert frechet_distance(a, a) < 1e-9


def test_class_coverage():
    cov = class_coverage(torch.tensor([0, 0, 1, 2]), classes=4)
    assert cov["histogram"] == [0.5, 0.25, 0.25, 0.0] and cov["smallest_share"] == 0.0
    assert abs(cov["entropy_bits"] - 1.5) < 1e-12


def test_classifier_recognises_heldout_digits():
    x, y = datasets.digits("heldout", with_labels=True)
    with torch.no_grad():
        acc = (load_classifier()(x).argmax(1) == y).double().mean().item()
    assert acc >= 0.95


@pytest.mark.slow
def test_default_model_quality_and_coverage():
    model, process, spec = load_model(DEFAULT_MODEL)
    assert spec["family"] == "ddpm" and spec["data"]["shape"] == [1, 8, 8]
    x = sample(model, process, n=500, shape=(1, 8, 8), method="ancestral", steps=100, seed=0)
    r = evaluate_digits(x.clamp(-1, 1))
    assert r["frechet_distance"] < r["noise_ceiling"] / 10
    assert r["frechet_distance"] <= 3 * r["real_vs_real_floor"], r
    assert min(r["classes_histogram"]) >= 0.05, r["classes_histogram"]


def test_evaluation_sees_noise_and_one_class_as_bad():
    x, y = datasets.digits("train", with_labels=True)
    ones = x[y == 1][:100]
    r = evaluate_digits(ones)
    assert r["classes_smallest_share"] == 0.0 and r["frechet_distance"] > 3 * r["real_vs_real_floor"]
    noise = torch.rand(100, 1, 8, 8) * 2 - 1
    r = evaluate_digits(noise)
    assert r["frechet_distance"] > 10 * r["real_vs_real_floor"]


def test_evaluate_rejects_bad_samples():
    with pytest.raises(ValueError, match=r"\[n, 1, 8, 8\]"):
        evaluate_digits(torch.zeros(20, 3, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_digits(torch.full((20, 1, 8, 8), float("nan")))
