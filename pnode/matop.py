"""PETSc matrices as differentiable torch operations, and torch functions as PETSc matrices.

* :class:`MatOperator`: ``y = A x`` with a PETSc ``Mat`` (AIJ, dense, shell; split by
  rows over its communicator's ranks) as a torch operation whose backward is
  ``MatMultTranspose`` (and whose transpose's backward is ``MatMult``), so it can be
  differentiated any number of times. :func:`linear_apply` does the same for any object
  with ``apply(x, transpose)`` (the DMDA ghost exchange is one).
* :func:`shell_mat`: the reverse, a PETSc ``MATPYTHON`` whose products are Python
  methods (torch code), every one guarded by a :class:`pnode.guard.CallbackGuard`;
  :class:`TensorProducts` adapts plain tensor functions ``y = f(x)`` to it.
"""
from __future__ import annotations

from typing import Callable

import torch

from .comm import as_petsc_comm
from .errors import ConfigurationError
from .guard import CallbackGuard
from .startup import PETSc
from .vec import as_tensor, check_tensor, host_array, lent

# assembled types whose products with a dense block PETSc computes (MatMatMult)
_BLOCK_TYPES = ("seqaij", "mpiaij", "seqdense", "mpidense")


class _LinearApply(torch.autograd.Function):
    """``op.apply(x, transpose)``; the backward applies the other direction."""

    @staticmethod
    def forward(ctx, op, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        ctx.op, ctx.transpose = op, transpose
        return op.apply(x.detach(), transpose)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _LinearApply.apply(ctx.op, grad.contiguous(), not ctx.transpose), None


def linear_apply(op, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``op`` applied to ``x`` (or its transpose), differentiable any number of times.

    ``op.apply(x, transpose)`` must return a new tensor and be linear; its two directions
    must be each other's transposes (collective on several ranks, like PETSc's products).
    """
    return _LinearApply.apply(op, x, transpose)


class MatOperator:
    """A PETSc ``Mat`` as a differentiable torch operation on this rank's local values.

    ``op(x)`` is ``A x`` for ``x`` of shape ``(..., n_local)`` (the Mat's local column
    size; leading dimensions are a batch, one product each) and returns ``(..., m_local)``;
    ``op(x, transpose=True)`` is ``A^T x``. Gradients flow to ``x`` (the Mat is fixed).
    ``transpose_available=False`` (a shell without ``multTranspose``) makes any use that
    needs the transpose raise a clear error instead of a PETSc one. A batch of CPU vectors
    on an assembled Mat (AIJ, dense) is one ``MatMatMult`` / ``MatTransposeMatMult`` with a
    dense block on the batch's memory (``batched=False``: one product per vector).
    """

    def __init__(self, mat, transpose_available: bool = True, batched: bool = True):
        P = PETSc()
        if not isinstance(mat, P.Mat):
            raise ConfigurationError(f"MatOperator needs a petsc4py Mat, got {type(mat).__name__}")
        self.mat = mat
        (self.m, self.M), (self.n, self.N) = mat.getSizes()
        self.comm = mat.getComm()
        self.transpose_available = transpose_available
        self.batched = batched and mat.getType() in _BLOCK_TYPES
        self._x, self._y = mat.createVecs()  # right (columns) and left (rows) layouts

    @property
    def shape(self) -> tuple[int, int]:
        """The global shape ``(M, N)``."""
        return (self.M, self.N)

    def __call__(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        return linear_apply(self, x, transpose)

    def apply(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``A x`` or ``A^T x`` without a graph (the products behind :meth:`__call__`)."""
        check_tensor(x, "the operator's input")
        n_in, n_out = (self.m, self.n) if transpose else (self.n, self.m)
        if x.ndim == 0 or x.shape[-1] != n_in:
            raise ConfigurationError(
                f"the operator {'A^T' if transpose else 'A'} takes local vectors of {n_in} values "
                f"(global {self.M if transpose else self.N}) in the last dimension, got shape "
                f"{tuple(x.shape)}")
        if transpose and not self.transpose_available:
            raise ConfigurationError("this operator has no transpose (MatMultTranspose), which "
                                     "its backward pass (or an algorithm) needs")
        xs = x.detach().reshape(-1, n_in).contiguous()
        if self.batched and xs.shape[0] > 1 and xs.device.type == "cpu":
            return self._block_product(xs, transpose).view(*x.shape[:-1], n_out)
        out = torch.empty(xs.shape[0], n_out, dtype=x.dtype, device=x.device)
        src, dst = (self._y, self._x) if transpose else (self._x, self._y)
        product = self.mat.multTranspose if transpose else self.mat.mult
        for k in range(xs.shape[0]):
            with lent(src, xs[k]) as X, lent(dst, out[k]) as Y:
                product(X, Y)
        return out.view(*x.shape[:-1], n_out)

    def _block_product(self, xs: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``A X`` (or ``A^T X``) for the rows of ``xs`` as the columns of one dense block.

        A row-major ``(batch, n)`` tensor is the column-major ``n x batch`` block PETSc's
        dense matrices hold, so the block wraps the tensor's memory; the product's block
        is copied out once."""
        P = PETSc()
        batch = xs.shape[0]
        rows = (self.m, self.M) if transpose else (self.n, self.N)
        block = P.Mat().createDense((rows, (None, batch)), array=host_array(xs.view(-1), "a block product"),
                                    comm=self.comm)
        try:
            product = self.mat.transposeMatMult(block) if transpose else self.mat.matMult(block)
        finally:
            block.destroy()
        try:
            n_out = product.getLocalSize()[0]
            values = product.getDenseArray(readonly=True)  # (n_out, batch), column-major
            return torch.from_numpy(values.T.reshape(batch, n_out).copy()).to(xs.dtype)
        finally:
            product.destroy()

    def destroy(self) -> None:
        """Free the work vectors (the Mat stays the caller's)."""
        self._x.destroy()
        self._y.destroy()


class TensorProducts:
    """Shell context from tensor functions: ``mult(x) -> A x``, ``mult_transpose(x) -> A^T x``
    on flat local tensors (views of PETSc's vectors, no copies)."""

    def __init__(self, mult: Callable | None = None, mult_transpose: Callable | None = None):
        self._mult, self._mult_t = mult, mult_transpose

    def mult(self, mat, X, Y) -> None:
        if self._mult is None:
            raise ConfigurationError("this shell matrix has no product A x")
        as_tensor(Y).copy_(self._mult(as_tensor(X, None, "r")))

    def multTranspose(self, mat, X, Y) -> None:
        if self._mult_t is None:
            raise ConfigurationError("this shell matrix has no transposed product A^T x")
        as_tensor(Y).copy_(self._mult_t(as_tensor(X, None, "r")))


_PRODUCTS = ("mult", "multTranspose", "multAdd", "multTransposeAdd", "getDiagonal", "scale", "shift")


def shell_mat(ctx, rows: tuple[int, int | None] | int, cols: tuple[int, int | None] | int, comm=None,
              guard: CallbackGuard | None = None):
    """A PETSc ``MATPYTHON`` whose products are ``ctx``'s methods (PETSc's signatures:
    ``mult(mat, X, Y)``, ``multTranspose(mat, X, Y)``, ...), each guarded by ``guard``.

    ``rows``/``cols``: local sizes, or ``(local, global)`` pairs (global None: summed).
    """
    comm = as_petsc_comm(comm)
    guard = guard if guard is not None else CallbackGuard(comm)
    guard.context(ctx, *(name for name in _PRODUCTS if callable(getattr(ctx, name, None))))
    rows = rows if isinstance(rows, tuple) else (rows, None)
    cols = cols if isinstance(cols, tuple) else (cols, None)
    mat = PETSc().Mat().createPython((rows, cols), context=ctx, comm=comm)
    mat.setUp()
    return mat
