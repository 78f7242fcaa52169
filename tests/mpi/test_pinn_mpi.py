"""Under mpiexec -n 2: collocation points split over the ranks give the iterates of one rank."""
import pytest
import torch
from mpi4py import MPI

from pnode.pinn import train
from pinn_cases import flat, poisson1d

WORLD = MPI.COMM_WORLD
TAO_TIGHT = {"tao_gatol": 0.0, "tao_grtol": 0.0, "tao_gttol": 0.0}


def run(comm, schedule):
    problem = poisson1d(comm, n=33, width=8)  # 33 points: the ranks hold 17 and 16
    result = train(problem, schedule, progress=False)
    return flat(problem), torch.tensor(result.history["loss"]), problem.local[0][0].shape[0]


@pytest.mark.parametrize("schedule", [
    [("adam", 5, {"lr": 1e-2}), ("lm", 8)],
    [("lm", 6, {"linear_solver": "cg", "options": {"ksp_rtol": 1e-14, "ksp_max_it": 400}})],
    [("lm", 6, {"linear_solver": "cg", "nystrom_rank": 12, "nystrom_every": 2,
                "options": {"ksp_rtol": 1e-14, "ksp_max_it": 40}})],
    [("lbfgs", 5), ("tao:lmvm", 6, {"lmvm": "bfgs", **TAO_TIGHT})],
], ids=["adam-lm-cholesky", "lm-cg", "lm-cg-nystrom", "lbfgs-tao-lmvm"])
def test_two_ranks_give_the_iterates_of_one(schedule):
    theta, losses, local = run(WORLD, schedule)
    ref_theta, ref_losses, whole = run(MPI.COMM_SELF, schedule)
    assert WORLD.allreduce(local) == whole == 33 and local < whole
    assert len(losses) == len(ref_losses) > 5
    assert torch.allclose(losses, ref_losses, rtol=1e-10, atol=0)
    assert (theta - ref_theta).abs().max() <= 1e-10 * max(1.0, float(ref_theta.abs().max()))
    assert WORLD.allreduce(float(theta.sum()), op=MPI.MAX) == WORLD.allreduce(float(theta.sum()), op=MPI.MIN)
