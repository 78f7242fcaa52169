"""Newton for implicit stages (pnode.newton): Jacobian reuse with exact adjoints, the WRMS
stopping test, user Jacobians (jac=) and forward-only stiff integrators (real PETSc)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import pnode
from implicit_cases import DT, Mlp, rober
from reference_implicit import ark_solve

ROBER_Y0 = (1.0, 0.0, 0.0)
ROBER_SCALE = torch.tensor([1.0, 4e-5, 1.0], dtype=DT)  # y2 peaks at ~3.6e-5


@functools.lru_cache(maxsize=None)
def _radau_rober(t_end: float) -> torch.Tensor:
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda s, y: rober(s, torch.from_numpy(y)).numpy(), (0.0, t_end), ROBER_Y0, method="Radau",
                    rtol=1e-12, atol=1e-16, jac=lambda s, y: rober_jacobian(s, torch.from_numpy(y)).numpy())
    return torch.from_numpy(sol.y[:, -1].copy())


def rober_jacobian(t, y):
    _, y2, y3 = y
    z = torch.zeros((), dtype=y.dtype)
    return torch.stack([torch.stack([-0.04 + z, 1e4 * y3, 1e4 * y2]),
                        torch.stack([0.04 + z, -1e4 * y3 - 6e7 * y2, -1e4 * y2]),
                        torch.stack([z, 6e7 * y2, z])])


def _rober_solve(t_end: float, **kw):
    ode = pnode.NeuralODE(rober, method="arkimex", rtol=1e-6, atol=1e-10, options={"ts_arkimex_type": "4"}, **kw)
    with torch.no_grad():
        out = ode(torch.tensor(ROBER_Y0, dtype=DT), torch.tensor([0.0, t_end], dtype=DT))
    return out[-1], ode.stats


def _rober_error(y: torch.Tensor, t_end: float) -> float:
    return float(((y - _radau_rober(t_end)).abs() / ROBER_SCALE).max())


def test_rober_reuses_jacobians_at_full_newton_accuracy():
    """ROBER over [0, 1e5] (rtol 1e-6): at most 100 Jacobian evaluations (full Newton: one
    per iteration, over a thousand) and the accuracy of full Newton with PETSc's tests."""
    y, stats = _rober_solve(1e5)
    full, full_stats = _rober_solve(1e5, newton=pnode.Newton(reuse=False, test="petsc"))
    assert stats["newton_test"] == "wrms" and full_stats["newton_test"] == "petsc"
    assert stats["jacobian_evaluations"] <= 100
    assert full_stats["jacobian_evaluations"] >= full_stats["newton_iterations"] > 5 * stats["jacobian_evaluations"]
    err, full_err = _rober_error(y, 1e5), _rober_error(full, 1e5)
    assert err < 1e-4 and err < 3 * full_err + 1e-6


def _kink(t, y):
    """``y' = -k(t) (y - cos t)`` with ``k`` jumping from 1 to 1e4 near t = 0.5 (the
    Jacobian changes by a factor 1e4 within a few steps), and a mild nonlinearity."""
    k = 1.0 + 1e4 * torch.sigmoid((t - 0.5) / 1e-3)
    return -k * (y - torch.cos(t)) - 0.1 * y ** 3


@pytest.mark.parametrize("kw", [dict(method="beuler", step_size=1e-3),
                                dict(method="arkimex", rtol=1e-6, atol=1e-8, options={"ts_arkimex_type": "4"})])
def test_sharply_changing_jacobian_is_refreshed(kw):
    """Reuse must refresh when the Jacobian jumps: the solution equals full Newton's (fixed
    steps: to PETSc's Newton tolerance; adaptive: within the error tolerance)."""
    y0, t = torch.tensor([2.0, -1.0], dtype=DT), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=DT)
    outs, stats = [], []
    for newton in (pnode.Newton(reuse=True), pnode.Newton(reuse=False)):
        ode = pnode.NeuralODE(_kink, newton=newton, jacobian="dense", **kw)
        with torch.no_grad():
            outs.append(ode(y0, t))
        stats.append(ode.stats)
    tol = 1e-9 if "step_size" in kw else 1e-5
    assert float((outs[0] - outs[1]).abs().max()) < tol
    assert stats[0]["jacobian_evaluations"] < stats[1]["jacobian_evaluations"] / 3
    assert stats[0]["jacobian_evaluations"] > 2  # refreshed (the jump, the age limit)


@pytest.mark.parametrize("newton, options, tol", [
    (pnode.Newton(reuse=True, test="petsc"), {"snes_stol": 1e-14}, 1e-8),  # tight modified Newton
    (None, {}, 1e-4),  # the defaults: reuse, WRMS stopping (the Newton error is ~0.1 rtol a stage)
])
def test_adaptive_gradient_uses_exact_adjoint_jacobians(newton, options, tol):
    """Adaptive ARKIMEX with kept Jacobians: the gradient equals autograd through the same
    scheme on the accepted steps (stages solved exactly) to the Newton tolerance, because
    the adjoint evaluates its Jacobians at the converged stages (a kept one would be off
    by far more: 46% with lagged Jacobians, docs/implicit.md)."""
    torch.manual_seed(0)
    f = Mlp()
    y0 = torch.randn(3, 2, dtype=DT, requires_grad=True)
    t = torch.tensor([0.0, 0.1, 0.2], dtype=DT)
    ode = pnode.NeuralODE(f, method="arkimex", rtol=1e-4, atol=1e-6, jacobian="dense", newton=newton,
                          options=options)
    out = ode(y0, t)
    assert ode.stats["jacobian_evaluations"] < ode.stats["newton_iterations"] / 4
    params = [y0, *f.parameters()]
    grads = torch.autograd.grad((out ** 2).sum(), params)
    ref = ark_solve(f, None, y0, ode.step_times, t.numpy(), "l2")
    assert float((out - ref).abs().max().detach()) < tol
    ref_grads = torch.autograd.grad((ref ** 2).sum(), params)
    for a, b in zip(grads, ref_grads):
        assert float((a - b).norm() / b.norm()) < tol


def test_petsc_tests_selected_by_options():
    _, stats = _rober_solve(1.0)
    assert stats["newton_test"] == "wrms"
    ode = pnode.NeuralODE(rober, method="arkimex", rtol=1e-6, atol=1e-10, options={"snes_rtol": 1e-9})
    with torch.no_grad():
        ode(torch.tensor(ROBER_Y0, dtype=DT), torch.tensor([0.0, 1.0], dtype=DT))
    assert ode.stats["newton_test"] == "petsc"


def test_user_jacobian_dense():
    y, stats = _rober_solve(1e3, jac=rober_jacobian)
    ref, _ = _rober_solve(1e3)
    assert stats["jacobian"] == "dense"
    assert float(((y - ref).abs() / ROBER_SCALE).max()) < 1e-5
    assert _rober_error(y, 1e3) < 1e-4


def test_user_jacobian_blocks():
    """Per-sample blocks ``(B, m, m)`` of ``y' = -y^3`` on a batch: the blocks kind."""
    y0 = torch.full((4, 3), 0.5, dtype=DT) + torch.arange(12, dtype=DT).view(4, 3) / 10
    blocks = lambda t, y: torch.diag_embed(-3 * y ** 2)  # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=DT)
    out = pnode.odeint(lambda t, y: -y ** 3, y0, t, method="beuler", step_size=0.05, jac=blocks)
    ref = pnode.odeint(lambda t, y: -y ** 3, y0, t, method="beuler", step_size=0.05, jacobian="blocks")
    assert float((out - ref).abs().max()) < 1e-12


@pytest.mark.parametrize("jac, match", [
    (lambda t, y: torch.zeros(3, 2, dtype=DT), "must return dg/du"),
    (lambda t, y: 2 * rober_jacobian(t, y), "disagrees"),
    (lambda t, y: rober_jacobian(t, y).T, "disagrees"),
])
def test_bad_user_jacobian_raises(jac, match):
    with pytest.raises(pnode.ConfigurationError, match=match):
        pnode.odeint(rober, torch.tensor([0.9, 1e-5, 0.1], dtype=DT), torch.tensor([0.0, 1e-3], dtype=DT),
                     method="beuler", step_size=1e-4, jac=jac)


def test_bad_newton_settings_raise():
    with pytest.raises(pnode.ConfigurationError, match="test"):
        pnode.Newton(test="tight")
    with pytest.raises(pnode.ConfigurationError, match="newton"):
        pnode.odeint(rober, torch.tensor(ROBER_Y0, dtype=DT), torch.tensor([0.0, 1.0], dtype=DT),
                     method="beuler", step_size=0.1, newton={"age": 3})


@pytest.mark.parametrize("method", ["bdf", "rosw"])
def test_forward_only_stiff_integrators(method):
    """TSBDF and TSROSW (a linear SNES: one Jacobian per step) solve ROBER forward; the
    adjoint refuses them, naming the types that have one."""
    y0 = torch.tensor(ROBER_Y0, dtype=DT)
    t = torch.tensor([0.0, 1e3], dtype=DT)
    out = pnode.odeint(rober, y0, t, method=method, rtol=1e-6, atol=1e-10)
    assert _rober_error(out[-1], 1e3) < 1e-3
    with pytest.raises(pnode.ConfigurationError, match=r"no discrete adjoint.*rk, beuler, cn, theta, arkimex"):
        pnode.odeint_adjoint(rober, y0.clone().requires_grad_(True), t, method=method)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("options, tableau", [({}, "ra34pw2"), ({"ts_rosw_type": "rodas3"}, "rodas3")])
def test_rosw_stats_name_the_tableau_that_ran(options, tableau):
    """petsc4py has no TSROSW type getter: stats report the tableau pnode set (or PETSc's
    default), and the solve's counts: one Jacobian per step and no Newton iteration beyond
    one linear solve per stage."""
    ode = pnode.NeuralODE(rober, method="rosw", rtol=1e-6, atol=1e-10, options=options)
    with torch.no_grad():
        out = ode(torch.tensor(ROBER_Y0, dtype=DT), torch.tensor([0.0, 1e3], dtype=DT))
    stats = ode.stats
    assert stats["ts_type"] == "rosw" and stats["ts_subtype"] == tableau
    assert _rober_error(out[-1], 1e3) < 1e-3
    assert stats["jacobian_evaluations"] == stats["steps"] + stats["rejected"]


def test_wrms_norm_by_vec_ops_equals_the_numpy_norm(monkeypatch):
    """Small states take the WRMS norm by PETSc Vec ops, large ones by numpy: forced onto
    the numpy path, ROBER's solve takes the same Newton iterations to the same state."""
    y, stats = _rober_solve(1e3)
    monkeypatch.setattr(pnode.newton, "_SMALL_NORM", 0)
    y_np, stats_np = _rober_solve(1e3)
    assert stats["newton_iterations"] == stats_np["newton_iterations"]
    assert stats["steps"] == stats_np["steps"]
    assert float(((y - y_np).abs() / ROBER_SCALE).max()) < 1e-12
