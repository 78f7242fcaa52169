"""Implicit, IMEX and DAE integration: exact discrete-adjoint gradients, stiff forward
accuracy and error paths (real PETSc)."""
from __future__ import annotations

import pytest
import torch

import pnode
from helpers import assert_matches_central_differences, central_difference
from implicit_cases import (CASES, DT, MASS, STEP, STEPS, T_OUT, Dae, loss_of, run_case, setup_models,
                            check_against_reference, rober)
from reference_implicit import theta_solve


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_equals_autograd_through_same_scheme(case):
    check_against_reference(case)  # jacobian="auto" (every kind: tests/test_assembled.py)


@pytest.mark.parametrize("case", ["cn", "imex-l2"])
def test_gradient_central_differences(case):
    kw, _ = CASES[case]
    f, g, y0 = setup_models()
    target = g.k if "implicit" in kw else f.net[0].bias
    out = run_case(kw, f, g, y0, jacobian="matrix-free")
    gy0, gp = torch.autograd.grad(loss_of(out), [y0, target])
    for tensor, grad, idx in ((y0, gy0, (1, 0)), (target, gp, (1,))):
        assert_matches_central_differences(lambda: loss_of(run_case(kw, f, g, y0, jacobian="matrix-free")), tensor,
                                           grad, [idx], eps=1e-6, rtol=1e-6)


def test_rober_matches_scipy_bdf():
    from scipy.integrate import solve_ivp

    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    t = torch.tensor([0.0, 1e-3, 1e-2, 3e-2], dtype=DT)
    sol = solve_ivp(lambda s, y: rober(s, torch.from_numpy(y)).numpy(), (0.0, float(t[-1])), y0.numpy(),
                    method="BDF", t_eval=t.numpy(), rtol=1e-10, atol=1e-14)
    ref = torch.from_numpy(sol.y.T)
    out = pnode.odeint(rober, y0, t, method="arkimex", rtol=1e-7, atol=1e-12)
    scale = torch.tensor([1.0, 4e-5, 1.0], dtype=DT)  # y2 peaks at ~3.6e-5
    assert float(((out - ref).abs() / scale).max()) < 1e-5


def test_dae_forward_and_gradient():
    dae = Dae()
    y0 = torch.tensor([1.0, 0.5], dtype=DT)
    out = pnode.odeint_adjoint(dae, y0, T_OUT, method="beuler", step_size=STEP, mass=MASS)
    assert float((out[:, 1] - dae.a * out[:, 0] ** 2).abs().max().detach()) < 1e-10  # constraint kept
    loss = out[-1, 0] + out[2, 1]
    gk, ga = torch.autograd.grad(loss, [dae.k, dae.a])
    ref = theta_solve(dae, y0, STEPS, T_OUT.numpy(), 1.0, False, mass=MASS)
    assert float((out - ref).abs().max().detach()) < 1e-10
    rk, ra = torch.autograd.grad(ref[-1, 0] + ref[2, 1], [dae.k, dae.a])
    assert abs(float(gk - rk)) < 1e-9 * abs(float(rk)) and abs(float(ga - ra)) < 1e-9 * abs(float(ra))
    def plain_loss():
        out = pnode.odeint(dae, y0, T_OUT, method="beuler", step_size=STEP, mass=MASS)
        return out[-1, 0] + out[2, 1]

    fd = central_difference(plain_loss, dae.k, (), eps=1e-6)
    assert abs(fd - float(gk)) < 1e-6 * abs(fd)


def test_dae_inconsistent_initial_condition_raises():
    with pytest.raises(pnode.ConfigurationError, match="algebraic"):
        pnode.odeint_adjoint(Dae(), torch.tensor([1.0, 0.0], dtype=DT), T_OUT, method="cn",
                             step_size=STEP, mass=MASS)


def test_configuration_errors():
    f, g, y0 = setup_models()
    with pytest.raises(pnode.ConfigurationError, match="identity mass"):
        pnode.odeint(f, y0, T_OUT, method="arkimex", mass=torch.ones(6, dtype=DT))
    with pytest.raises(pnode.ConfigurationError, match="arkimex"):
        pnode.odeint(f, y0, T_OUT, method="cn", implicit=g, step_size=STEP)
    with pytest.raises(pnode.ConfigurationError, match="implicit method|method="):
        pnode.odeint(f, y0, T_OUT, method="rk4", mass=torch.ones(6, dtype=DT), step_size=STEP)
    with pytest.raises(pnode.ConfigurationError, match="shape"):
        pnode.odeint(f, y0, T_OUT, method="beuler", mass=torch.ones(5, dtype=DT), step_size=STEP)


def test_newton_failure_raises_convergence_error():
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    with pytest.raises(pnode.ConvergenceError, match=r"Newton.*step|step.*Newton") as info:
        pnode.odeint(rober, y0, t, method="beuler", step_size=1.0, options={"snes_max_it": 1})
    assert info.value.step is not None and info.value.time is not None


def test_adaptive_newton_failures_name_the_failure_limit():
    """An adaptive solve cuts the step after each Newton failure: the hint names the
    failure count and its option instead of suggesting smaller or adaptive steps."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=DT)
    with pytest.raises(pnode.ConvergenceError, match=r"Newton failed 10 times.*ts_max_snes_failures") as info:
        pnode.odeint(rober, y0, t, method="arkimex", options={"snes_max_it": 1, "ts_max_snes_failures": 10})
    assert "adaptive method" not in str(info.value) and info.value.step is not None
    def bad(t, y):
        return y[:1]

    with pytest.raises(pnode.ConfigurationError, match="shape"):
        pnode.odeint(bad, torch.ones(2, dtype=DT), T_OUT, method="beuler", step_size=STEP)


@pytest.mark.parametrize("jacobian", ["matrix-free", "dense", "blocks"])
def test_lagged_jacobians_keep_adjoint_exact(jacobian):
    """Lagging is a forward-solve saving: the adjoint still transposes fresh Jacobians."""
    check_against_reference("cn", jacobian=jacobian,
                            options={"snes_lag_jacobian": 2, "snes_lag_preconditioner": 2})


def test_adaptive_solve_outlives_many_newton_failures():
    """PETSc counts Newton failures over a whole solve; an adaptive stiff solve that cuts
    its step after each of them must not stop at an arbitrary total."""
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    t = torch.tensor([0.0, 1e-2, 1.0], dtype=DT)
    ode = pnode.NeuralODE(rober, method="arkimex", rtol=1e-6, atol=1e-10,
                          options={"ts_arkimex_type": "4", "snes_max_it": 2})  # Newton often fails
    with torch.no_grad():
        out = ode(y0, t)
    assert ode.stats["newton_failures"] > 10
    ref = pnode.odeint(rober, y0, t, method="arkimex", rtol=1e-6, atol=1e-10, options={"ts_arkimex_type": "4"})
    scale = torch.tensor([1.0, 4e-5, 1.0], dtype=DT)
    assert float(((out - ref).abs() / scale).max()) < 1e-4


class _OnceDifferentiable(torch.autograd.Function):
    """``-5 y`` whose backward pass cannot be differentiated again."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return -5.0 * grad

    @staticmethod
    def forward(ctx, y):
        return -5.0 * y


def test_matrix_free_jacobian_needs_double_backward():
    y0 = torch.ones(300, dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="twice differentiable"):
        pnode.odeint(lambda t, y: _OnceDifferentiable.apply(y), y0, T_OUT, method="beuler", step_size=STEP,
                     jacobian="matrix-free")
    out = pnode.odeint(lambda t, y: _OnceDifferentiable.apply(y), y0, T_OUT, method="beuler", step_size=STEP,
                       jacobian="dense")  # assembled from first derivatives only
    assert torch.allclose(out[-1], torch.full_like(y0, (1 + 5 * STEP) ** -8), rtol=1e-10)
