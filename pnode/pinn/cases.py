"""The benchmark problems as collocation problems (shared by the examples, the benchmarks
and the tests), each scored against its exact solution.

**Burgers**: ``u_t + u u_x = nu u_xx`` on ``x in [-1, 1]``, ``t in [0, 1]``, ``u(x, 0) = -sin(pi x)``,
``u(+-1, t) = 0``, ``nu = 0.01 / pi``. The initial and boundary conditions are hard:
``u = -sin(pi x) + t (1 - x^2) N(x, t)``. :func:`burgers_score` is the relative L2 error
on the scoring grid (``x = linspace(-1, 1, 256)``, ``t = linspace(0, 0.99, 100)``)
against the Cole-Hopf solution.

**Poisson** (2-D): ``-lap u = 2 pi^2 sin(pi x) sin(pi y)`` on the unit square, ``u = 0`` on
the boundary (hard: ``u = x (1 - x) y (1 - y) N(x, y)``); exact ``sin(pi x) sin(pi y)``;
:func:`poisson_score` on a 101 x 101 grid.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from . import operators as ops
from .domains import Interval, Rectangle, SpaceTime
from .exact import burgers_cole_hopf
from .problem import CollocationProblem, Term

NU = 0.01 / math.pi
DOMAIN = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)


def burgers_residual(u, x, c):
    """``u_t + u u_x - nu u_xx`` at one point ``(x, t)`` (``nu`` from ``c`` when given)."""
    value, g, h = ops.derivatives(u, x)
    nu = c["nu"] if "nu" in c else NU
    return g[1] + value * g[0] - nu * h[0, 0]


def hard_conditions(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return -torch.sin(math.pi * x[0]) + x[1] * (1 - x[0] ** 2) * out


def mlp(width: int = 20, depth: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64,
        inputs: int = 2) -> torch.nn.Module:
    """A tanh MLP ``R^inputs -> R`` with ``depth`` hidden layers of ``width``."""
    torch.manual_seed(seed)
    layers, n = [], inputs
    for _ in range(depth):
        layers += [torch.nn.Linear(n, width), torch.nn.Tanh()]
        n = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(n, 1)).to(dtype)


def burgers_problem(model: torch.nn.Module, points: int = 2000, sampler: str = "sobol", seed: int = 0,
                    comm=None) -> CollocationProblem:
    """The forward problem on ``points`` collocation points."""
    term = Term("pde", DOMAIN.sample(points, sampler, seed), burgers_residual)
    return CollocationProblem(model, [term], DOMAIN, transform=hard_conditions, comm=comm)


@lru_cache(maxsize=1)
def scoring_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (256,)``, ``t (100,)`` and the exact ``u (100, 256)``."""
    x, t = np.linspace(-1, 1, 256), np.linspace(0, 0.99, 100)
    return x, t, burgers_cole_hopf(x, t, NU)


def predict(problem: CollocationProblem) -> np.ndarray:
    """The PINN's ``u (100, 256)`` on the scoring grid."""
    x, t, _ = scoring_grid()
    X, T = np.meshgrid(x, t)
    pts = torch.as_tensor(np.stack([X.ravel(), T.ravel()], axis=1), dtype=problem.dtype)
    return problem(pts).reshape(t.size, x.size).double().numpy()


def burgers_score(problem: CollocationProblem) -> float:
    """Relative L2 error against Cole-Hopf on the scoring grid."""
    u = predict(problem)
    ref = scoring_grid()[2]
    return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))


SQUARE = Rectangle(0.0, 1.0, 0.0, 1.0)


def poisson_residual(u, x, c):
    """``-lap u - 2 pi^2 sin(pi x) sin(pi y)`` at one point."""
    return -ops.laplacian(u)(x) - 2 * math.pi ** 2 * torch.sin(math.pi * x[0]) * torch.sin(math.pi * x[1])


def zero_on_square(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return x[0] * (1 - x[0]) * x[1] * (1 - x[1]) * out


def poisson_problem(model: torch.nn.Module, points: int = 1024, sampler: str = "sobol", seed: int = 0,
                    comm=None) -> CollocationProblem:
    """The 2-D Poisson problem on ``points`` interior collocation points."""
    term = Term("pde", SQUARE.sample(points, sampler, seed), poisson_residual)
    return CollocationProblem(model, [term], SQUARE, transform=zero_on_square, comm=comm)


def poisson_score(problem: CollocationProblem, n: int = 101) -> float:
    """Relative L2 error against ``sin(pi x) sin(pi y)`` on an ``n x n`` grid."""
    pts = SQUARE.sample(n * n, "grid").to(problem.dtype)
    exact = torch.sin(math.pi * pts[:, 0]) * torch.sin(math.pi * pts[:, 1])
    u = problem(pts).reshape(-1)
    return float((u - exact).norm() / exact.norm())
