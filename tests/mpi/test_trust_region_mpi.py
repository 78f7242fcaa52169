"""Under mpiexec -n 2: the L-SR1 trust region on parameters split over the ranks gives the
iterates of one rank, and its quasi-Newton pairs are split too."""
import torch
from mpi4py import MPI

from pnode.solvers import TrustRegion, TrustRegionSettings
from solver_cases import flat_params, sharded_regression

WORLD = MPI.COMM_WORLD


def run(comm, steps=15):
    net, closure, _ = sharded_regression(comm)
    opt = TrustRegion(net, comm=comm, memory=5, settings=TrustRegionSettings(delta0=0.1))
    for _ in range(steps):
        opt.step(closure)
    points = [x.numel() for x, _ in opt.sub.points]
    out = flat_params(net), torch.tensor(opt.history["loss"]), torch.tensor(opt.history["radius"]), points
    opt.destroy()
    return out


def test_iterates_on_two_ranks_equal_one_rank():
    theta, losses, radii, local = run(WORLD)
    ref_theta, ref_losses, ref_radii, full = run(MPI.COMM_SELF)
    assert torch.allclose(losses, ref_losses, rtol=1e-12, atol=0)
    assert torch.equal(radii, ref_radii)
    assert (theta - ref_theta).abs().max() <= 1e-12 * float(ref_theta.abs().max())
    # each rank stores only its block of every recorded point
    assert WORLD.allreduce(local[0]) == full[0] and len(local) == len(full) == 6
