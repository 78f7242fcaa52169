"""Assembled IJacobians (dense LU, block-diagonal point-block Jacobi): exact gradients,
fewer Newton/Krylov iterations, the ``jacobian="auto"`` rule and its errors."""
from __future__ import annotations

import pytest
import torch

import pnode
from reference_implicit import theta_solve
from implicit_cases import CASES, DT, STEP, STEPS, T_OUT, Dae, setup_models, check_against_reference, rober

KINDS = ["dense", "blocks"]
ALL_KINDS = ["matrix-free", *KINDS]


@pytest.mark.parametrize("jacobian", ALL_KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_assembled_gradient_equals_autograd_through_same_scheme(case, jacobian):
    check_against_reference(case, jacobian=jacobian)


@pytest.mark.parametrize("mass", [torch.tensor([1.0, 0.0], dtype=DT),
                                  torch.tensor([[1.0, 0.5], [0.0, 0.0]], dtype=DT)])
def test_dense_dae_gradient(mass):
    dae = Dae()
    y0 = torch.tensor([1.0, 0.5], dtype=DT)
    out = pnode.odeint_adjoint(dae, y0, T_OUT, method="beuler", step_size=STEP, mass=mass, jacobian="dense")
    ref = theta_solve(dae, y0, STEPS, T_OUT.numpy(), 1.0, False, mass=mass)
    assert float((out - ref).abs().max().detach()) < 1e-10
    got = torch.autograd.grad(out[-1, 0] + out[2, 1], [dae.k, dae.a])
    want = torch.autograd.grad(ref[-1, 0] + ref[2, 1], [dae.k, dae.a])
    for a, b in zip(got, want):
        assert abs(float(a - b)) < 1e-9 * abs(float(b))


@pytest.mark.parametrize("jacobian", KINDS)
def test_exact_solves_cut_newton_and_krylov_iterations(jacobian):
    f, g, y0 = setup_models()
    stats = {}
    for kind in ("matrix-free", jacobian):
        ode = pnode.NeuralODE(f, method="cn", step_size=STEP, jacobian=kind)
        ode(y0, T_OUT)
        stats[kind] = ode.stats
    free, exact = stats["matrix-free"], stats[jacobian]
    assert exact["jacobian"] == jacobian and exact["steps"] == free["steps"] == 8
    assert exact["krylov_iterations"] == exact["newton_iterations"]  # one LU solve per Newton step
    assert exact["newton_iterations"] <= free["newton_iterations"]
    assert exact["krylov_iterations"] < free["krylov_iterations"] / 2


def _coupled(t, y):
    return -y + 0.5 * y.mean(0, keepdim=True) ** 2


@pytest.mark.parametrize("shape, func, expected", [
    ((3,), rober, "dense"),
    ((3, 2), lambda t, y: -y ** 3, "blocks"),
    ((3, 2), _coupled, "dense"),
    ((300,), lambda t, y: -y, "matrix-free"),
    ((300, 2), _coupled, "matrix-free"),
])
def test_auto_rule(shape, func, expected):
    y0 = torch.full(shape, 0.5, dtype=DT)
    ode = pnode.NeuralODE(func, method="beuler", step_size=STEP)
    with torch.no_grad():
        ode(y0, T_OUT[:2])
    assert ode.stats["jacobian"] == expected


def test_blocks_with_coupled_samples_raise():
    with pytest.raises(pnode.ConfigurationError, match="interact"):
        pnode.odeint(_coupled, torch.full((3, 2), 0.5, dtype=DT), T_OUT, method="beuler", step_size=STEP,
                     jacobian="blocks")


def test_bad_jacobian_keywords():
    y0 = torch.ones(3, dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="jacobian must be"):
        pnode.odeint(rober, y0, T_OUT, method="beuler", step_size=STEP, jacobian="lu")
    with pytest.raises(pnode.ConfigurationError, match="batched"):
        pnode.odeint(rober, y0, T_OUT, method="beuler", step_size=STEP, jacobian="blocks")
