"""x0 / eps / score / v conversions recover the quantities a known x_t was built from."""
import pytest
import torch

from diffcore import parameterization as P


@pytest.mark.parametrize("m,s", [(1.0, 0.3), (0.8, 0.6), (0.05, 0.9987), (1.0, 50.0), (0.7, 0.2)])
def test_conversions_invert_the_perturbation(m, s):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(7, 3, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(7, 3, 5, generator=g, dtype=torch.float64)
    x = m * x0 + s * eps
    score = -eps / s  # grad log N(x; m x0, s^2) at the drawn point
    torch.testing.assert_close(P.score_from_eps(eps, s), score)
    torch.testing.assert_close(P.eps_from_score(score, s), eps)
    torch.testing.assert_close(P.x0_from_eps(x, eps, m, s), x0)
    torch.testing.assert_close(P.eps_from_x0(x, x0, m, s), eps)
    torch.testing.assert_close(P.x0_from_score(x, score, m, s), x0)
    torch.testing.assert_close(P.score_from_x0(x, x0, m, s), score)
    v = m * eps - s * x0
    torch.testing.assert_close(P.v_from_eps(x, eps, m, s), v)
    torch.testing.assert_close(P.x0_from_v(x, v, m, s), x0)
    torch.testing.assert_close(P.eps_from_v(x, v, m, s), eps)


def test_per_sample_coefficients_broadcast():
    x0 = torch.randn(4, 2, 3, dtype=torch.float64)
    eps = torch.randn(4, 2, 3, dtype=torch.float64)
    m, s = torch.tensor([0.9, 0.5, 0.1, 1.0], dtype=torch.float64), torch.tensor([0.1, 0.8, 0.99, 2.0], dtype=torch.float64)
    mb, sb = P.bcast(m, x0), P.bcast(s, x0)
    assert mb.shape == (4, 1, 1)
    torch.testing.assert_close(P.x0_from_eps(mb * x0 + sb * eps, eps, mb, sb), x0)
