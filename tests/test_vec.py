"""The tensor <-> Vec bridge: zero copy both ways, shapes, build and dtype checks."""
import pytest
import torch

import pnode
from pnode.vec import PETSc, as_tensor, as_vec, check_tensor, petsc_dtype


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4, 5), (1,)])
def test_round_trip_shares_memory(shape):
    x = torch.randn(shape, dtype=torch.float64)
    v = as_vec(x)
    assert v.getSize() == x.numel()
    back = as_tensor(v, shape)
    assert back.shape == x.shape and torch.equal(back, x)
    v.setValue(0, 123.0)
    v.assemble()
    assert x.reshape(-1)[0] == 123.0          # PETSc write seen by torch
    x.reshape(-1)[-1] = -5.0
    assert v.getValue(x.numel() - 1) == -5.0  # torch write seen by PETSc
    assert back.data_ptr() == x.data_ptr()


def test_vec_from_petsc_viewed_as_tensor():
    v = PETSc().Vec().createSeq(6)
    v.set(2.0)
    t = as_tensor(v, (2, 3))
    t[1, 2] = 9.0
    assert v.getValue(5) == 9.0 and v.sum() == 2.0 * 5 + 9.0


def test_petsc_dtype_is_double_here():
    assert petsc_dtype() == torch.float64


def test_float32_with_double_petsc_is_a_build_mismatch():
    with pytest.raises(pnode.BuildMismatchError, match="float32.*double precision"):
        as_vec(torch.zeros(3, dtype=torch.float32))


def test_integer_tensor_rejected():
    with pytest.raises(pnode.BuildMismatchError, match="int64"):
        check_tensor(torch.zeros(3, dtype=torch.int64))


def test_non_contiguous_rejected_with_hint():
    x = torch.zeros(4, 4, dtype=torch.float64).t()
    with pytest.raises(pnode.ConfigurationError, match="contiguous"):
        as_vec(x)


def test_unsupported_device_rejected():
    with pytest.raises(pnode.BuildMismatchError, match="meta"):
        check_tensor(torch.zeros(3, dtype=torch.float64, device="meta"))


def test_complex_petsc_reported(monkeypatch):
    import numpy as np

    monkeypatch.setattr(PETSc(), "ScalarType", np.complex128, raising=False)
    with pytest.raises(pnode.BuildMismatchError, match="complex"):
        petsc_dtype()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensor_shares_memory_or_reports_missing_cuda():
    x = torch.arange(5, dtype=torch.float64, device="cuda")
    if not pnode.vec.petsc_has_cuda():
        with pytest.raises(pnode.BuildMismatchError, match="no CUDA"):
            as_vec(x)
        return
    v = as_vec(x)
    v.scale(2.0)
    torch.cuda.synchronize()
    assert torch.equal(x.cpu(), 2.0 * torch.arange(5, dtype=torch.float64))
    assert as_tensor(v).device.type == "cuda"


def test_comm_accepts_mpi4py_and_petsc():
    from mpi4py import MPI

    for comm in (None, MPI.COMM_SELF, PETSc().COMM_SELF):
        v = as_vec(torch.zeros(2, dtype=torch.float64), comm=comm)
        assert v.getComm().getSize() == 1
    with pytest.raises(pnode.ConfigurationError, match="communicator"):
        as_vec(torch.zeros(2, dtype=torch.float64), comm="world")


def test_check_build_reports_zero_copy():
    info = pnode.check_build(verbose=False)
    assert info["zero_copy"] and info["petsc"].startswith("3.")
