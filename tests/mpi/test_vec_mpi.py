"""Under mpiexec -n 2: a distributed Vec made from per-rank tensors, zero copy."""
import torch
from mpi4py import MPI

import pnode
from pnode.vec import as_tensor, as_vec


def test_distributed_vec_from_rank_tensors_reduces_globally():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local = torch.arange(3 + rank, dtype=torch.float64) + 10.0 * rank
    v = as_vec(local, comm=comm)
    assert v.getLocalSize() == local.numel()
    assert v.getSize() == sum(3 + r for r in range(size))
    expected = comm.allreduce(float(local.sum()), op=MPI.SUM)
    assert abs(v.sum() - expected) < 1e-12
    v.scale(2.0)  # a PETSc operation on the global Vec changes each rank's tensor
    assert torch.equal(local, 2.0 * (torch.arange(3 + rank, dtype=torch.float64) + 10.0 * rank))
    assert torch.equal(as_tensor(v), local)


def test_petsc_and_mpi4py_comms_are_interchangeable():
    comm = MPI.COMM_WORLD
    v = as_vec(torch.ones(2, dtype=torch.float64), comm=pnode.vec.PETSc().COMM_WORLD)
    assert v.getSize() == 2 * comm.Get_size()
    assert pnode.comm.as_mpi_comm(pnode.vec.PETSc().COMM_WORLD).Get_size() == comm.Get_size()
