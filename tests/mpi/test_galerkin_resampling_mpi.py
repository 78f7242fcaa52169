"""Under mpiexec -n 2: a resampled neural-Galerkin march with each segment's points split
over the ranks gives the trajectory and the gradients of one rank; a sampler that gives
the ranks different points is refused on every rank."""
import pytest
import torch
from mpi4py import MPI

import pnode
from galerkin_cases import EVAL, SMALL, ga
from pnode.pinn import march_resampled, seeded_sampler
from pnode.pinn.sampling import sample_box

WORLD = MPI.COMM_WORLD
T = torch.linspace(0, SMALL.T, 5, dtype=torch.float64)
KW = {"method": "rk4", "step_size": SMALL.T / SMALL.rk4_steps}


def run(comm):
    problem = ga.build(SMALL, comm)
    theta0 = problem.flat().requires_grad_()
    march = march_resampled(problem, theta0, T, seeded_sampler([0.0], [1.0], SMALL.samples, seed=2), **KW)
    loss = ((problem.solution(march.theta[-1], EVAL) - ga.exact(EVAL, SMALL.T, 0.9)) ** 2).mean()
    loss.backward()
    local = [p.points.shape[0] for p in march.problems]
    return local, march.theta.detach(), problem.rhs.speed.grad.clone(), theta0.grad.clone()


def test_split_resampled_march_equals_one_rank():
    local, path, dspeed, dtheta = run(WORLD)
    _, ref_path, ref_dspeed, ref_dtheta = run(MPI.COMM_SELF)
    assert local == [SMALL.samples // WORLD.Get_size()] * 4
    # as in test_galerkin_mpi: the partial sums add in another order (~1e-11 measured)
    assert float((path - ref_path).abs().max()) <= 1e-9 * float(ref_path.abs().max())
    assert abs(float(dspeed - ref_dspeed)) <= 1e-9 * abs(float(ref_dspeed))
    assert float((dtheta - ref_dtheta).norm()) <= 1e-9 * float(ref_dtheta.norm())


def test_rank_dependent_points_are_refused_on_every_rank():
    problem = ga.build(SMALL, WORLD)
    rank = WORLD.Get_rank()

    def unseeded(k):
        return sample_box([0.0], [1.0], SMALL.samples, "uniform", seed=100 * rank + k)

    with pytest.raises(pnode.ConfigurationError, match="different points for segment 0"):
        march_resampled(problem, problem.flat(), T, unseeded, **KW)
