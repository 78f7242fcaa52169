"""Levenberg-Marquardt (damped Gauss-Newton) on a residual split over the ranks.

Public API (``pnode.solvers``)::

    opt = LevenbergMarquardt(model, Objective(residual=fn, jacobian_rows=rows), comm=None,
                             linear_solver="cholesky", damping=1e-3, gatol=0.0,
                             options_prefix="lm_", options=None, progress=True,
                             checkpoint=None, checkpoint_every=0, callback=None,
                             nystrom_rank=0, nystrom_every=10, nystrom_seed=0)
    result = opt.solve(max_it=100)   # a TaoResult (TAO's reason codes and words)
    loss = opt.step()                # one iteration
    opt.damping, opt.history, opt.state_dict(), opt.load_state_dict(state), opt.save(p), opt.load(p)

Each iteration solves ``(J^T J + mu I) s = -J^T r`` at the iterate and takes the trial
point ``theta + s`` when the ratio of the actual to the predicted reduction of
``0.5 ||r||^2`` exceeds ``rho_tol``; the damping ``mu`` (the inverse of a trust radius)
then follows Nielsen's rule (``mu *= max(1/3, 1 - (2 rho - 1)^3)`` on success, ``mu *=
nu, nu *= 2`` on failure). The normal equations are solved by

- ``"cholesky"``: ``J^T J`` and ``J^T r`` summed over the ranks (one Allreduce of this
  rank's assembled rows' products), the same ``n x n`` system on every rank factored by
  PETSc (``KSPPREONLY`` + ``PCCHOLESKY`` on a dense matrix, options under the prefix);
  for models of up to a few thousand parameters;
- ``"cg"``: PETSc ``KSPCG`` on the parameter Vec split over the ranks, with a shell
  matrix ``v -> J^T (J v) + mu v`` (a JVP and a VJP of the residual per product). CG
  from zero lowers the damped model at every iteration, so a solve stopped by
  ``ksp_max_it`` still gives a step (truncated Newton); it is judged by the same ratio.
  ``nystrom_rank=r`` preconditions it by a randomised Nystrom approximation of ``J^T J``
  (:mod:`pnode.solvers.nystrom`: ``r`` products, refreshed every ``nystrom_every``
  iterations, applied with the current damping; kept in checkpoints).

A trial point whose loss is not finite is rejected; a non-finite loss or gradient at the
iterate raises :class:`NonFiniteObjectiveError` (the model holds the last accepted
iterate). The reasons are TAO's: ``CONVERGED_GATOL`` (gradient norm below ``gatol``),
``CONVERGED_MINF`` (loss below ``fmin``), ``DIVERGED_MAXITS``, ``DIVERGED_TR_REDUCTION``
(the damping reached ``damping_max``).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import numpy as np
import torch

from pnode.comm import allreduce_sum_
from pnode.errors import ConfigurationError
from pnode.guard import CallbackGuard
from pnode.matop import shell_mat
from pnode.options import ScopedOptions
from pnode.startup import PETSc

from .monitor import History, Progress
from .nystrom import NystromPreconditioner
from .objective import Evaluator, NonFiniteObjectiveError, Objective, as_param_vec
from .tao import TaoResult, load_state, restore_iterate, save_state, tao_reason
from .trust_region import ratio

LINEAR_SOLVERS = ("cholesky", "cg")


def gram(J: torch.Tensor) -> torch.Tensor:
    """``J^T J``. On the CPU through NumPy, whose ``A.T @ A`` is one BLAS ``syrk`` (half the
    flops of the general product torch calls: 0.11 s against 0.24 s for 4500 x 921 rows on
    one core), on ``J``'s memory when it is contiguous in either order."""
    if J.device.type != "cpu":
        return J.T @ J
    a = J.detach().numpy()
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    return torch.from_numpy(a.T @ a)


class LevenbergMarquardt:
    """Damped Gauss-Newton on ``Objective(residual=...)`` (see the module docstring)."""

    def __init__(self, params, objective: Objective, *, linear_solver: str = "cholesky", comm=None,
                 damping: float = 1e-3, damping_min: float = 1e-20, damping_max: float = 1e16,
                 rho_tol: float = 1e-4, gatol: float = 0.0, fmin: float = 0.0,
                 options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
                 max_it: int = 100, progress: bool = True, checkpoint: str | os.PathLike | None = None,
                 checkpoint_every: int = 0, callback: Callable[["LevenbergMarquardt"], None] | None = None,
                 nystrom_rank: int = 0, nystrom_every: int = 10, nystrom_seed: int = 0):
        if not isinstance(objective, Objective) or not objective.has_residual:
            raise ConfigurationError("Levenberg-Marquardt needs an Objective(residual=...)")
        if linear_solver not in LINEAR_SOLVERS:
            raise ConfigurationError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}")
        if nystrom_rank and linear_solver != "cg":
            raise ConfigurationError(f"nystrom_rank preconditions CG: it needs linear_solver='cg', got "
                                     f"{linear_solver!r}")
        if int(nystrom_every) < 1:
            raise ConfigurationError(f"nystrom_every must be a positive integer, got {nystrom_every!r}")
        if not (0 < damping_min <= damping <= damping_max):
            raise ConfigurationError(f"need 0 < damping_min <= damping <= damping_max, got "
                                     f"{damping_min}, {damping}, {damping_max}")
        self.pvec = as_param_vec(params, comm)
        self.evaluator = Evaluator(objective, self.pvec)
        self.linear_solver = linear_solver
        self.damping, self.nu = float(damping), 2.0
        self.damping_min, self.damping_max = float(damping_min), float(damping_max)
        self.rho_tol, self.gatol, self.fmin = float(rho_tol), float(gatol), float(fmin)
        self.max_it = int(max_it)
        self.progress, self.checkpoint, self.checkpoint_every = progress, checkpoint, int(checkpoint_every)
        self.callback = callback
        self.history = History()
        self.iterations = 0
        self.last: dict[str, float] = {}
        self.guard = CallbackGuard(self.pvec.comm)
        defaults = ({"ksp_type": "preonly", "pc_type": "cholesky"} if linear_solver == "cholesky"
                    else {"ksp_type": "cg", "pc_type": "none", "ksp_rtol": 1e-12, "ksp_max_it": 200})
        self.opts = ScopedOptions(options_prefix, options).with_defaults(defaults)
        self._x, self._s, self._g = self.pvec.duplicate(), self.pvec.duplicate(), self.pvec.duplicate()
        self.pvec.pull(self._x)
        self._linearised = False
        self.nystrom = NystromPreconditioner(self.pvec, nystrom_rank, nystrom_seed) if nystrom_rank else None
        self.nystrom_every, self._sketched_at = int(nystrom_every), None
        self._build_linear_solver()

    # -- the linear solve ----------------------------------------------------------------

    def _build_linear_solver(self) -> None:
        P, n = PETSc(), self.pvec.numel
        if self.linear_solver == "cholesky":
            comm = P.COMM_SELF
            self._rhs_arr, self._sol_arr = np.zeros(n), np.zeros(n)
            self._mat = P.Mat().createDense((n, n), comm=comm)
            self._mat.setUp()
            self._rhs = P.Vec().createWithArray(self._rhs_arr, comm=comm)
            self._sol = P.Vec().createWithArray(self._sol_arr, comm=comm)
        else:
            comm = self.pvec.comm
            m = self.evaluator.residual_rows()
            self._rows = P.Vec().createMPI((m, None), comm=comm)
            local = self.pvec.counts[self.pvec.mpi.Get_rank()]
            self._mat = shell_mat(_Normal(self), (local, n), (local, n), comm, self.guard)
            self._rhs, self._sol = self.pvec.duplicate(), self.pvec.duplicate()
        self.ksp = P.KSP().create(comm)
        self.ksp.setOperators(self._mat)
        self.opts.apply(self.ksp)
        if self.nystrom is not None:
            pc = self.ksp.getPC()
            pc.setType("python")
            pc.setPythonContext(self.guard.context(self.nystrom, "apply"))

    def _linearise(self) -> None:
        """Loss, gradient and (Cholesky) ``J^T J`` at the iterate."""
        ev, n = self.evaluator, self.pvec.numel
        if self.linear_solver == "cholesky":
            r, J = ev.residual_and_rows(self._x)
            buf = torch.empty(n * n + n + 1, dtype=torch.float64)
            buf[:n * n].view(n, n).copy_(gram(J))
            buf[n * n:n * n + n].copy_(J.T @ r)
            buf[-1] = 0.5 * float(r @ r)
            allreduce_sum_(buf, self.pvec.mpi)
            self._jtj = buf[:n * n].view(n, n)
            self.pvec.local_of(self._g).copy_(buf[n * n + self.pvec.start:n * n + self.pvec.stop])
            self._g.stateIncrease()
            self.loss = float(buf[-1])
        else:
            ev.linearise_residual(self._x)
            ev.linearised_residual_into(self._rows)
            ev.jacobian_transpose_product(self._rows, self._g)
            self.loss = 0.5 * self._rows.norm() ** 2
            if self.nystrom is not None and (self._sketched_at is None
                                             or self.iterations - self._sketched_at >= self.nystrom_every):
                self.nystrom.sketch(self._gram_product, draw=self.iterations)
                self._sketched_at = self.iterations
        self.gradient_norm = self._g.norm()
        ev._check(self.loss, self.gradient_norm)
        self._linearised = True

    def _solve_step(self) -> float:
        """The step into ``self._s``; the predicted reduction (NaN when the solve failed)."""
        mu = self.damping
        if self.linear_solver == "cholesky":
            n = self.pvec.numel
            a = torch.from_numpy(self._mat.getDenseArray())  # the matrix's own memory
            a.copy_(self._jtj)
            a.diagonal().add_(mu)
            self._mat.assemble()
            self.ksp.setOperators(self._mat)
            g = self.pvec.to_full(self._g)
            torch.from_numpy(self._rhs_arr).copy_(-g)
            self._rhs.stateIncrease()
            try:
                self.ksp.solve(self._rhs, self._sol)
            except PETSc().Error:  # a zero pivot: J^T J + mu I singular in rounding
                return math.nan
            s = torch.from_numpy(self._sol_arr)
            self.pvec.local_of(self._s).copy_(s[self.pvec.start:self.pvec.stop])
            self._s.stateIncrease()
            predicted = -float(g @ s) - 0.5 * float(s @ (self._jtj @ s)) if n else 0.0
        else:
            self._g.copy(self._rhs)
            self._rhs.scale(-1.0)
            self._s.zeroEntries()
            if self.nystrom is not None:
                self.nystrom.shift = mu
            self.ksp.solve(self._rhs, self._s)
            self.evaluator.jacobian_product(self._s, self._rows)
            predicted = -self._g.dot(self._s) - 0.5 * self._rows.norm() ** 2
        reason = self.ksp.getConvergedReason()
        if reason < 0 and not (self.linear_solver == "cg" and reason == PETSc().KSP.ConvergedReason.DIVERGED_MAX_IT):
            return math.nan
        return predicted

    def _gram_product(self, X, Y) -> None:
        """``Y = J^T (J X)`` at the linearised iterate."""
        self.evaluator.jacobian_product(X, self._rows)
        self.evaluator.jacobian_transpose_product(self._rows, Y)

    # -- iterations ----------------------------------------------------------------------

    def step(self) -> float:
        """One iteration from the iterate; returns the loss at the (new) iterate."""
        if not self._linearised:
            self._linearise()
        predicted = self._solve_step()
        trial = self._x.duplicate()
        try:
            self._x.copy(trial)
            trial.axpy(1.0, self._s)
            try:
                f_trial = self.evaluator.value(trial) if math.isfinite(predicted) else math.nan
            except NonFiniteObjectiveError:
                f_trial = math.nan
            rho = ratio(self.loss - f_trial, predicted)
            accepted = rho > self.rho_tol
            if accepted:
                trial.copy(self._x)
                self.loss = f_trial
                self.damping = max(self.damping * max(1 / 3, 1 - (2 * rho - 1) ** 3), self.damping_min)
                self.nu = 2.0
                self._linearised = False
            else:
                self.damping = min(self.damping * self.nu, self.damping_max)
                self.nu *= 2
                self.evaluator.push(self._x)
        finally:
            trial.destroy()
        self.iterations += 1
        self.last = {"rho": rho, "accepted": float(accepted), "predicted": predicted, "damping": self.damping}
        self.history.append(self.iterations, self.loss, self.gradient_norm, math.nan, self.evaluator.gradients)
        return self.loss

    def solve(self, max_it: int | None = None) -> TaoResult:
        """Iterate until ``max_it`` iterations in all (counting those before a resume), the
        gradient norm falls below ``gatol``, the loss below ``fmin``, or the damping reaches
        ``damping_max``; the model then holds the iterate."""
        total = int(self.max_it if max_it is None else max_it)
        bar = Progress(max(total - self.iterations, 0), f"Gauss-Newton ({self.linear_solver})", self.pvec.mpi,
                       self.progress)
        reason = -2
        try:
            while self.iterations < total:
                if not self._linearised:
                    self._linearise()
                if self.gradient_norm <= self.gatol:
                    reason = 3
                    break
                if self.loss <= self.fmin:
                    reason = 7
                    break
                if self.damping >= self.damping_max:
                    reason = -7
                    break
                self.step()
                bar.update(1, loss=self.loss, damping=self.damping)
                if self.checkpoint is not None and self.checkpoint_every > 0 and self.iterations % self.checkpoint_every == 0:
                    self.save(self.checkpoint)
                if self.callback is not None:
                    self.callback(self)
        except BaseException as exc:
            # the model takes the last accepted iterate where every rank raised (a
            # non-finite loss or gradient is decided on the summed values; one rank):
            # after a fault on one rank only, a collective here would never return
            if isinstance(exc, NonFiniteObjectiveError) or self.pvec.mpi.Get_size() == 1:
                self.evaluator.push(self._x)
            raise
        finally:
            bar.close()
        self.evaluator.push(self._x)
        if self.checkpoint is not None and self.checkpoint_every > 0:
            self.save(self.checkpoint)
        return TaoResult(reason, tao_reason(reason), self.iterations, self.loss,
                         getattr(self, "gradient_norm", math.nan))

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The iterate (flat, CPU), the damping, the iteration count, the history and the
        Nystrom preconditioner's factors (collective)."""
        state = {"solver": "levenberg-marquardt", "x": self.pvec.to_full(self._x).clone().cpu(),
                 "damping": self.damping, "nu": self.nu, "iterations": self.iterations,
                 "history": self.history.state_dict()}
        if self.nystrom is not None and self.nystrom.ready:
            state["nystrom"] = {**self.nystrom.factors(), "sketched_at": self._sketched_at}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the model takes its iterate)."""
        restore_iterate(state, "levenberg-marquardt", "a LevenbergMarquardt", self.pvec)
        self.pvec.pull(self._x)
        self.damping, self.nu = float(state["damping"]), float(state["nu"])
        self.iterations = int(state["iterations"])
        self.history.load_state_dict(state["history"])
        self._linearised = False
        kept = state.get("nystrom")
        if self.nystrom is not None and kept is not None and kept["U"].shape == (self.pvec.numel, self.nystrom.rank):
            self.nystrom.load_factors(kept)
            self._sketched_at = int(kept["sketched_at"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` (rank 0, atomically)."""
        save_state(self.state_dict(), path, self.pvec.mpi)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a file written by :meth:`save`."""
        self.load_state_dict(load_state(path))

    def destroy(self) -> None:
        """Free the PETSc objects."""
        for obj in (self.ksp, self._mat, self._rhs, self._sol, self._x, self._s, self._g,
                    getattr(self, "_rows", None)):
            if obj is not None:
                obj.destroy()


class _Normal:
    """Shell context of ``v -> J^T (J v) + mu v`` at the linearised iterate."""

    def __init__(self, owner: LevenbergMarquardt):
        self.owner = owner

    def mult(self, mat, X, Y) -> None:
        self.owner._gram_product(X, Y)
        Y.axpy(self.owner.damping, X)
