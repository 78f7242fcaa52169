"""Neural-Galerkin marching in segments, with new sample points for each segment.

:func:`march_resampled` cuts the output times into segments of ``every`` intervals and
marches segment ``k`` on ``problem.with_points(sampler(k))``: each segment is its own
discrete problem (its sample points are constants of its scheme), started from the
previous segment's final ``theta``. The samplers of :func:`seeded_sampler` give segment
``k`` the set drawn with seed ``seed + k``, so a march is reproducible and every rank
draws the same set (each keeps its share, as :class:`GalerkinProblem` splits points).

Gradients: when ``theta0`` or ``rhs``'s coefficients require grad, each segment is one
differentiable pnode solve (TSAdjoint, exact for its own points) and autograd chains the
segments, so the gradient is that of the piecewise scheme with the points held fixed; a
choice of points that depends on ``theta`` (residual-based resampling) is not
differentiated through (the draw is discrete; its points enter as constants).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from mpi4py import MPI

from pnode.odeint import NeuralODE
from pnode.errors import ConfigurationError
from pnode.pinn.galerkin import GalerkinProblem
from pnode.pinn.sampling import sample_box

Sampler = Callable[[int], torch.Tensor]


def seeded_sampler(lower: Sequence[float], upper: Sequence[float], n: int, method: str = "sobol",
                   seed: int = 0) -> Sampler:
    """``k -> sample_box(lower, upper, n, method, seed + k)``: segment ``k``'s points, the
    same on every rank and in every run with the same ``seed``."""
    return lambda k: sample_box(lower, upper, n, method, seed=seed + int(k))


@dataclass
class ResampledMarch:
    """``theta`` at the output times ``(len(t), P)``, each segment's problem (its sample
    points: ``problems[k].points`` is this rank's share) and the steps taken."""

    theta: torch.Tensor
    problems: list[GalerkinProblem]
    steps: int
    rejected: int


def _check_same_on_every_rank(points: torch.Tensor, mpi, segment: int) -> None:
    """A sampler must give every rank the same set (each rank keeps its share of it)."""
    if mpi.Get_size() == 1:
        return
    weights = torch.arange(1, points.numel() + 1, dtype=torch.float64)
    key = (float(points.numel()), float((points.reshape(-1).double() * weights).sum()))
    if mpi.allreduce(key, op=MPI.MIN) != mpi.allreduce(key, op=MPI.MAX):
        raise ConfigurationError(
            f"the sampler gave the ranks different points for segment {segment}: seed it (every rank "
            "must draw the same set; each keeps its share)")


def march_resampled(problem: GalerkinProblem, theta0: torch.Tensor, t: torch.Tensor, sampler: Sampler, *,
                    every: int = 1, method: str = "dopri5", **solver) -> ResampledMarch:
    """March ``theta`` from ``theta0`` over the output times ``t`` in segments of ``every``
    output intervals, segment ``k`` on the sample points ``sampler(k)`` (``(N, d)``, the
    same on every rank). ``method`` and ``solver`` (``step_size``, ``rtol``, ``atol``,
    ``options``, ``checkpoint`` ...) are those of :class:`pnode.NeuralODE`; each segment
    starts a new TS (an adaptive method chooses its first step afresh). Differentiable
    in ``theta0`` and ``rhs``'s coefficients (the gradient of the piecewise scheme)."""
    if every < 1:
        raise ConfigurationError(f"every must be at least 1 output interval, got {every!r}")
    if t.ndim != 1 or t.numel() < 2:
        raise ConfigurationError(f"t must be a 1-D grid of at least two times, got shape {tuple(t.shape)}")
    last = t.numel() - 1
    pieces, problems, steps, rejected = [theta0.unsqueeze(0)], [], 0, 0
    theta = theta0
    for k, begin in enumerate(range(0, last, every)):
        points = sampler(k)
        _check_same_on_every_rank(points, problem.mpi, k)
        segment = problem.with_points(points)
        node = NeuralODE(segment, method=method, **solver)
        path = node(theta, t[begin:min(begin + every, last) + 1])
        pieces.append(path[1:])
        theta = path[-1]
        problems.append(segment)
        steps += int(node.stats.get("steps", 0))
        rejected += int(node.stats.get("rejected", 0))
    return ResampledMarch(torch.cat(pieces), problems, steps, rejected)
