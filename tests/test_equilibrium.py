"""Deep-equilibrium mode: SNES finds the fixed point (Anderson, Newton-Krylov, Picard
agree), the implicit gradient matches central differences, the Neumann and phantom
gradients approach it with more steps, and a non-converging iteration raises."""
import pytest
import torch

from pnode import ConfigurationError, ConvergenceError
from pnode.solvers.unrolling import Equilibrium, Learned, ProximalStep, Unrolled
from helpers import assert_matches_central_differences
from unrolling_cases import sparse_problem


class Shrink(torch.nn.Module):
    """``v + tanh(W2 tanh(W1 v))``: with the learned prox ``v - theta net(v)`` and
    ``theta = 1/2`` the step is a smooth contraction."""

    def __init__(self, n):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Linear(n, 16, dtype=torch.float64), torch.nn.Tanh(),
                                         torch.nn.Linear(16, n, dtype=torch.float64))

    def forward(self, v):
        return v + 0.3 * torch.tanh(self.inner(v))


def smooth_step(A):
    torch.manual_seed(3)
    step = ProximalStep(A, Learned(Shrink(A.shape[1])), weight=1.0, lipschitz=float(torch.linalg.matrix_norm(A, 2)) ** 2)
    with torch.no_grad():
        step.weight.value.fill_(0.5 / float(step.step.value))  # theta = tau * weight = 1/2
    return step


def test_solvers_find_the_fixed_point():
    A, x, y = sparse_problem(30, 40)
    x0 = torch.zeros(3, 40, dtype=torch.float64)
    lasso = ProximalStep(A, "soft", weight=0.1)  # the fixed point: the LASSO solution
    ref = Unrolled(A, "fista", 1500, weight=0.1, learn=False)(y).detach()
    for solver in ("anderson", "picard"):
        deq = Equilibrium(lasso, solver=solver, rtol=1e-12, atol=1e-12, max_it=3000)
        with torch.no_grad():
            assert torch.allclose(deq.solve(y, x0), ref, atol=1e-9)
        assert deq.iterations > 0
    smooth = smooth_step(A)  # Newton-Krylov needs a smooth map
    outs = []
    for solver in ("anderson", "newton"):
        deq = Equilibrium(smooth, solver=solver, rtol=1e-13, atol=1e-13)
        with torch.no_grad():
            outs.append(deq.solve(y, x0))
            assert float((outs[-1] - smooth(outs[-1], y)).abs().max()) < 1e-12
    assert torch.allclose(outs[0], outs[1], atol=1e-12)


def test_implicit_gradient_matches_central_differences():
    A, x, y = sparse_problem()
    step = smooth_step(A)
    deq = Equilibrium(step, solver="anderson", gradient="implicit", rtol=1e-14, atol=1e-14, max_it=500)
    loss = lambda: ((deq(y) - x) ** 2).sum()  # noqa: E731
    weight = step.prox.net.inner[0].weight
    grads = torch.autograd.grad(loss(), [weight, step.step.value])
    assert_matches_central_differences(loss, weight, grads[0], [(0, 0), (3, 7), (15, 39)], 1e-6, 1e-6)
    assert_matches_central_differences(loss, step.step.value, grads[1], [0], 1e-7, 1e-6)
    yy = y.clone().requires_grad_(True)
    gy = torch.autograd.grad(((deq(yy) - x) ** 2).sum(), yy)[0]
    assert_matches_central_differences(lambda: ((deq(yy) - x) ** 2).sum(), yy, gy, [(0, 0), (2, 5)], 1e-6, 1e-6)


def test_phantom_and_neumann_gradients_approach_the_implicit_one():
    A, x, y = sparse_problem()
    step = smooth_step(A)
    params = list(step.parameters())

    def grad(**kwargs):
        deq = Equilibrium(step, rtol=1e-13, atol=1e-13, max_it=500, **kwargs)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(((deq(y) - x) ** 2).sum(), params)])

    exact = grad(gradient="implicit")
    for kind, options in (("neumann", {}), ("phantom", {"damping": 1.0})):
        errors = [float((grad(gradient=kind, phantom_steps=k, **options) - exact).norm() / exact.norm())
                  for k in (2, 30)]
        assert errors[1] < 1e-3 and errors[1] < errors[0], (kind, errors)


def test_non_convergence_names_iterations_and_residual():
    A, _, y = sparse_problem()
    step = ProximalStep(A, "soft", weight=0.05)
    with torch.no_grad():
        step.step.value.fill_(3.0)  # far beyond 2/L: the iteration diverges
    deq = Equilibrium(step, solver="picard", max_it=20)
    with pytest.raises(ConvergenceError, match=r"did not converge: \d+ iterations, residual"):
        deq(y)
    bad = y.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ConfigurationError, match="non-finite"):
        deq(bad)
    with pytest.raises(ConfigurationError, match="initial guess x0 must have"):
        deq(y, torch.zeros(3, 41, dtype=torch.float64))
