"""pnode.pinn.CollocationProblem: the residual vector, its Jacobian rows, named errors."""
import math

import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.pinn import CollocationProblem, Interval, SpaceTime, Term, operators as ops
from pinn_cases import DT, flat, mlp, poisson1d


def test_rows_are_weighted_so_the_loss_is_the_weighted_mean_square():
    problem = poisson1d(n=20, hard=False)
    r = problem.residual()
    assert r.shape == (22,)
    pde, bnd = problem.term_residual(0), problem.term_residual(1)
    expected = 0.5 * (pde.pow(2).mean() + 10.0 * bnd.pow(2).mean())
    assert abs(float(problem.loss()) - float(expected)) < 1e-13 * float(expected)


def test_jacobian_rows_by_vmap_equal_autograd_on_the_residual():
    problem = poisson1d(n=12, hard=True)
    params = problem.parameters()
    sizes = [p.numel() for p in params]

    def residual_of(theta):  # the same rows with the parameters as an explicit input
        named = {n: v.view_as(p) for n, v, p in zip(problem.names, torch.split(theta, sizes), params)}
        return torch.cat([scale * problem._rows(named, {}, term, x, d).reshape(-1)
                          for term, (x, d, scale) in zip(problem.terms, problem.local)])
    ref = torch.autograd.functional.jacobian(residual_of, flat(problem))
    assert torch.allclose(problem.jacobian_rows(), ref, rtol=0, atol=1e-12)
    # and the differentiable residual gives the same J^T w
    w = torch.randn(ref.shape[0], dtype=DT)
    grads = torch.autograd.grad(problem.residual(), params, grad_outputs=w)
    assert torch.allclose(torch.cat([g.reshape(-1) for g in grads]), ref.T @ w, rtol=0, atol=1e-12)


def test_coefficients_and_data_terms_enter_the_jacobian():
    domain = Interval(0.0, 1.0)
    x = domain.sample(10, "sobol")
    data = torch.exp(-2.0 * x)
    terms = [Term("ode", domain.sample(16, "sobol", seed=2), lambda u, x, c: ops.gradient(u)(x)[0] + c["k"] * u(x)),
             Term("data", x, lambda u, x, c, y: u(x) - y[0], data=data)]
    problem = CollocationProblem(mlp(), terms, domain, coefficients={"k": torch.tensor(1.0, dtype=DT)})
    J = problem.jacobian_rows()
    assert J.shape == (26, sum(p.numel() for p in problem.parameters()))
    assert problem.parameters()[-1] is problem.coefficients["k"] and problem.coefficients["k"].requires_grad
    # the k column of the ODE rows is u(x) * sqrt(1/16); the data rows do not depend on k
    u = problem(terms[0].points).reshape(-1)
    assert torch.allclose(J[:16, -1], u / 4.0, rtol=0, atol=1e-14)
    assert torch.all(J[16:, -1] == 0)


def test_bad_problems_raise_named_errors():
    domain = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)
    good = lambda u, x, c: ops.time_derivative(u)(x)  # noqa: E731
    inside = domain.sample(8)
    with pytest.raises(ConfigurationError, match="outside the domain"):
        CollocationProblem(mlp(2), [Term("pde", inside + torch.tensor([0.0, 2.0], dtype=DT), good)], domain)
    with pytest.raises(ConfigurationError, match=r"shape \(N, 2\)"):
        CollocationProblem(mlp(2), [Term("pde", inside[:, :1], good)], domain)
    with pytest.raises(ConfigurationError, match="one row per point"):
        Term("data", inside, lambda u, x, c, y: u(x) - y, data=torch.zeros(5, 1, dtype=DT))
    with pytest.raises(ConfigurationError, match=r"takes 2 argument"):
        Term("pde", inside, lambda u, x: u(x))
    with pytest.raises(ConfigurationError, match="not finite"):
        CollocationProblem(mlp(2), [Term("pde", inside, lambda u, x, c: u(x) / 0.0)], domain)
    with pytest.raises(ConfigurationError, match="does not depend on the network's parameters"):
        CollocationProblem(mlp(2), [Term("pde", inside, lambda u, x, c: torch.sin(x[0]))], domain)

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.ones(1, dtype=DT))

        def forward(self, x):
            return self.a * torch.ones_like(x[..., :1])
    with pytest.raises(ConfigurationError, match="does not depend on its input"):
        CollocationProblem(Constant(), [Term("pde", inside, lambda u, x, c: u(x) - 1.0)], domain)


def test_points_are_split_over_the_ranks_of_comm_self_whole():
    problem = poisson1d(n=9)
    assert problem.local[0][0].shape == (9, 1)
    assert math.isclose(problem.local[0][2], (1 / 9) ** 0.5)
