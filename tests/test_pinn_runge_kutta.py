"""Gauss-Legendre tableaus (any q) and the discrete-time Runge-Kutta PINN term."""
import math

import numpy as np
import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.pinn import CollocationProblem, Interval, gauss_legendre, runge_kutta_term


@pytest.mark.parametrize("q", [1, 2, 3, 7])
def test_the_tableau_satisfies_the_collocation_conditions(q):
    tab = gauss_legendre(q)
    for k in range(1, q + 1):  # C(q): sum_j a_ij c_j^(k-1) = c_i^k / k
        assert np.abs(tab.A @ tab.c ** (k - 1) - tab.c ** k / k).max() < 1e-13
    for k in range(1, 2 * q + 1):  # B(2q): sum_j b_j c_j^(k-1) = 1 / k
        assert abs(tab.b @ tab.c ** (k - 1) - 1 / k) < 1e-13
    if q == 1:
        assert np.allclose(tab.A, [[0.5]]) and np.allclose(tab.c, [0.5])
    if q == 2:
        r = math.sqrt(3) / 6
        assert np.allclose(tab.A, [[0.25, 0.25 - r], [0.25 + r, 0.25]], atol=1e-15, rtol=0)


def test_500_stages_integrate_a_linear_ode_to_rounding():
    tab = gauss_legendre(500)
    assert abs(tab.b.sum() - 1) < 1e-13 and np.all(np.diff(tab.c) > 0)
    # y' = lam y over one step of size h: the stage equations (I - h lam A) Y = 1
    for lam_h in (-2.0, 0.8):
        Y = np.linalg.solve(np.eye(500) - lam_h * tab.A, np.ones(500))
        assert abs(1 + lam_h * tab.b @ Y - math.exp(lam_h)) < 1e-12
        assert np.abs(Y - np.exp(lam_h * tab.c)).max() < 1e-10
    with pytest.raises(ConfigurationError):
        gauss_legendre(0)


def test_the_term_is_zero_for_the_exact_stages_of_a_linear_pde():
    """u_t = u_xx with u = exp(-pi^2 t) sin(pi x): a 'network' returning the exact stage
    values gives residual rows of the size of the q = 10 Gauss method's error only."""
    q, dt, t0 = 10, 0.1, 0.1
    tab = gauss_legendre(q)
    times = torch.tensor(np.append(t0 + dt * tab.c, t0 + dt))

    class Exact(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

        def forward(self, x):
            return self.scale * torch.exp(-math.pi ** 2 * times) * torch.sin(math.pi * x[..., :1])

    from torch.func import jacfwd

    def heat(u, x, c):
        return jacfwd(jacfwd(u))(x)[:, 0, 0]
    x = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)[:, None]
    data = math.exp(-math.pi ** 2 * t0) * torch.sin(math.pi * x)
    domain = Interval(0.0, 1.0)
    problem = CollocationProblem(Exact(), [runge_kutta_term("rk", x, data, heat, tab, dt)], domain)
    r = problem.residual()
    assert r.shape == (7 * (q + 1),)
    assert float(r.detach().abs().max()) < 1e-9  # stage order q: (pi^2 dt)^(q + 1) / (q + 1)! ~ 2e-8
    bad = Exact()
    times = times[:3]
    with pytest.raises(ConfigurationError, match="q \\+ 1 = 11 values"):
        CollocationProblem(bad, [runge_kutta_term("rk", x, data, heat, tab, dt)], domain)
