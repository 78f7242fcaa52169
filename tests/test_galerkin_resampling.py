"""Neural-Galerkin marching with new sample points per segment: as accurate as fixed
points on the advection case, reproducible by seed, and differentiable (the gradient of
the piecewise scheme against central differences)."""
import dataclasses

import pytest
import torch

import pnode
from galerkin_cases import EVAL, SMALL, ga
from helpers import central_difference
from pnode.pinn import march_resampled, seeded_sampler

DT = torch.float64
# one tanh unit: the bump is exactly W2 tanh(W1 [cos 2 pi x, sin 2 pi x] + b1) + b2 with
# W1 = (-kappa, 0), b1 = -kappa / 2, W2 = b2 = 1/2, and so is each of its shifts
QUICK = dataclasses.replace(ga.Config(), width=1, **ga.QUICK)


@pytest.fixture(scope="module")
def fitted():
    problem = ga.build(QUICK)
    theta0 = torch.tensor([-ga.KAPPA, 0.0, -ga.KAPPA / 2, 0.5, 0.5], dtype=DT)
    assert float((problem.solution(theta0, EVAL) - ga.bump(EVAL)).abs().max()) < 1e-15
    return problem, theta0


def _final_error(problem, theta: torch.Tensor, cfg) -> float:
    ref = ga.exact(EVAL, cfg.T, cfg.speed)
    return float((problem.solution(theta, EVAL) - ref).norm() / ref.norm())


def test_resampled_march_is_as_accurate_as_fixed_points_and_reproducible(fitted):
    problem, theta0 = fitted
    t = torch.linspace(0, QUICK.T, 6, dtype=DT)
    kw = {"method": "rk4", "step_size": QUICK.T / QUICK.rk4_steps}
    with torch.no_grad():
        fixed = pnode.odeint(problem, theta0, t, **kw)
        sampler = seeded_sampler([0.0], [1.0], QUICK.samples, "sobol", seed=3)
        moved = march_resampled(problem, theta0, t, sampler, every=1, **kw)
        again = march_resampled(problem, theta0, t, sampler, every=1, **kw)
        other = march_resampled(problem, theta0, t, seeded_sampler([0.0], [1.0], QUICK.samples, seed=11),
                                every=2, **kw)
    assert len(moved.problems) == 5 and len(other.problems) == 3 and moved.steps == QUICK.rk4_steps
    # five different point sets
    sets = [p.points for p in moved.problems]
    assert all(not torch.equal(a, b) for i, a in enumerate(sets) for b in sets[i + 1:])
    assert moved.theta.shape == fixed.shape and torch.equal(moved.theta[0], theta0)
    fixed_error, moved_error = _final_error(problem, fixed[-1], QUICK), _final_error(problem, moved.theta[-1], QUICK)
    assert fixed_error < 1e-5 and moved_error < 1e-5 and moved_error < 1.1 * fixed_error, (fixed_error, moved_error)
    assert _final_error(problem, other.theta[-1], QUICK) < 1e-5
    # the same seed gives the same march to the last bit; another seed another one
    assert torch.equal(moved.theta, again.theta)
    assert not torch.equal(moved.theta[-1], other.theta[-1])
    assert problem.points.shape[0] == QUICK.samples and torch.equal(problem.points[:, 0], torch.arange(64, dtype=DT) / 64)


def test_gradient_through_a_resampled_march_matches_central_differences():
    # each segment is one odeint_adjoint solve exact for its points; autograd chains them:
    # the gradient of the piecewise scheme, its points held fixed
    problem = ga.build(SMALL)
    theta0 = problem.flat().requires_grad_()
    t = torch.linspace(0, SMALL.T, 5, dtype=DT)
    sampler = seeded_sampler([0.0], [1.0], SMALL.samples, "uniform", seed=5)
    kw = {"method": "rk4", "step_size": SMALL.T / SMALL.rk4_steps}

    def loss():
        theta = march_resampled(problem, theta0, t, sampler, **kw).theta[-1]
        return ((problem.solution(theta, EVAL) - ga.exact(EVAL, SMALL.T, 0.9)) ** 2).mean()

    loss().backward()
    speed = problem.rhs.speed
    assert speed.grad is not None and theta0.grad is not None

    def plain():
        with torch.no_grad():
            return loss()

    checks = [(speed, (), speed.grad)] + [(theta0, (i,), theta0.grad) for i in (0, 7, problem.numel - 1)]
    for tensor, index, grad in checks:
        fd = central_difference(plain, tensor.data, index, 1e-4)
        assert abs(fd - float(grad[index])) <= 1e-6 * abs(fd), (index, fd, float(grad[index]))


def test_bad_segments_are_named():
    problem = ga.build(SMALL)
    t = torch.linspace(0, SMALL.T, 3, dtype=DT)
    sampler = seeded_sampler([0.0], [1.0], 8)
    with pytest.raises(pnode.ConfigurationError, match="every must be at least 1"):
        march_resampled(problem, problem.flat(), t, sampler, every=0)
    with pytest.raises(pnode.ConfigurationError, match="1-D grid of at least two times"):
        march_resampled(problem, problem.flat(), t[:1], sampler)
    with pytest.raises(pnode.ConfigurationError, match="points must be"):
        problem.with_points(torch.empty(0, 1, dtype=DT))
