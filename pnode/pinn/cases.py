"""The benchmark problems as collocation problems (shared by the examples, the benchmarks
and the tests), each scored against its exact solution.

**Burgers**: ``u_t + u u_x = nu u_xx`` on ``x in [-1, 1]``, ``t in [0, 1]``, ``u(x, 0) = -sin(pi x)``,
``u(+-1, t) = 0``, ``nu = 0.01 / pi``. The initial and boundary conditions are hard:
``u = -sin(pi x) + t (1 - x^2) N(x, t)``. :func:`burgers_score` is the relative L2 error
on the scoring grid (``x = linspace(-1, 1, 256)``, ``t = linspace(0, 0.99, 100)``)
against the Cole-Hopf solution.

**Allen-Cahn**: ``u_t = 1e-4 u_xx - 5 u^3 + 5 u`` on ``x in [-1, 1]`` (periodic), ``t in [0, 1]``,
``u(x, 0) = x^2 cos(pi x)``, solved by time marching (:class:`pnode.pinn.TimeMarching`): one
network per time slab on the periodic features ``cos(pi k x), sin(pi k x)`` of ``x`` (exactly
periodic) and the slab's time, each slab's initial condition built in from the slabs before.
:func:`allen_cahn_score` is the relative L2 error on ``x = linspace(-1, 1, 512)``,
``t = linspace(0, 1, 201)`` against :func:`pnode.pinn.reference.allen_cahn_reference`.

**Poisson** (2-D): ``-lap u = 2 pi^2 sin(pi x) sin(pi y)`` on the unit square, ``u = 0`` on
the boundary (hard: ``u = x (1 - x) y (1 - y) N(x, y)``); exact ``sin(pi x) sin(pi y)``;
:func:`poisson_score` on a 101 x 101 grid.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch

from pnode.errors import ConfigurationError

from . import operators as ops
from .domains import Interval, Rectangle, SpaceTime
from .exact import burgers_cole_hopf
from .galerkin import PeriodicFeatures
from .marching import TimeMarching
from .problem import CollocationProblem, Term
from .reference import ALLEN_CAHN_EPS, allen_cahn_reference
from .transforms import AffineTransform

NU = 0.01 / math.pi
DOMAIN = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)


def burgers_residual(u, x, c):
    """``u_t + u u_x - nu u_xx`` at one point ``(x, t)`` (``nu`` from ``c`` when given)."""
    value, g, h = ops.derivatives(u, x)
    nu = c["nu"] if "nu" in c else NU
    return g[1] + value * g[0] - nu * h[0, 0]


hard_conditions = AffineTransform(lambda x: -torch.sin(math.pi * x[0]), lambda x: x[1] * (1 - x[0] ** 2))
"""Burgers' ``u = -sin(pi x) + t (1 - x^2) N(x, t)``."""


def _tanh_layers(inputs: int, width: int, depth: int) -> list[torch.nn.Module]:
    layers, n = [], inputs
    for _ in range(depth):
        layers += [torch.nn.Linear(n, width), torch.nn.Tanh()]
        n = width
    return layers + [torch.nn.Linear(n, 1)]


def mlp(width: int = 20, depth: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64,
        inputs: int = 2) -> torch.nn.Module:
    """A tanh MLP ``R^inputs -> R`` with ``depth`` hidden layers of ``width``."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(*_tanh_layers(inputs, width, depth)).to(dtype)


def burgers_problem(model: torch.nn.Module, points: int = 2000, sampler: str = "sobol", seed: int = 0,
                    comm=None, jets: bool | str = "auto") -> CollocationProblem:
    """The forward problem on ``points`` collocation points (``jets``: as in
    :class:`CollocationProblem`)."""
    term = Term("pde", DOMAIN.sample(points, sampler, seed), burgers_residual)
    return CollocationProblem(model, [term], DOMAIN, transform=hard_conditions, comm=comm, jets=jets)


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


ALLEN_CAHN_SPACE = Interval(-1.0, 1.0)


def allen_cahn_initial(xs: torch.Tensor) -> torch.Tensor:
    """``u(x, 0) = x^2 cos(pi x)`` at one spatial point ``(1,)``."""
    return (xs[0] ** 2 * torch.cos(math.pi * xs[0])).reshape(())


def allen_cahn_residual(u, x, c):
    """``u_t - 1e-4 u_xx + 5 u^3 - 5 u`` at one point ``(x, t)``."""
    value, g, h = ops.derivatives(u, x)
    return g[1] - ALLEN_CAHN_EPS * h[0, 0] + 5 * value ** 3 - 5 * value


class SlabFeatures(torch.nn.Module):
    """``(x, t) -> [cos(pi k x), sin(pi k x)]_{k <= modes}, |cos(pi x / 2)|, 2 (t - t0) / (t1 - t0) - 1``:
    periodic in ``x`` with period 2, time scaled to ``[-1, 1]`` on the slab. The feature
    ``|cos(pi x / 2)|`` (with ``kink``) has the initial condition's kink at ``x = +-1``
    (``x^2 cos(pi x)`` is periodic, its slope is not: ``-2`` at ``x = 1``, ``2`` at ``x = -1``),
    so that the network can let the kink decay as the equation does."""

    def __init__(self, modes: int, t0: float, t1: float, kink: bool = True):
        super().__init__()
        self.periodic, self.kink = PeriodicFeatures(2.0, modes), kink
        # buffers that follow .to(dtype), not saved (the slab's times are the marching's)
        self.register_buffer("t0", torch.tensor(float(t0)), persistent=False)
        self.register_buffer("t1", torch.tensor(float(t1)), persistent=False)

    @property
    def size(self) -> int:
        return 2 * self.periodic.modes + 1 + int(self.kink)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        tau = 2 * (p[..., 1:] - self.t0) / (self.t1 - self.t0) - 1
        kink = [torch.cos(0.5 * math.pi * p[..., :1]).abs()] if self.kink else []
        return torch.cat([self.periodic(p[..., :1]), *kink, tau], dim=-1)


def allen_cahn_network(t0: float, t1: float, width: int = 16, depth: int = 2, modes: int = 2, seed: int = 0,
                       kink: bool = True, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A slab's network: :class:`SlabFeatures` then a tanh MLP (its last layer scaled by 0.1,
    so that training starts near the slab's initial condition)."""
    torch.manual_seed(seed)
    features = SlabFeatures(modes, t0, t1, kink)
    net = torch.nn.Sequential(features, *_tanh_layers(features.size, width, depth)).to(dtype)
    with torch.no_grad():
        net[-1].weight.mul_(0.1)
        net[-1].bias.zero_()
    return net


def allen_cahn_marching(slabs: int = 10, times: Sequence[float] | None = None) -> TimeMarching:
    """Time marching from ``x^2 cos(pi x)`` over ``slabs`` equal slabs of ``[0, 1]``, or over
    the slabs between ``times`` (from 0 to 1)."""
    if times is not None and (float(times[0]) != 0.0 or float(times[-1]) != 1.0):
        raise ConfigurationError(f"the Allen-Cahn slab times must run from 0 to 1, got {list(times)}")
    return TimeMarching(allen_cahn_initial, np.linspace(0.0, 1.0, slabs + 1).tolist() if times is None else times)


def allen_cahn_problem(model: torch.nn.Module, marching: TimeMarching, points: int = 1024,
                       sampler: str = "sobol", seed: int = 0, comm=None,
                       jets: bool | str = "auto") -> CollocationProblem:
    """The next slab of ``marching`` on ``points`` collocation points, ``model`` its network."""
    domain = marching.domain(ALLEN_CAHN_SPACE)
    term = Term("pde", domain.sample(points, sampler, seed), allen_cahn_residual)
    return CollocationProblem(model, [term], domain, transform=marching.transform(), comm=comm, jets=jets)


@lru_cache(maxsize=1)
def allen_cahn_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (512,)``, ``t (201,)`` and the reference ``u (201, 512)``."""
    x, t = np.linspace(-1, 1, 512), np.linspace(0, 1, 201)
    return x, t, allen_cahn_reference(x, t)


def allen_cahn_predict(field: Callable[[torch.Tensor], torch.Tensor], t_max: float = 1.0) -> np.ndarray:
    """``field`` (``(N, 2)`` points -> ``(N,)``) on the scoring grid's times ``<= t_max``."""
    x, t, _ = allen_cahn_grid()
    t = np.minimum(t[t <= t_max + 1e-12], t_max)  # a grid time above t_max by rounding: at t_max
    X, T = np.meshgrid(x, t)
    pts = torch.as_tensor(np.stack([X.ravel(), T.ravel()], axis=1))
    return field(pts).reshape(t.size, x.size).double().numpy()


def allen_cahn_score(field: Callable[[torch.Tensor], torch.Tensor], t_max: float = 1.0) -> float:
    """Relative L2 error of ``field`` against the reference on the scoring grid (times ``<= t_max``)."""
    u = allen_cahn_predict(field, t_max)
    ref = allen_cahn_grid()[2][:u.shape[0]]
    return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))


SQUARE = Rectangle(0.0, 1.0, 0.0, 1.0)


def poisson_residual(u, x, c):
    """``-lap u - 2 pi^2 sin(pi x) sin(pi y)`` at one point."""
    return -ops.laplacian(u)(x) - 2 * math.pi ** 2 * torch.sin(math.pi * x[0]) * torch.sin(math.pi * x[1])


zero_on_square = AffineTransform(scale=lambda x: x[0] * (1 - x[0]) * x[1] * (1 - x[1]))
"""Poisson's ``u = x (1 - x) y (1 - y) N(x, y)``."""


def poisson_problem(model: torch.nn.Module, points: int = 1024, sampler: str = "sobol", seed: int = 0,
                    comm=None, jets: bool | str = "auto") -> CollocationProblem:
    """The 2-D Poisson problem on ``points`` interior collocation points."""
    term = Term("pde", SQUARE.sample(points, sampler, seed), poisson_residual)
    return CollocationProblem(model, [term], SQUARE, transform=zero_on_square, comm=comm, jets=jets)


def poisson_score(problem: CollocationProblem, n: int = 101) -> float:
    """Relative L2 error against ``sin(pi x) sin(pi y)`` on an ``n x n`` grid."""
    pts = SQUARE.sample(n * n, "grid").to(problem.dtype)
    exact = torch.sin(math.pi * pts[:, 0]) * torch.sin(math.pi * pts[:, 1])
    u = problem(pts).reshape(-1)
    return float((u - exact).norm() / exact.norm())
