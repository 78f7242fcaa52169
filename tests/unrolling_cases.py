"""Problems shared by the unrolling tests (serial and MPI): small sparse-recovery data,
PETSc AIJ copies of dense matrices split by rows, and and the optimality conditions of the LASSO."""
from __future__ import annotations

import math

import torch

from pnode.startup import PETSc


def sparse_problem(m: int = 20, n: int = 40, batch: int = 3, p: float = 0.15, seed: int = 0):
    """``(A, x, y)``: a Gaussian ``A`` with unit columns, sparse ``x``, ``y = A x``."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)
    A = A / A.norm(dim=0, keepdim=True)
    x = torch.randn(batch, n, generator=g, dtype=torch.float64) * (torch.rand(batch, n, generator=g) < p)
    return A, x, x @ A.T


def aij(dense: torch.Tensor, comm=None):
    """An AIJ Mat with ``dense``'s entries, rows and columns split PETSc's default way."""
    P = PETSc()
    comm = P.COMM_SELF if comm is None else comm
    m, n = dense.shape
    mat = P.Mat().createAIJ(((P.DECIDE, m), (P.DECIDE, n)), comm=comm)
    mat.setUp()
    start, end = mat.getOwnershipRange()
    for i in range(start, end):
        mat.setValues(i, range(n), dense[i].numpy())
    mat.assemble()
    return mat


def local_rows(mat, full: torch.Tensor) -> torch.Tensor:
    """This rank's part (in the Mat's row layout) of the last dimension of ``full``."""
    start, end = mat.getOwnershipRange()
    return full[..., start:end].contiguous()


def local_cols(mat, full: torch.Tensor) -> torch.Tensor:
    """This rank's part (in the Mat's column layout) of the last dimension of ``full``."""
    start, end = mat.getOwnershipRangeColumn()
    return full[..., start:end].contiguous()


def lasso_kkt_violation(A: torch.Tensor, y: torch.Tensor, x: torch.Tensor, lam: float) -> float:
    """The largest violation of the optimality conditions of ``min 0.5||Ax-y||^2 + lam||x||_1``:
    ``A^T(y - Ax) = lam sign(x)`` on the support, ``|A^T(y - Ax)| <= lam`` off it."""
    g = (y - x @ A.T) @ A
    on = x.abs() > 1e-9
    v_on = (g - lam * torch.sign(x)).abs()[on]
    v_off = (g.abs() - lam).clamp_min(0)[~on]
    return float(torch.cat([v_on, v_off]).max())

