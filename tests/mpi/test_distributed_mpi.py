"""Under mpiexec -n 2 (and -n 1): distributed results equal the same problem on COMM_SELF."""
import pytest
import torch
from mpi4py import MPI

import pnode
from distributed_cases import IMPLICIT_CASES, data_parallel_case, dmda_case, grid, implicit_case, initial_field, pad
from helpers import rel_error
from pnode.distributed import DMDAProblem, create_dmda, is_root, shard

WORLD = MPI.COMM_WORLD


def test_shards_partition_the_batch():
    for n in (0, 1, 5, 8):
        parts = WORLD.allgather(shard(n, WORLD))
        assert [i for s in parts for i in range(n)[s]] == list(range(n))
    assert is_root(WORLD) == (WORLD.Get_rank() == 0)


def test_data_parallel_loss_and_gradients_equal_one_rank():
    loss, grads = data_parallel_case(WORLD)
    ref_loss, ref_grads = data_parallel_case(MPI.COMM_SELF)
    assert rel_error(loss, ref_loss) < 1e-12
    assert max(rel_error(g, r) for g, r in zip(grads, ref_grads)) < 1e-12


@pytest.mark.parametrize("dim", [1, 2])  # 1-D periodic, 2-D ghosted (zero outside)
def test_dmda_gradients_equal_one_rank(dim):
    loss, gu0, gp = dmda_case(dim, WORLD)
    ref_loss, ref_gu0, ref_gp = dmda_case(dim, MPI.COMM_SELF)
    assert rel_error(loss, ref_loss) < 1e-12
    assert rel_error(gu0, ref_gu0) < 1e-10
    assert max(rel_error(g, r) for g, r in zip(gp, ref_gp)) < 1e-10


def test_distributed_parameter_gradient_matches_central_differences():
    _, _, gp = dmda_case(2, WORLD)
    eps, k = 1e-6, 4  # one weight of the 3x3 convolution
    up, _, _ = dmda_case(2, WORLD, perturb=(k, eps), grad=False)
    down, _, _ = dmda_case(2, WORLD, perturb=(k, -eps), grad=False)
    fd = (up - down) / (2 * eps)
    assert abs(fd - float(gp[0].view(-1)[k])) < 1e-7 * max(1.0, abs(fd))
    assert torch.isfinite(gp[0]).all()


@pytest.mark.parametrize("name", list(IMPLICIT_CASES))  # Crank-Nicolson; IMEX 1-D periodic, 2-D ghosted
def test_implicit_dmda_solution_and_gradients_equal_one_rank(name):
    loss, gu0, gp, stats = implicit_case(name, WORLD)
    ref_loss, ref_gu0, ref_gp, ref_stats = implicit_case(name, MPI.COMM_SELF)
    assert stats["jacobian"] == ref_stats["jacobian"] == "matrix-free"
    assert stats["newton_iterations"] == ref_stats["newton_iterations"]  # same Jacobian-vector products
    assert rel_error(loss, ref_loss) < 1e-12
    assert rel_error(gu0, ref_gu0) < 1e-10
    assert max(rel_error(g, r) for g, r in zip(gp, ref_gp)) < 1e-10


def test_distributed_implicit_diffusivity_gradient_matches_central_differences():
    _, _, gp, _ = implicit_case("imex-1d", WORLD)
    eps = 1e-6  # the implicit part's log-diffusivity: the last parameter
    up = implicit_case("imex-1d", WORLD, perturb=(0, eps), grad=False)[0]
    down = implicit_case("imex-1d", WORLD, perturb=(0, -eps), grad=False)[0]
    fd = (up - down) / (2 * eps)
    assert abs(fd - float(gp[-1])) < 1e-7 * max(1.0, abs(fd))


# adaptive: every rank places the same budget checkpoints (8 dopri5 steps, 3 states), as
# the accepted steps come from global error norms
@pytest.mark.parametrize("checkpoint,adaptive", [("solution", False), (pnode.Checkpoint(budget=3), False),
                                                 (pnode.Checkpoint(budget=3), True)])
def test_dmda_checkpoint_policies_equal_one_rank_store_all(checkpoint, adaptive):
    loss, gu0, gp = dmda_case(1, WORLD, checkpoint=checkpoint, adaptive=adaptive)
    ref_loss, ref_gu0, ref_gp = dmda_case(1, MPI.COMM_SELF, checkpoint="all", adaptive=adaptive)
    assert rel_error(loss, ref_loss) < 1e-12
    assert rel_error(gu0, ref_gu0) < 1e-10
    assert max(rel_error(g, r) for g, r in zip(gp, ref_gp)) < 1e-10


@pytest.mark.parametrize("dim", [1, 2])  # 1-D periodic, 2-D ghosted (zero outside)
def test_dmda_patches_hold_the_right_ghosts_and_gather_round_trips(dim):
    sizes = grid(dim)
    da = create_dmda(sizes, boundary="periodic" if dim == 1 else "ghosted", comm=WORLD)
    patches = []
    prob = DMDAProblem(da, lambda t, patch: patches.append(patch) or patch[(slice(1, -1),) * dim])
    u = initial_field(sizes)
    owned = prob.scatter(u)
    assert torch.equal(prob.gather(owned), u)  # every point comes back from its owner
    prob(torch.zeros(()), owned)
    starts, counts = da.getCorners()
    window = tuple(slice(s, s + n + 2) for s, n in zip(reversed(starts), reversed(counts)))
    assert torch.equal(patches[0], pad(u, dim == 1)[window])  # owned values and ghosts
    assert WORLD.allreduce(owned.numel(), op=MPI.SUM) == u.numel()  # a partition of the grid
    prob.destroy()
    da.destroy()
