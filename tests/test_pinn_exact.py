"""The exact solutions: Cole-Hopf Burgers (converged quadrature, known slope, the PDE) and
the KdV two-soliton (the PDE by autograd, the solitons' heights and phase shifts)."""
import math

import numpy as np
import torch

from pnode.pinn.exact import burgers_cole_hopf, kdv_two_soliton

NU = 0.01 / math.pi


def test_quadrature_is_converged_and_starts_from_the_initial_state():
    x, t = np.linspace(-1, 1, 65), np.array([0.0, 0.05, 0.3, 0.99])
    u = burgers_cole_hopf(x, t)
    fine = burgers_cole_hopf(x, t, panels=320, order=20)
    assert np.abs(u - fine).max() < 1e-13
    assert np.array_equal(u[0], -np.sin(np.pi * x))
    assert np.abs(burgers_cole_hopf(x, [1e-7])[0] + np.sin(np.pi * x)).max() < 1e-5
    assert np.abs(u[:, [0, -1]]).max() < 1e-13  # u(+-1, t) = 0


def test_steepest_slope_is_basdevants():
    """Basdevant et al. (1986): max |u_x(0, t)| = 152.00516 at t = 1.6037 / pi."""
    h = 1e-6
    u = burgers_cole_hopf([-h, h], [1.6037 / math.pi])[0]
    assert abs((u[1] - u[0]) / (2 * h) + 152.00516) < 1e-4


def test_it_satisfies_the_pde_away_from_the_shock():
    h, x, t = 1e-3, np.array([-0.7, -0.4, 0.3, 0.6]), 0.4
    grid = burgers_cole_hopf(np.concatenate([x - 2 * h, x - h, x, x + h, x + 2 * h]), [t - h, t, t + h])
    ux = grid[1].reshape(5, -1)
    u = ux[2]
    u_t = (grid[2].reshape(5, -1)[2] - grid[0].reshape(5, -1)[2]) / (2 * h)
    u_x = (-ux[4] + 8 * ux[3] - 8 * ux[1] + ux[0]) / (12 * h)
    u_xx = (-ux[4] + 16 * ux[3] - 30 * ux[2] + 16 * ux[1] - ux[0]) / (12 * h * h)
    residual = u_t + u * u_x - NU * u_xx
    assert np.abs(residual).max() < 1e-5 * np.abs(u * u_x).max()


def _kdv_residual(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, t = x.clone().requires_grad_(), t.clone().requires_grad_()
    u = kdv_two_soliton(x, t, (1.0, 2.0), (-2.0, -6.0))
    u_t, u_x = torch.autograd.grad(u.sum(), (t, x), create_graph=True)
    u_xx, = torch.autograd.grad(u_x.sum(), x, create_graph=True)
    u_xxx, = torch.autograd.grad(u_xx.sum(), x)
    return (u_t + 6 * u * u_x + u_xxx).detach(), u_t.detach()


def test_kdv_two_soliton_satisfies_the_pde():
    # before, during and after the overtaking (t = 1/3), and far out in the tails
    xs = torch.linspace(-15, 15, 301, dtype=torch.float64)
    for t in (0.0, 0.3, 1 / 3, 0.4, 1.0):
        residual, u_t = _kdv_residual(xs, torch.full_like(xs, t))
        assert float(residual.abs().max()) < 1e-10 * float(u_t.abs().max()), t
    residual, _ = _kdv_residual(torch.tensor([-200.0, 300.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(residual).all() and float(residual.abs().max()) < 1e-12


def test_kdv_two_soliton_heights_and_phase_shifts():
    # far apart the solitons are 2 k^2 sech^2(k (x - s)); the faster (k = 2) starts behind at
    # 16 t and comes out at 16 t + log(9) / 4; the slower goes from 4 t + log(9) / 2 to 4 t
    x = torch.linspace(-40, 40, 80001, dtype=torch.float64)
    shift = math.log(9)
    for t, fast_at, slow_at in ((-2.0, -32.0, -8 + shift / 2), (2.0, 32 + shift / 4, 8.0)):
        u = kdv_two_soliton(x, t, (1.0, 2.0), (0.0, 0.0))
        fast, slow = (x < -20, x >= -20) if t < 0 else (x >= 20, x < 20)
        assert abs(float(u[fast].max()) - 8.0) < 1e-5 and abs(float(u[slow].max()) - 2.0) < 1e-5
        assert abs(float(x[fast][u[fast].argmax()]) - fast_at) < 1e-3
        assert abs(float(x[slow][u[slow].argmax()]) - slow_at) < 1e-3
