"""The exact Cole-Hopf Burgers solution: converged quadrature, known slope, the PDE."""
import math

import numpy as np

from pnode.pinn.exact import burgers_cole_hopf

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
