"""The Allen-Cahn reference: Fourier interpolation exact on trigonometric polynomials, the PETSc
solve matching scipy's DOP853 on the same semi-discretisation, and converged in the modes."""
import numpy as np
from scipy.integrate import solve_ivp

from pnode.pinn.reference import allen_cahn_reference, fourier_interpolate


def test_fourier_interpolation_exact_on_trigonometric_polynomials():
    n = 16
    grid = -1.0 + 2.0 * np.arange(n) / n
    f = lambda x: 0.3 + np.cos(np.pi * x) - 2 * np.sin(3 * np.pi * x) + 0.5 * np.cos(8 * np.pi * x)
    x = np.random.default_rng(0).uniform(-1, 1, 50)
    assert np.abs(fourier_interpolate(f(grid), x) - f(x)).max() < 1e-13


def test_reference_matches_scipy_on_the_same_semi_discretisation():
    modes = 128
    grid = -1.0 + 2.0 * np.arange(modes) / modes
    k2 = (np.pi * np.arange(modes // 2 + 1)) ** 2

    def rhs(_, v):
        return 1e-4 * np.fft.irfft(-k2 * np.fft.rfft(v), n=modes) + 5 * v - 5 * v ** 3

    times = [0.0, 0.25, 1.0]
    ivp = solve_ivp(rhs, (0, 1), grid ** 2 * np.cos(np.pi * grid), method="DOP853", rtol=1e-12,
                    atol=1e-13, t_eval=times)
    ours = allen_cahn_reference(grid, [1.0, 0.0, 0.25], modes=modes)
    assert np.abs(ours[[1, 2, 0]] - ivp.y.T).max() < 1e-9
    assert np.abs(ours[1] - grid ** 2 * np.cos(np.pi * grid)).max() < 1e-14


def test_reference_converged_in_the_modes():
    x = np.linspace(-1, 1, 301)
    coarse = allen_cahn_reference(x, [0.5, 1.0], modes=1024)
    fine = allen_cahn_reference(x, [0.5, 1.0], modes=2048)
    assert np.linalg.norm(coarse - fine) / np.linalg.norm(fine) < 1e-7
    assert np.abs(fine).max() > 0.99  # the interfaces have formed: u near +-1
