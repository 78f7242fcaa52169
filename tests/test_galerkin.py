"""Neural-Galerkin marching: M and F against autograd, the regularised solve, marching by
TS (advection against the exact shift) and the discrete adjoint against central differences."""
import dataclasses

import pytest
import torch

import pnode
from galerkin_cases import EVAL, SMALL, final_loss, ga
from helpers import central_difference, rel_error
from pnode.pinn.galerkin import GalerkinProblem, PeriodicFeatures

DT = torch.float64


class AdvectionDiffusion(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.speed = torch.nn.Parameter(torch.tensor(0.7, dtype=DT))
        self.nu = torch.nn.Parameter(torch.tensor(0.05, dtype=DT))

    def forward(self, t, x, u, du, d2u):
        return -self.speed * du[:, 0] + self.nu * d2u[:, 0] + t * u ** 2


def test_mass_and_force_equal_autograd_reference():
    problem = ga.build(SMALL)
    problem = GalerkinProblem(problem.net, AdvectionDiffusion(), torch.rand(17, dtype=DT), regularization=1e-12)
    theta = problem.flat() + 0.1 * torch.randn(problem.numel, dtype=DT)
    t = torch.tensor(0.3, dtype=DT)
    with torch.no_grad():
        mass, force = problem.mass_and_force(t, theta)
    x = problem.points.clone().requires_grad_()
    jac = torch.autograd.functional.jacobian(lambda th: problem.solution(th, x.detach()), theta)
    u = problem.solution(theta, x)
    du, = torch.autograd.grad(u.sum(), x, create_graph=True)
    d2u, = torch.autograd.grad(du.sum(), x)
    f = -0.7 * du[:, 0] + 0.05 * d2u[:, 0] + 0.3 * u ** 2
    n = x.shape[0]
    assert rel_error(mass, jac.T @ jac / n) < 1e-13
    assert rel_error(force, jac.T @ f.detach() / n) < 1e-13
    # the velocity is the Tikhonov-regularised solve
    shift = 1e-12 * torch.trace(mass) / problem.numel
    ref = torch.linalg.solve(mass + shift * torch.eye(problem.numel, dtype=DT), force)
    with torch.no_grad():
        assert rel_error(problem(t, theta), ref) < 1e-10


def test_singular_mass_without_regularisation_is_named():
    # c * W and W / c give the same network: M has a null direction
    net = torch.nn.Sequential(PeriodicFeatures(1.0), torch.nn.Linear(2, 1, bias=False),
                              torch.nn.Linear(1, 1, bias=False)).double()
    points = torch.arange(16, dtype=DT) / 16
    rhs = ga.Advection(1.0)
    problem = GalerkinProblem(net, rhs, points, derivatives=1)
    theta = problem.flat()
    with pytest.raises(pnode.ConfigurationError, match="singular.*rank 2 of 3.*regularization="):
        pnode.odeint(problem, theta, torch.tensor([0.0, 0.1], dtype=DT), method="rk4", step_size=0.05)
    # regularised or by the pseudo-inverse, a velocity solves M v = F (F is in M's range)
    t = torch.tensor(0.0, dtype=DT)
    mass, force = problem.mass_and_force(t, theta)
    for kw in ({"regularization": 1e-13}, {"solve": "pinv", "cutoff": 1e-10}):
        v = GalerkinProblem(net, rhs, points, derivatives=1, **kw)(t, theta)
        assert torch.isfinite(v).all() and rel_error(mass @ v, force) < 1e-9, kw
    with pytest.raises(pnode.ConfigurationError, match="solve must be one of"):
        GalerkinProblem(net, rhs, points, solve="lsqr")
    with pytest.raises(pnode.ConfigurationError, match="solver must be one of"):
        GalerkinProblem(net, rhs, points).fit(ga.bump, solver="adam")


def test_advection_example_fits_to_rounding_and_marches_to_the_exact_shift(tmp_path):
    cfg = dataclasses.replace(ga.Config(), **ga.QUICK)
    metrics = ga.run(cfg, tmp_path)
    # from the example's guess (one unit read off the samples, five random ones with zero
    # output) Levenberg-Marquardt stops at fmin 1e-20 in 18-39 of the 60 iterations (seeds
    # 0-3: benchmarks/bench_galerkin_fit.py; from the random network 3e-13 to 2e-10 in 40)
    assert metrics["fit_loss"] < 1e-17 and metrics["fit_rel"] < 1e-7
    # the shifted bump lies in the network's class: what is left is the time integration
    assert metrics["rk4_rel"] < 1e-5 and metrics["dopri5_rel"] < 1e-5
    assert metrics["rk4_steps"] == cfg.rk4_steps
    assert 0 < metrics["dopri5_steps"] < cfg.rk4_steps
    assert (tmp_path / "galerkin_advection.png").stat().st_size > 10_000


# Crank-Nicolson: Newton on theta' = solve(M, F) with the dense Jacobian (autograd through
# the torch.func derivatives); tight Newton tolerances (the adjoint is exact for the
# converged steps), a full-step line search (the default one stalls at 1e-14)
NEWTON = {"snes_rtol": 1e-12, "snes_atol": 1e-13, "snes_linesearch_type": "basic"}


@pytest.mark.parametrize("method,options", [("rk4", None), ("cn", NEWTON)])
def test_adjoint_gradient_matches_central_differences(method, options):
    # SMALL's Tikhonov shift (1e-6) keeps the solve well conditioned: with 1e-10 the loss
    # carries rounding noise of ~1e-11 (cond(M + eps I) ~ 1e10) and central differences
    # cannot resolve 1e-6; the adjoint then still equals backpropagation through rk4
    problem = ga.build(SMALL)
    theta0 = problem.flat().requires_grad_()
    loss = final_loss(problem, theta0, SMALL, pnode.odeint_adjoint, method, options)
    loss.backward()
    speed = problem.rhs.speed
    assert speed.grad is not None and theta0.grad is not None

    def plain():
        with torch.no_grad():
            return final_loss(problem, theta0, SMALL, pnode.odeint, method, options)

    checks = [(speed, (), speed.grad)] + [(theta0, (i,), theta0.grad) for i in (0, 5, problem.numel - 1)]
    for tensor, index, grad in checks:
        fd = central_difference(plain, tensor.data, index, 1e-4)
        assert abs(fd - float(grad[index])) <= 1e-6 * abs(fd), (index, fd, float(grad[index]))


# the implicit form G = M(theta) theta' - F = 0: Newton's basin shrinks with M's smallest
# eigenvalue (measured on SMALL at h = T/8: diverging with the shift 1e-4 or 1e-6, converging
# in 7 iterations with 1e-2, cond(M + eps I) ~ 1e3), so these tests take 1e-2
IMPLICIT = dataclasses.replace(SMALL, regularization=1e-2, T=0.02, rk4_steps=2)


@pytest.mark.parametrize("method", ["beuler", "theta"])
def test_implicit_mass_form_marches_the_solved_form_and_its_adjoint_matches_central_differences(method):
    problem = ga.build(IMPLICIT)
    force, mass = problem.implicit_form()
    theta0 = problem.flat().requires_grad_()
    step = IMPLICIT.T / IMPLICIT.rk4_steps
    t = torch.tensor([0.0, IMPLICIT.T], dtype=DT)

    def loss(solve, mass_form=True):
        kw = {"mass": mass} if mass_form else {}
        theta = solve(force if mass_form else problem, theta0, t, method=method, step_size=step,
                      options=NEWTON, jacobian="dense", **kw)[-1]
        return theta, ((problem.solution(theta, EVAL) - ga.exact(EVAL, IMPLICIT.T, 0.9)) ** 2).mean()

    theta_T, value = loss(pnode.odeint_adjoint)
    value.backward()
    with torch.no_grad():
        solved, _ = loss(pnode.odeint, mass_form=False)
    # the same ODE (M + eps I) theta' = F: equal within Newton's tolerance
    assert rel_error(theta_T.detach(), solved) < 1e-11
    speed = problem.rhs.speed

    def plain():
        with torch.no_grad():
            return loss(pnode.odeint)[1]

    for tensor, index, grad in [(speed, (), speed.grad), (theta0, (0,), theta0.grad), (theta0, (5,), theta0.grad)]:
        fd = central_difference(plain, tensor.data, index, 1e-4)
        assert abs(fd - float(grad[index])) <= 1e-6 * abs(fd), (index, fd, float(grad[index]))


def test_implicit_form_needs_the_tikhonov_solve():
    problem = ga.build(SMALL)
    pinv = GalerkinProblem(problem.net, problem.rhs, problem.points, solve="pinv", derivatives=1)
    with pytest.raises(pnode.ConfigurationError, match="solve='tikhonov'"):
        pinv.implicit_form()


class BlowsUp(torch.nn.Module):
    """Advection until t = 0.03, NaN after (a right-hand side that breaks down)."""

    def forward(self, t, x, u, du, d2u):
        return -du[:, 0] + torch.where(t > 0.03, torch.nan, 0.0)


def test_non_finite_theta_stops_with_the_last_good_state():
    problem = ga.build(SMALL)
    problem = GalerkinProblem(problem.net, BlowsUp(), problem.points, derivatives=1, regularization=1e-6)
    theta0 = problem.flat()
    t = torch.tensor([0.0, 0.01, 0.02, 0.03, 0.04], dtype=DT)
    with pytest.raises(pnode.ConvergenceError, match=r"non-finite.*t=0\.035, step 7") as info:
        pnode.odeint(problem, theta0, t, method="rk4", step_size=0.005)
    when, state = info.value.last_good
    clean = pnode.odeint(problem, theta0, t[:4], method="rk4", step_size=0.005)[-1]
    assert when == pytest.approx(0.03) and torch.equal(state, clean)


def test_newton_failure_of_the_implicit_form_names_time_and_step():
    # SMALL's shift 1e-6: cond(M + eps I) ~ 1e7 and Newton diverges from the first step
    problem = ga.build(SMALL)
    force, mass = problem.implicit_form()
    t = torch.tensor([0.0, SMALL.T], dtype=DT)
    with pytest.raises(pnode.ConvergenceError, match=r"Newton did not converge.*t=0, step 0.*SNES_DIVERGED"):
        pnode.odeint(force, problem.flat(), t, method="beuler", step_size=SMALL.T / 8, mass=mass,
                     options=NEWTON, jacobian="dense")


def test_allen_cahn_example_machinery_marches_both_methods_and_resumes(tmp_path):
    ac = pytest.importorskip("galerkin_allen_cahn")
    cfg = dataclasses.replace(ac.Config(), **ac.QUICK)
    first = ac.run(cfg, tmp_path)
    assert first["fit_rel"] < 1.0 and first["dopri5_steps"] > 0 and first["arkimex_steps"] > 0
    # both march the same ODE to their tolerance: the fields at T agree far below the fit error
    problem = ac.build(cfg)
    x = torch.linspace(-1, 1, 65, dtype=DT)
    with torch.no_grad():
        u = [problem.solution(torch.load(tmp_path / f"{m}.pt")["thetas"][-1], x) for m in ac.METHODS]
    assert rel_error(u[0], u[1]) < 1e-3
    assert (tmp_path / "galerkin_allen_cahn.png").stat().st_size > 10_000
    # a second run resumes from the saved fit and windows: nothing is marched again
    again = ac.run(cfg, tmp_path)
    for key in ("fit_loss", "dopri5_steps", "arkimex_steps", "dopri5_seconds", "dopri5_rel", "arkimex_rel"):
        assert again[key] == first[key], key
