"""Classic stiff problems against references outside pnode (scipy): Van der Pol with
mu = 1000 and the Cartesian pendulum as an index-1 DAE with a singular mass matrix.

Forward accuracy is checked against scipy; gradients against central finite differences
of the *same* discrete scheme on fixed steps. (The discrete adjoint of an adaptive solve
is the gradient of the scheme on the accepted steps, frozen; finite differences of an
adaptive solve would also see the step sizes move with the parameter.)
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import pnode
from helpers import central_difference

DT = torch.float64
MU = 1000.0
VDP_Y0 = (2.0, -2.0 / 3.0)  # on the slow manifold: no initial layer
VDP_T = (0.0, 0.25, 0.5, 0.75, 1.0)  # the first fast transition is at t ~ 0.83
WINDOW = (0.80, 0.82, 0.84)  # fixed-step gradient check: through that transition
VDP_TIMES = tuple(sorted(set(VDP_T) | set(WINDOW)))


class VanDerPol(torch.nn.Module):
    """``y1' = y2, y2' = mu ((1 - y1^2) y2 - y1)``: Hairer and Wanner's scaled form
    (``eps = 1/mu``; the classical ``x'' - m (1 - x^2) x' + x = 0`` with ``m = sqrt(mu)``
    in time ``t / m``). Period ~1.61; the Jacobian's eigenvalues reach ``-mu (y1^2 - 1)``,
    -3000 at ``y1 = 2``; transitions take ~1/mu."""

    def __init__(self, mu: float = MU):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(mu, dtype=DT))

    def forward(self, t, y):
        return torch.stack([y[1], self.mu * ((1 - y[0] ** 2) * y[1] - y[0])])


@functools.lru_cache(maxsize=None)
def _radau_vdp() -> torch.Tensor:
    """Van der Pol (mu = 1000) at VDP_T and WINDOW from scipy's Radau, rtol = atol = 1e-12."""
    from scipy.integrate import solve_ivp

    def f(t, y):
        return [y[1], MU * ((1 - y[0] ** 2) * y[1] - y[0])]

    def jac(t, y):
        return [[0.0, 1.0], [MU * (-2 * y[0] * y[1] - 1), MU * (1 - y[0] ** 2)]]

    sol = solve_ivp(f, (0.0, VDP_TIMES[-1]), VDP_Y0, method="Radau", t_eval=VDP_TIMES, rtol=1e-12, atol=1e-12,
                    jac=jac)
    return torch.from_numpy(sol.y.T.copy())


def radau_vdp(times: tuple[float, ...]) -> torch.Tensor:
    """The reference states at ``times`` (from VDP_T and WINDOW), one row each."""
    return _radau_vdp()[[VDP_TIMES.index(t) for t in times]]


def test_van_der_pol_adaptive_arkimex_matches_radau():
    """Adaptive ARKIMEX 4 (L-stable, stiffly accurate) across a fast transition: the
    largest relative error at the output times stays within 10 * rtol and falls with rtol."""
    ref = radau_vdp(VDP_T)
    assert float(ref[-2, 0]) > 1 and float(ref[-1, 0]) < -1  # the interval holds a transition
    y0, t = torch.tensor(VDP_Y0, dtype=DT), torch.tensor(VDP_T, dtype=DT)
    errors = []
    for rtol in (1e-6, 1e-8):
        ode = pnode.NeuralODE(VanDerPol(), method="arkimex", options={"ts_arkimex_type": "4"},
                              rtol=rtol, atol=rtol)
        with torch.no_grad():
            out = ode(y0, t)
        errors.append(float(((out - ref).abs() / ref.abs()).max()))
        assert errors[-1] <= 10 * rtol
        if rtol == 1e-6:
            # explicit dopri5 needs >= ~900 steps on [0, 1] for stability alone (|lambda| ~ 3000)
            assert ode.stats["steps"] < 300
    assert errors[1] < errors[0] / 10


def _vdp_window(vdp: VanDerPol, solve=pnode.odeint, h: float = 2.5e-4) -> torch.Tensor:
    """Fixed-step ARKIMEX 4 over WINDOW from the Radau state at its start."""
    return solve(vdp, radau_vdp(WINDOW)[0], torch.tensor(WINDOW, dtype=DT), method="arkimex", step_size=h,
                 options={"ts_arkimex_type": "4"})


def _vdp_loss(out: torch.Tensor) -> torch.Tensor:
    return out[-1].sum() + out[1, 0]


def test_van_der_pol_gradient_wrt_mu_central_differences():
    """d loss / d mu through a fast transition (fixed steps 2.5e-4 = 1/(4 mu)): the adjoint
    equals central differences of the same scheme. With eps = 1e-4 mu the truncation error
    is ~5e-10 relative (5e-8 measured at eps = 1e-3 mu, scaling as eps^2) and the rounding
    noise ~1.4e-9 (1.4e-7 measured at eps = 1e-6 mu, scaling as 1/eps): 1e-7 is the bound."""
    vdp = VanDerPol()
    out = _vdp_window(vdp, pnode.odeint_adjoint)
    ref = radau_vdp(WINDOW)
    assert float(((out[-1].detach() - ref[-1]).abs() / ref[-1].abs()).max()) < 1e-4  # the steps resolve it
    (grad,) = torch.autograd.grad(_vdp_loss(out), [vdp.mu])
    fd = central_difference(lambda: _vdp_loss(_vdp_window(vdp)), vdp.mu, (), eps=1e-4 * MU)
    assert abs(fd - float(grad)) <= 1e-7 * abs(fd)


PENDULUM_MASS = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=DT)  # x, y, u, v differential; lambda algebraic
PENDULUM_T = (0.0, 0.25, 0.5, 0.75, 1.0)
THETA0 = 1.0  # rad: far from the linear regime


class Pendulum(torch.nn.Module):
    """Unit mass on a rod of length L in gravity g, Cartesian, index-1 form:

        x' = u, y' = v, u' = -lam x, v' = -lam y - g,
        0 = u^2 + v^2 - lam (x^2 + y^2) - g y

    (the rod constraint ``x^2 + y^2 = L^2`` differentiated twice; ``d/d lam`` of the
    algebraic equation is ``-(x^2 + y^2) != 0``, so it determines ``lam``: index 1).
    """

    def __init__(self, g: float = 9.81, length: float = 1.0):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=DT))
        self.length = torch.nn.Parameter(torch.tensor(length, dtype=DT))

    def forward(self, t, z):
        x, y, u, v, lam = z
        return torch.stack([u, v, -lam * x, -lam * y - self.g, u * u + v * v - lam * (x * x + y * y) - self.g * y])

    def initial(self, theta0: float) -> torch.Tensor:
        """The consistent state at rest at angle ``theta0`` (lam solves the algebraic equation)."""
        th = torch.tensor(theta0, dtype=DT)
        x, y = self.length * torch.sin(th), -self.length * torch.cos(th)
        zero = torch.zeros((), dtype=DT)
        return torch.stack([x, y, zero, zero, -self.g * y / self.length ** 2])


def angle_reference(g: float = 9.81, length: float = 1.0) -> torch.Tensor:
    """``theta'' = -(g/L) sin(theta)`` by scipy (DOP853, rtol = atol = 1e-13), mapped to
    ``(x, y, u, v, lam)`` at PENDULUM_T."""
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda t, q: [q[1], -(g / length) * np.sin(q[0])], (0.0, PENDULUM_T[-1]), [THETA0, 0.0],
                    method="DOP853", t_eval=PENDULUM_T, rtol=1e-13, atol=1e-13)
    th, om = sol.y
    return torch.from_numpy(np.stack([length * np.sin(th), -length * np.cos(th), length * om * np.cos(th),
                                      length * om * np.sin(th), om ** 2 + (g / length) * np.cos(th)], 1))


def _pendulum(p: Pendulum, h: float, solve=pnode.odeint) -> torch.Tensor:
    return solve(p, p.initial(THETA0), torch.tensor(PENDULUM_T, dtype=DT), method="cn", step_size=h,
                 mass=PENDULUM_MASS)


def test_pendulum_dae_matches_angle_ode():
    """Crank-Nicolson on the DAE: second order (the error ratio for h -> h/2 is ~4), the
    algebraic equation held to Newton's tolerance, and the Richardson extrapolation
    (4 y_{h/2} - y_h)/3 (CN's error expands in h^2, h^4, ...) within 1e-6 of the reference."""
    p = Pendulum()
    ref = angle_reference()
    coarse, fine = _pendulum(p, 0.01), _pendulum(p, 0.005)
    with torch.no_grad():
        assert float(p(0.0, fine.T)[4].abs().max()) < 1e-9
    err_coarse, err_fine = (float((out - ref).abs().max()) for out in (coarse, fine))
    assert 3.6 < err_coarse / err_fine < 4.4
    assert float(((4 * fine - coarse) / 3 - ref).abs().max()) < 1e-6


def test_pendulum_dae_gradient_central_differences():
    """Gradients w.r.t. g and L, which reach the solve through the vector field and through
    the consistent initial state, equal central differences of the same CN scheme
    (eps = 1e-6 relative: truncation ~4e-12, 4e-8 measured at eps = 1e-4 and scaling as
    eps^2; rounding noise a few 1e-9, 4e-8 at eps = 1e-7 and scaling as 1/eps): bound 1e-7."""
    p = Pendulum()

    def loss(out):
        return out[-1, 0] + out[2, 1] + 0.1 * out[-1, 4]

    grads = torch.autograd.grad(loss(_pendulum(p, 0.01, pnode.odeint_adjoint)), [p.g, p.length])
    for param, grad in zip((p.g, p.length), grads):
        fd = central_difference(lambda: loss(_pendulum(p, 0.01)), param, (), eps=1e-6 * float(param.detach()))
        assert abs(fd - float(grad)) <= 1e-7 * abs(fd)


@pytest.mark.parametrize("solve", [pnode.odeint, pnode.odeint_adjoint])
def test_pendulum_inconsistent_initial_condition_raises(solve):
    p = Pendulum()
    z0 = p.initial(THETA0).detach()
    z0[4] *= 1.01  # the rod tension 1% off: violates the algebraic equation
    with pytest.raises(pnode.ConfigurationError, match="not consistent with the algebraic equations"):
        solve(p, z0, torch.tensor(PENDULUM_T, dtype=DT), method="cn", step_size=0.01, mass=PENDULUM_MASS)
