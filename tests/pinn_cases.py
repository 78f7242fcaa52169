"""Small collocation problems shared by the PINN tests (serial and under mpiexec)."""
from __future__ import annotations

import math

import torch

from pnode.pinn import CollocationProblem, Interval, Term, cases, operators as ops

DT = torch.float64


def mlp(inputs: int = 1, width: int = 8, depth: int = 1, seed: int = 0) -> torch.nn.Module:
    """The tests' small tanh MLP (pnode.pinn.cases.mlp with the tests' sizes)."""
    return cases.mlp(width=width, depth=depth, seed=seed, dtype=DT, inputs=inputs)


def poisson_residual(u, x, c):
    """-u'' - pi^2 sin(pi x) (exact solution sin(pi x))."""
    return -ops.laplacian(u)(x) - math.pi ** 2 * torch.sin(math.pi * x[0])


def poisson1d(comm=None, n: int = 32, width: int = 8, hard: bool = True) -> CollocationProblem:
    """-u'' = pi^2 sin(pi x) on [0, 1], u(0) = u(1) = 0: hard (x(1 - x) N(x)) or soft."""
    domain = Interval(0.0, 1.0)
    terms = [Term("pde", domain.sample(n, "sobol", seed=1), poisson_residual)]
    transform = (lambda x, out: x[0] * (1 - x[0]) * out) if hard else None
    if not hard:
        terms.append(Term("boundary", torch.tensor([[0.0], [1.0]], dtype=DT), lambda u, x, c: u(x), weight=10.0))
    return CollocationProblem(mlp(1, width), terms, domain, transform=transform, comm=comm)


def rel_l2_poisson1d(problem: CollocationProblem) -> float:
    X = torch.linspace(0, 1, 201, dtype=DT)[:, None]
    u = problem(X).reshape(-1)
    ref = torch.sin(math.pi * X[:, 0])
    return float((u - ref).norm() / ref.norm())


def flat(problem: CollocationProblem) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in problem.parameters()])
