"""Under mpiexec -n 2: a distributed DAE's initial-condition check decides on every rank."""
import pytest
import torch
from mpi4py import MPI

import pnode
from pnode.distributed import DMDAProblem, create_dmda

WORLD = MPI.COMM_WORLD


def _solve(bump: float) -> torch.Tensor:
    """``M u' = u_left - u`` on a periodic DMDA of 8 points; M is 0 (an algebraic equation)
    at the first point each rank owns; ``u0`` is 1 except ``1 + bump`` at global point 0."""
    da = create_dmda([8], comm=WORLD)
    prob = DMDAProblem(da, lambda t, patch: patch[:-2] - patch[1:-1])
    try:
        u0 = torch.ones(8, dtype=torch.float64)
        u0[0] += bump
        mass = torch.ones(prob.owned_shape, dtype=torch.float64)
        mass[0] = 0.0
        return pnode.odeint(prob, prob.scatter(u0), torch.tensor([0.0, 0.2], dtype=torch.float64),
                            method="beuler", step_size=0.1, mass=mass)
    finally:
        prob.destroy()
        da.destroy()


def test_inconsistent_part_on_one_rank_raises_on_all():
    with pytest.raises(pnode.ConfigurationError, match="not consistent"):
        _solve(1.0)  # only rank 0's algebraic equation is violated
    out = _solve(0.0)
    assert torch.allclose(out, torch.ones_like(out))  # the constant state is an equilibrium
