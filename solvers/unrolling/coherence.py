"""ALISTA's analytic weight matrix, by PETSc's Krylov solvers.

``analytic_weight(A)`` minimises the (Frobenius) generalised mutual coherence
``||W^T A||_F^2`` subject to ``w_i^T a_i = 1`` for every column ``i`` (Liu et al., ALISTA,
the relaxation of ``max_{i != j} |w_i^T a_j|`` they solve). The problem separates by
columns; each has the closed form ``w_i = G^{-1} a_i / (a_i^T G^{-1} a_i)`` with
``G = A A^T``, so the matrix costs one solve with ``G`` per column: conjugate gradients
on the matrix-free ``G x = A (A^T x)`` (a PETSc shell on the operator's products), KSP
options under ``options_prefix``. ``W`` has ``A``'s layout: a torch matrix for a tensor
``A``, a dense PETSc Mat with ``A``'s row and column split for a Mat.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from pnode.comm import allreduce_sum_
from pnode.errors import ConfigurationError, ConvergenceError
from pnode.matop import TensorProducts, shell_mat
from pnode.options import ScopedOptions
from pnode.startup import PETSc
from pnode.vec import host_array, lent

from .operators import Operator, as_operator

KSP_DEFAULTS = {"ksp_type": "cg", "pc_type": "none", "ksp_rtol": 1e-12, "ksp_atol": 1e-50,
                "ksp_max_it": 1000}


def columns(op: Operator) -> torch.Tensor:
    """Every column ``a_i`` of ``A`` as a row of an ``(n_global, m_local)`` tensor (this
    rank's rows of each column), by one block product with the identity's local part."""
    n_start = _column_start(op)
    eye = torch.zeros(op.shape[1], op.n_local, dtype=op.dtype)
    eye[torch.arange(n_start, n_start + op.n_local), torch.arange(op.n_local)] = 1.0
    with torch.no_grad():
        return op.forward(eye)


def _column_start(op: Operator) -> int:
    if op.comm is None:
        return 0
    return int(op.comm.exscan(op.n_local) or 0)


def analytic_weight(A, options: Mapping[str, Any] | None = None, options_prefix: str | None = "alista_"):
    """ALISTA's ``W`` for ``A`` (a torch matrix, a petsc4py Mat or an Operator); see the
    module docstring. A solve that does not converge raises :class:`ConvergenceError`."""
    op = as_operator(A)
    if not op.has_transpose:
        raise ConfigurationError("the analytic weight needs A^T (G = A A^T); the operator has no transpose")
    P = PETSc()
    comm = op.comm if op.comm is not None else P.COMM_SELF
    gram = shell_mat(TensorProducts(lambda v: op.forward(op.adjoint(v.view(1, -1))).view(-1)),
                     (op.m_local, op.shape[0]), (op.m_local, op.shape[0]), comm=comm)
    ksp = P.KSP().create(comm=gram.getComm())
    cols = columns(op)
    sol = torch.zeros_like(cols)
    try:
        ksp.setOperators(gram)
        ScopedOptions(options_prefix, options).with_defaults(KSP_DEFAULTS).apply(ksp)
        b, x = gram.createVecs()
        for i in range(cols.shape[0]):
            with lent(b, cols[i]) as B, lent(x, sol[i]) as X:
                ksp.solve(B, X)
            reason = int(ksp.getConvergedReason())
            if reason < 0:
                raise ConvergenceError(
                    f"the solve with G = A A^T for column {i} of ALISTA's weight did not converge "
                    f"after {ksp.getIterationNumber()} iterations (residual {ksp.getResidualNorm():.3e}); "
                    "A A^T must be nonsingular (A of full row rank)", reason=f"KSP reason {reason}",
                    collective=True)
        b.destroy()
        x.destroy()
    finally:
        ksp.destroy()
        gram.destroy()
    scale = (sol * cols).sum(-1, keepdim=True)
    if op.comm is not None:
        allreduce_sum_(scale, op.comm)
    weight = (sol / scale).T.contiguous()  # (m_local, n_global): this rank's rows of W
    if op.comm is None:
        return weight
    mat = P.Mat().createDense(((op.m_local, op.shape[0]), (op.n_local, op.shape[1])), comm=comm)
    mat.setUp()
    mat.getDenseArray()[:] = host_array(weight)
    mat.assemble()
    return mat


def mutual_coherence(W: torch.Tensor, A: torch.Tensor) -> float:
    """``max_{i != j} |w_i^T a_j|`` for matrices held whole (``W = A``: the mutual coherence)."""
    gram = W.T @ A
    return float((gram - torch.diag(torch.diagonal(gram))).abs().max())
