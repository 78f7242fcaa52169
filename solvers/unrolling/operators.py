"""The forward operator ``A`` of an unrolled network: a torch matrix or a PETSc Mat.

:func:`as_operator` turns either into an :class:`Operator` acting on batches of signals
(last dimension the signal). A PETSc Mat (AIJ, dense or shell, split by rows over its
communicator) is applied through :class:`pnode.matop.MatOperator`: ``MatMult`` forward,
``MatMultTranspose`` backward (a batch of CPU signals on an assembled Mat is one
``MatMatMult`` with a dense block), so the same network runs under ``mpiexec`` with each
rank holding its rows of ``A``, its part of the measurements and its part of the signal.
Inner products and norms over the whole signal (:meth:`Operator.dot`) sum over the ranks.
"""
from __future__ import annotations

import torch

from pnode.comm import allreduce, as_mpi_comm, sum_over_ranks
from pnode.errors import ConfigurationError
from pnode.matop import MatOperator
from pnode.startup import PETSc, petsc_dtype


class Operator:
    """``A`` with ``forward(x) = A x`` on ``(..., n_local)`` and ``adjoint(y) = A^T y`` on
    ``(..., m_local)``; :attr:`comm` is None for an operator held whole on each rank."""

    m_local: int
    n_local: int
    shape: tuple[int, int]
    comm = None
    has_transpose = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``; a clear error if this operator has no transpose."""
        if not self.has_transpose:
            raise ConfigurationError(
                "this algorithm needs the transpose A^T of the operator, which it does not have "
                "(a shell Mat without multTranspose, or transpose_available=False)")
        return self._adjoint(y)

    def gram(self, x: torch.Tensor) -> torch.Tensor:
        """``A^T A x``."""
        return self.adjoint(self.forward(x))

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``<a, b>`` per signal over the whole signal (summed over the ranks;
        differentiable), keeping a trailing dimension of one."""
        local = (a * b).sum(-1, keepdim=True)
        return local if self.comm is None else sum_over_ranks(local, self.comm)

    def check_measurements(self, y: torch.Tensor) -> None:
        """Raise if ``y`` is not a batch of this rank's measurements or is not finite."""
        self._check(y, self.m_local, self.shape[0], "the measurements y")

    def check_signal(self, x: torch.Tensor, name: str = "the signal x") -> None:
        """Raise if ``x`` is not a batch of this rank's signals or is not finite."""
        self._check(x, self.n_local, self.shape[1], name)

    def _check(self, t: torch.Tensor, local: int, total: int, name: str) -> None:
        bad_shape = not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[-1] != local
        bad_shape = allreduce(bad_shape, "or", self.comm) if self.comm is not None else bad_shape
        if bad_shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigurationError(
                f"{name} must have this rank's {local} values (of {total}) in the last dimension "
                f"to match the operator of shape {self.shape}; got {got}")
        finite = bool(torch.isfinite(t).all())
        finite = allreduce(finite, "and", self.comm) if self.comm is not None else finite
        if not finite:
            raise ConfigurationError(f"{name} holds non-finite values (NaN or Inf)")

    def lipschitz(self, iterations: int = 100, rtol: float = 1e-10) -> float:
        """``||A||_2^2`` (the Lipschitz constant of the gradient of ``0.5 ||A x - y||^2``)
        by power iteration on ``A^T A`` from the all-ones vector (the same on any number
        of ranks)."""
        with torch.no_grad():
            v = torch.ones(1, self.n_local, dtype=self.dtype)
            v = v / self.dot(v, v).sqrt()
            value = 0.0
            for _ in range(iterations):
                w = self.gram(v)
                new = float(self.dot(v, w))
                v = w / self.dot(w, w).sqrt()
                if abs(new - value) <= rtol * abs(new):
                    return new
                value = new
        return value


class TensorOperator(Operator):
    """A dense torch matrix ``(m, n)``, the same on every rank."""

    def __init__(self, matrix: torch.Tensor):
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
            raise ConfigurationError("a tensor operator must be a 2-D torch tensor (m, n)")
        if not bool(torch.isfinite(matrix).all()):
            raise ConfigurationError("the operator's matrix holds non-finite values (NaN or Inf)")
        self.matrix = matrix
        self.m_local, self.n_local = matrix.shape
        self.shape = tuple(matrix.shape)
        self.dtype = matrix.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix


class PetscOperator(Operator):
    """A PETSc Mat split by rows over its communicator (through :class:`MatOperator`)."""

    def __init__(self, mat, transpose_available: bool = True):
        self.op = MatOperator(mat, transpose_available=transpose_available)
        self.mat = mat
        self.m_local, self.n_local = self.op.m, self.op.n
        self.shape = self.op.shape
        self.comm = as_mpi_comm(self.op.comm)
        self.has_transpose = transpose_available
        self.dtype = petsc_dtype()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op(y, transpose=True)


def as_operator(A, transpose_available: bool = True) -> Operator:
    """An :class:`Operator` from a torch matrix, a petsc4py Mat or an Operator."""
    if isinstance(A, Operator):
        return A
    if isinstance(A, torch.Tensor):
        if not transpose_available:
            raise ConfigurationError("a tensor operator always has its transpose")
        return TensorOperator(A)
    if isinstance(A, PETSc().Mat):
        return PetscOperator(A, transpose_available)
    raise ConfigurationError(f"the operator must be a torch tensor or a petsc4py Mat, got {type(A).__name__}")
