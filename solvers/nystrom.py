"""Randomised Nystrom preconditioner for ``A + mu I`` with ``A`` symmetric positive
semidefinite and available only through products (Frangella, Tropp & Udell, "Randomized
Nystrom preconditioning", SIAM J. Matrix Anal. Appl. 44, 2023).

A rank-``r`` sketch ``Y = A Q`` (``Q``: an orthonormalised Gaussian test matrix, ``r``
products) gives the Nystrom approximation ``A ~ U diag(lam) U^T`` (``U`` orthonormal,
``lam`` descending), and with it

    P^{-1} = (lam_r + mu) U diag(lam + mu)^{-1} U^T + (I - U U^T),

which maps the top ``r`` eigenvalues of ``A + mu I`` near ``lam_r + mu`` and leaves the
rest alone: CG on a matrix whose spectrum decays fast (Gauss-Newton matrices of PINNs,
Rathore et al., ICML 2024) then converges as if the condition number were
``(lam_r + mu) / mu`` instead of ``(lam_1 + mu) / mu``.

The sketch is taken on the parameter Vec split over the ranks (each product is the
caller's, collective); ``Q``, ``Y`` and the factorisation are gathered and computed the
same way on every rank (``n x r`` values), so the preconditioner is identical on any
number of ranks; each rank keeps its rows of ``U``. Applying it costs one Allreduce of
``r`` values.
"""
from __future__ import annotations

from typing import Callable

import torch

from pnode.comm import allgather_blocks, allreduce_sum_
from pnode.errors import ConfigurationError


class NystromPreconditioner:
    """``P^{-1}`` of ``A + mu I`` from a rank-``rank`` sketch of ``A`` on a ``ParamVec``'s
    layout (see the module docstring). :meth:`sketch` takes ``A``'s products; :meth:`apply`
    is a PETSc PC (``pc_type python``) ``apply``; :attr:`shift` is ``mu``."""

    def __init__(self, pvec, rank: int, seed: int = 0):
        if int(rank) < 1:
            raise ConfigurationError(f"the Nystrom rank must be a positive integer, got {rank!r}")
        self.pvec, self.rank, self.seed = pvec, min(int(rank), pvec.numel), int(seed)
        self.shift = 0.0
        self.U: torch.Tensor | None = None  # this rank's rows, (local, r)
        self.eigenvalues: torch.Tensor | None = None  # (r,), descending

    @property
    def ready(self) -> bool:
        return self.U is not None

    def sketch(self, product: Callable, draw: int) -> None:
        """Sketch ``A`` by ``rank`` products ``product(X, Y)`` (``Y = A X``, Vecs of the
        layout); ``draw`` numbers the test matrix (the same on every rank)."""
        pv, r = self.pvec, self.rank
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(draw))
        Q, _ = torch.linalg.qr(torch.randn(pv.numel, r, generator=gen, dtype=torch.float64))
        Yt = torch.empty(r, pv.numel, dtype=torch.float64)  # rows: the products, gathered
        X, AX = pv.duplicate(), pv.duplicate()
        try:
            for j in range(r):
                pv.local_of(X).copy_(Q[pv.start:pv.stop, j])
                X.stateIncrease()
                product(X, AX)
                pv.to_full(AX, out=Yt[j])
        finally:
            X.destroy()
            AX.destroy()
        self.set_sketch(Q, Yt.T)

    def set_sketch(self, Q: torch.Tensor, Y: torch.Tensor) -> None:
        """The factorisation from a test matrix ``Q`` (orthonormal columns) and ``Y = A Q``
        (whole, the same on every rank): a shift ``nu`` of rounding size keeps the small
        Cholesky factor defined (the algorithm's step 3), and is taken off again."""
        nu = torch.finfo(torch.float64).eps * float(Y.norm()) * Y.shape[0] ** 0.5
        Y = Y + nu * Q
        M = Q.T @ Y
        C = torch.linalg.cholesky(0.5 * (M + M.T))
        B = torch.linalg.solve_triangular(C, Y.T, upper=False).T  # Y C^{-T}
        U, s, _ = torch.linalg.svd(B, full_matrices=False)
        self.U = U[self.pvec.start:self.pvec.stop].contiguous()
        self.eigenvalues = (s * s - nu).clamp_(min=0.0)

    def factors(self) -> dict[str, torch.Tensor]:
        """The whole ``U`` and the eigenvalues (for a checkpoint; collective)."""
        pv = self.pvec
        full = torch.empty(pv.numel, self.rank, dtype=torch.float64)
        allgather_blocks(self.U, [c * self.rank for c in pv.counts], full, pv.mpi)
        return {"U": full, "eigenvalues": self.eigenvalues.clone()}

    def load_factors(self, state: dict[str, torch.Tensor]) -> None:
        self.U = state["U"][self.pvec.start:self.pvec.stop].contiguous()
        self.eigenvalues = state["eigenvalues"].clone()

    def apply(self, pc, X, Y) -> None:
        """``Y = P^{-1} X`` (collective: one Allreduce of ``rank`` values)."""
        pv = self.pvec
        x, y = pv.local_of(X, "r"), pv.local_of(Y)
        z = allreduce_sum_(self.U.T @ x, pv.mpi)
        lam = self.eigenvalues
        z.mul_((lam[-1] + self.shift) / (lam + self.shift) - 1.0)
        torch.addmv(x, self.U, z, out=y)
        Y.stateIncrease()
