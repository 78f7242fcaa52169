"""Assembled IJacobians ``shift*M - dg/du`` with exact (direct) preconditioners.

The matrix-free shell of :mod:`pnode.implicit` costs one double-backward per Krylov
iteration and has no preconditioner. For small states the whole Jacobian is cheaper:

* ``"dense"``: ``dg/du`` from one batched backward (``n`` seeds) into a PETSc
  ``seqdense`` matrix that shares its memory with a torch buffer; ``ksp_type preonly``,
  ``pc_type lu``: each Newton step is one exact solve, and so is the adjoint's transposed
  solve (``MatSolveTranspose``).
* ``"blocks"``: a batched state ``(B, *sample)`` whose samples do not interact has a
  block-diagonal Jacobian with ``B`` blocks of size ``m = numel / B``. All blocks come
  from ``m`` batched backward seeds (seed ``j`` puts a 1 at component ``j`` of every
  sample, exact because no sample sees another) into a ``seqbaij`` matrix of block size
  ``m``; ``pc_type pbjacobi`` inverts the blocks, so the solve is exact as well. Every
  assembly also applies one random vector-Jacobian product with the true function and
  raises :class:`ConfigurationError` if it disagrees with the blocks (samples coupled).

``jacobian="auto"`` (:func:`choose`): ``"blocks"`` for a batched state (``ndim >= 2``,
``B > 1``) with ``m <= BLOCK_MAX`` whose samples are found independent at ``(t0, y0)``;
otherwise ``"dense"`` for ``n <= DENSE_MAX``; otherwise ``"matrix-free"``. Assembled
Jacobians need a CPU state on a one-process communicator (otherwise auto gives
``"matrix-free"``).
"""
from __future__ import annotations

import torch

from .errors import ConfigurationError
from .vec import PETSc, as_petsc_comm

JACOBIANS = ("auto", "matrix-free", "dense", "blocks")
DENSE_MAX = 256
BLOCK_MAX = 128

_DENSE_SOLVER = {"ksp_type": "preonly", "pc_type": "lu"}
_BLOCK_SOLVER = {"ksp_type": "preonly", "pc_type": "pbjacobi"}


def check_jacobian(jacobian: str) -> str:
    """Validate a user's ``jacobian=`` keyword."""
    if jacobian not in JACOBIANS:
        raise ConfigurationError(f"jacobian must be one of {', '.join(map(repr, JACOBIANS))}, got {jacobian!r}")
    return jacobian


def _batched_vjp(problem, t: float, x: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """``seeds[k]^T dg/du`` for every ``k`` (flat rows), one batched backward at ``(t, x)``."""
    with torch.enable_grad():
        xr = x.detach().reshape(problem.shape).requires_grad_(True)
        g = problem.implicit.rhs(t, xr)
    if not g.requires_grad:
        return torch.zeros(seeds.shape[0], problem.numel, dtype=x.dtype, device=x.device)
    (rows,) = torch.autograd.grad(g, xr, seeds.view(seeds.shape[0], *problem.shape),
                                  is_grads_batched=True, allow_unused=True)
    if rows is None:
        return torch.zeros(seeds.shape[0], problem.numel, dtype=x.dtype, device=x.device)
    return rows.reshape(seeds.shape[0], -1)


class _Assembled:
    """An assembled IJacobian Mat of one problem and the solver options it comes with."""

    solver_defaults: dict = {}

    def __init__(self, problem):
        self.problem = problem

    def destroy(self) -> None:
        self.mat.destroy()


class DenseJacobian(_Assembled):
    """``shift*M - dg/du`` as a ``seqdense`` Mat over a torch buffer; LU-preconditioned."""

    solver_defaults = _DENSE_SOLVER

    def __init__(self, problem, comm):
        super().__init__(problem)
        n = problem.numel
        self.eye = torch.eye(n, dtype=problem.dtype, device=problem.device)
        self.buf = torch.zeros(n, n, dtype=problem.dtype, device=problem.device)
        # PETSc stores dense matrices by columns: its matrix is buf.T
        self.mat = PETSc().Mat().createDense((n, n), array=self.buf.numpy().reshape(-1), comm=comm)
        self.mat.setUp()
        self.mat.assemble()

    def assemble(self, t: float, x: torch.Tensor, shift: float) -> None:
        """Write ``shift*M - dg/du`` at ``(t, x)`` and bump the Mat's state."""
        jac = _batched_vjp(self.problem, t, x, self.eye)
        A = self.buf.T
        A.copy_(jac).neg_()
        mass = self.problem.mass
        if mass is None:
            A.diagonal().add_(shift)
        elif mass.diagonal:
            A.diagonal().add_(mass.M, alpha=shift)
        else:
            A.add_(mass.M, alpha=shift)
        self.mat.assemble()


def _block_seeds(B: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``m`` compressed seeds (a 1 at component ``j`` of every sample) and one random probe."""
    seeds = torch.zeros(m + 1, B, m, dtype=dtype)
    seeds[torch.arange(m), :, torch.arange(m)] = 1.0
    seeds[m] = torch.rand(B, m, generator=torch.Generator().manual_seed(1234), dtype=dtype) + 0.5
    return seeds.view(m + 1, -1).to(device)


def block_jacobian(problem, seeds: torch.Tensor, t: float, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The per-sample blocks ``dg_b/du_b`` at ``(t, x)``, shape ``(B, m, m)``, and the
    coupling check's worst relative mismatch (rounding level for independent samples)."""
    B = problem.shape[0]
    m = problem.numel // B
    rows = _batched_vjp(problem, t, x, seeds)
    blocks = rows[:m].view(m, B, m).transpose(0, 1)
    w = seeds[m].view(B, m)
    expected = torch.einsum("bjk,bj->bk", blocks, w)
    scale = torch.einsum("bjk,bj->bk", blocks.abs(), w).add_(1e-300)
    return blocks, float(((rows[m].view(B, m) - expected).abs() / scale).max())


class BlockJacobian(_Assembled):
    """Block-diagonal ``shift*M - dg/du`` (one block per sample) as ``seqbaij``; pbjacobi."""

    solver_defaults = _BLOCK_SOLVER

    def __init__(self, problem, comm):
        super().__init__(problem)
        B = problem.shape[0]
        m = problem.numel // B
        self.B, self.m = B, m
        self.seeds = _block_seeds(B, m, problem.dtype, problem.device)
        self.blocks = torch.zeros(B, m, m, dtype=problem.dtype, device=problem.device)
        idx = torch.arange(B + 1, dtype=torch.int32)
        self.rows, self.cols = idx.numpy(), idx[:-1].numpy()
        self.mat = PETSc().Mat().createBAIJ((problem.numel, problem.numel), m,
                                            csr=(self.rows, self.cols, self.blocks.numpy().reshape(-1)),
                                            comm=comm)
        self.mat.assemble()
        self._mass = None
        if problem.mass is not None:
            mass = problem.mass
            if not mass.diagonal:
                raise ConfigurationError("jacobian='blocks' supports only a diagonal mass= (shape (n,))")
            self._mass = mass.M.view(B, m)

    def assemble(self, t: float, x: torch.Tensor, shift: float) -> None:
        """Write the blocks of ``shift*M - dg/du`` at ``(t, x)``; raise if samples interact."""
        blocks, mismatch = block_jacobian(self.problem, self.seeds, t, x)
        if not mismatch <= 1e-8:
            raise ConfigurationError(
                f"jacobian='blocks' needs the samples of the state (its dim 0, {self.B} of them) "
                f"not to interact, but dg/du couples them (relative mismatch {mismatch:.2e} of a "
                "random vector-Jacobian product); use jacobian='dense' or 'matrix-free'")
        A = self.blocks
        A.copy_(blocks).neg_()
        if self._mass is None:
            A.diagonal(dim1=1, dim2=2).add_(shift)
        else:
            A.diagonal(dim1=1, dim2=2).add_(self._mass, alpha=shift)
        self.mat.setValuesBlockedCSR(self.rows, self.cols, A.numpy().reshape(-1))
        self.mat.assemble()


def choose(requested: str, problem, s0: float, y0: torch.Tensor, comm) -> str:
    """Resolve ``jacobian=`` for ``problem`` (see the module docstring for the rule)."""
    n, shape = problem.numel, problem.shape
    serial = as_petsc_comm(comm).getSize() == 1
    cpu = problem.device.type == "cpu"
    if requested in ("dense", "blocks") and not (serial and cpu):
        raise ConfigurationError(
            f"jacobian={requested!r} needs a CPU state on a one-process communicator; "
            "use jacobian='matrix-free'")
    if requested == "blocks" and len(shape) < 2:
        raise ConfigurationError(
            f"jacobian='blocks' needs a batched state (batch, ...), got shape {tuple(shape)}")
    if requested != "auto":
        return requested
    if not (serial and cpu):
        return "matrix-free"
    if len(shape) >= 2 and shape[0] > 1 and n // shape[0] <= BLOCK_MAX:
        seeds = _block_seeds(shape[0], n // shape[0], problem.dtype, problem.device)
        if block_jacobian(problem, seeds, s0, y0.reshape(-1))[1] <= 1e-8:
            return "blocks"
    return "dense" if n <= DENSE_MAX else "matrix-free"


def build(kind: str, problem, comm) -> DenseJacobian | BlockJacobian:
    """The assembled Jacobian object of ``kind`` (``"dense"`` or ``"blocks"``)."""
    return DenseJacobian(problem, comm) if kind == "dense" else BlockJacobian(problem, comm)
