"""Neural-Galerkin cases shared by the serial and MPI tests: the advection example's
problem, and a loss on the final-time field."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import galerkin_advection as ga  # noqa: E402

SMALL = dataclasses.replace(ga.Config(), width=4, samples=24, T=0.1, rk4_steps=8, regularization=1e-6)
EVAL = torch.linspace(0, 1, 41, dtype=torch.float64)[:-1]


def final_loss(problem, theta0: torch.Tensor, cfg, solve, method: str = "rk4", options=None) -> torch.Tensor:
    """``mean (U(x; theta(T)) - exact(x, T))^2`` with ``theta(T)`` from ``solve`` (odeint or
    odeint_adjoint) by ``method`` with the config's fixed steps."""
    t = torch.tensor([0.0, cfg.T], dtype=torch.float64)
    theta = solve(problem, theta0, t, method=method, step_size=cfg.T / cfg.rk4_steps, options=options)[-1]
    return ((problem.solution(theta, EVAL) - ga.exact(EVAL, cfg.T, 0.9)) ** 2).mean()
