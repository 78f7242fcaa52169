"""One PETSc TS for a problem + method + checkpoint policy: forward solves and adjoints."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from .distributed import abort_on_error
from .errors import ConvergenceError, ts_reason
from .implicit import ImplicitOperators, failure_detail
from .jacobians import AdjointShells, ParamBuffer
from .methods import Method
from .options import ScopedOptions
from .tape import StageTape
from .vec import PETSc, ViewCache, as_petsc_comm, as_vec


class Integrator:
    """Owns one TS (and its vectors) for a fixed problem shape; reusable across calls.

    ``adjoint=True`` adds the Jacobian shells and a trajectory so that
    :meth:`adjoint` can run TSAdjointSolve after :meth:`forward`.
    """

    def __init__(self, problem, method: Method, *, rtol: float, atol: float,
                 step_size: float | None, options: ScopedOptions, comm=None,
                 adjoint: bool = False, solution_only: bool = False, replay: bool = False,
                 jacobian: str = "matrix-free", graph_bytes: int | None = None):
        self._args = dict(problem=problem, method=method, rtol=rtol, atol=atol, step_size=step_size,
                          options=options, comm=comm, adjoint=adjoint, solution_only=solution_only,
                          replay=replay, jacobian=jacobian, graph_bytes=graph_bytes)
        self.siblings: dict = {}
        self._replay_times: np.ndarray | None = None
        self.problem, self.method = problem, method
        self.rtol, self.atol, self.step_size = rtol, atol, step_size
        self.comm = as_petsc_comm(comm)
        self._error: BaseException | None = None
        P = PETSc()
        n, dev, dt = problem.numel, problem.device, problem.dtype
        self.u = torch.zeros(n, dtype=dt, device=dev)
        self.U = as_vec(self.u, self.comm)
        self._f = torch.zeros(n, dtype=dt, device=dev)
        self.F = as_vec(self._f, self.comm)
        ts = self.ts = P.TS().create(self.comm)
        ts.setProblemType(P.TS.ProblemType.NONLINEAR)
        ts.setType(method.ts_type)
        explicit = problem.explicit if method.implicit else problem
        if explicit is not None:
            ts.setRHSFunction(self._rhs_cb, self.F)
        ts.setExactFinalTime(P.TS.ExactFinalTime.MATCHSTEP)
        ts.setMaxSteps(_UNLIMITED_STEPS)
        fixed = step_size is not None or not method.adaptive
        # fixed steps cannot shrink a step whose Newton solve failed; adaptive ones retry
        # with a smaller step, bounded by ts_max_reject consecutive rejections (PETSc's
        # failure count is cumulative over the solve, so a finite one ends long solves)
        ts.setMaxSNESFailures(1 if method.implicit and fixed else -1)
        ts.setErrorIfStepFails(False)
        ts.setMonitor(self._monitor_cb)
        if replay:
            ts.setPreStep(self._prestep_cb)
        defaults = dict(method.options)
        if step_size is None and method.adaptive:
            defaults["ts_adapt_type"] = "basic"
            ts.setTolerances(rtol=rtol, atol=atol)
        else:
            defaults["ts_adapt_type"] = "none"
        self.shells = self.implicit = None
        self.pbuf = ParamBuffer(problem.params)
        if method.implicit:
            self.implicit = ImplicitOperators(problem, self.comm, self.pbuf if adjoint else None,
                                              on_error=self._keep_error, jacobian=jacobian)
            defaults.update(self.implicit.solver_defaults)
            self.implicit.attach(ts, self.F, adjoint)
        # explicit methods keep each stage's graph for the adjoint (pnode.tape): all of them
        # from the forward solve, or, with solution_only, those of the one step PETSc
        # recomputes in the backward pass
        self.views = ViewCache()
        self.tape = StageTape(self.comm, graph_bytes) if adjoint and not method.implicit else None
        self._in_forward = False
        self._record_forward = not solution_only
        if adjoint and explicit is not None:
            self.shells = AdjointShells(explicit, self.comm, self.pbuf, self.tape, self.views)
            ts.setRHSJacobian(self.shells.at, self.shells.J, self.shells.J)
            ts.setRHSJacobianP(self.shells.at_p, self.shells.Jp)
        self._trajectory = {}
        if adjoint:
            ts.setSaveTrajectory()
            self._trajectory = {"ts_trajectory_type": "memory",
                                "ts_trajectory_solution_only": bool(solution_only)}
            self.lam = torch.zeros(n, dtype=dt, device=dev)
            self.L = as_vec(self.lam, self.comm)
            self.mu = torch.zeros(self.pbuf.numel, dtype=dt, device=dev)
            self.M = as_vec(self.mu, self.comm) if self.pbuf.numel else None
        self._options = options.with_defaults(defaults)
        self._force = {"ts_adapt_type": "none"} if replay else None
        self._configure()
        self._trajectory_dirty = False
        self._option_step = _step_option(options)
        self.adaptive = not replay and self._options.get("ts_adapt_type") != "none"
        self.out: torch.Tensor | None = None
        self.t_out: np.ndarray | None = None
        self.out_steps: list[int] = []
        self.step_times: list[float] = []
        # called as on_step(step, state, last) after each accepted forward step (and at
        # step 0), ``state`` the flat solution: budgeted checkpoints are taken here
        self.on_step = None

    def _configure(self) -> None:
        """setFromOptions with this object's options. A TSTrajectory reads its options
        without the TS's prefix, and with no type set it writes TS-data-* folders (type
        basic): pnode always sets memory, for this call only."""
        with ScopedOptions("", {}).applied(force=self._trajectory):
            self._options.apply(self.ts, force=self._force)

    def _fresh_trajectory(self) -> None:
        """A forward solve needs an empty trajectory; one left by a forward solve that was
        never differentiated is replaced."""
        if self._trajectory and self._trajectory_dirty:
            self.ts.removeTrajectory()
            self.ts.setSaveTrajectory()
            self._configure()
        self._trajectory_dirty = bool(self._trajectory)

    # ---- callbacks (errors are kept and re-raised with their own type) -------------
    def _rhs_cb(self, ts, t, X, F):
        try:
            prob = self.problem
            x = self.views.get(X, "r", prob.shape)
            tape = self.tape
            f = tape.record(t, x, prob.rhs) if tape is not None and tape.recording else prob.rhs(t, x)
            self.views.get(F, "rw", prob.shape).copy_(f)
            F.stateIncrease()
        except BaseException as exc:
            self._error = self._error or exc
            raise

    def _keep_error(self, exc: BaseException) -> None:
        self._error = self._error or exc

    def _monitor_cb(self, ts, step, t, X):
        if not self._in_forward:  # PETSc also monitors the steps it recomputes for the adjoint
            return
        try:
            k = len(self.out_steps)
            self.step_times.append(t)
            u = self.u
            # a finite sum means finite entries: one reduction instead of isfinite().all()
            # (small case: forward 8.8 -> 8.0 ms); only a sum that overflows is checked entrywise
            if step > 0 and not abs(float(u.sum())) < np.inf and not bool(torch.isfinite(u).all()):
                raise ConvergenceError("the state became non-finite (NaN or Inf)", time=self._user_t(t), step=step)
            if k < len(self.t_out) and _close(t, self.t_out[k]):
                self.out[k].view(-1).copy_(u)
                self.out_steps.append(step)
            if self.on_step is not None:
                self.on_step(step, u, _close(t, self.t_out[-1]))
        except BaseException as exc:
            self._error = self._error or exc
            raise

    def _prestep_cb(self, ts):
        k = ts.getStepNumber()
        ts.setTimeStep(float(self._replay_times[k + 1] - self._replay_times[k]))

    def _run_forward(self) -> None:
        """TSSolve from the state in ``U`` into an empty trajectory; explicit methods record
        their stage graphs unless the trajectory keeps solutions only."""
        self._fresh_trajectory()
        tape = self.tape
        if tape is not None:
            tape.clear()
            tape.recording = self._record_forward
        self._in_forward = True
        try:
            self._solve(lambda: self.ts.solve(self.U))
        finally:
            self._in_forward = False
            if tape is not None:
                tape.recording = False

    def _user_t(self, s: float) -> float:
        return self.problem.sign * s

    # ---- forward -------------------------------------------------------------------
    def forward(self, y0: torch.Tensor, t_out: np.ndarray, out: torch.Tensor) -> None:
        """Solve from ``t_out[0]`` to ``t_out[-1]`` (PETSc time), writing ``out[k]`` and
        recording the accepted step times in ``step_times``."""
        ts = self.ts
        self.t_out, self.out, self.out_steps = t_out, out, []
        self.step_times = []
        self.u.copy_(y0.reshape(-1))
        self.U.stateIncrease()
        ts.setTime(float(t_out[0]))
        ts.setStepNumber(0)
        ts.setMaxTime(float(t_out[-1]))
        ts.setMaxSteps(_UNLIMITED_STEPS)
        ts.setEvaluationTimes(list(map(float, t_out)))
        ts.setTimeStep(self._initial_step(t_out))
        self._run_forward()
        self.last_stats = {"steps": ts.getStepNumber(), "rejected": ts.getStepRejections(),
                           "newton_failures": ts.getSNESFailures(),
                           "newton_iterations": ts.getSNESIterations(),
                           "krylov_iterations": ts.getKSPIterations()}
        if len(self.out_steps) != len(t_out):
            raise ConvergenceError(
                f"the solve reached {len(self.out_steps)} of {len(t_out)} output times",
                time=self._user_t(ts.getTime()), step=ts.getStepNumber(),
                reason=ts_reason(ts.getConvergedReason()))

    def replay(self, x: torch.Tensor, times: np.ndarray) -> torch.Tensor:
        """Step exactly through the recorded step ``times`` from state ``x`` (needs
        ``replay=True``); returns the final state (a view of the owned buffer)."""
        ts = self.ts
        self._replay_times = times
        self.t_out, self.out_steps, self.step_times = times[[0, -1]], [], []
        self.out = torch.empty((2, self.problem.numel), dtype=self.u.dtype, device=self.u.device)
        self.u.copy_(x.reshape(-1))
        self.U.stateIncrease()
        ts.setTime(float(times[0]))
        ts.setStepNumber(0)
        ts.setMaxTime(float(times[-1]))
        ts.setMaxSteps(len(times) - 1)
        ts.setEvaluationTimes([float(times[0]), float(times[-1])])
        ts.setTimeStep(float(times[1] - times[0]))
        self._run_forward()
        return self.u

    def stats(self) -> dict[str, int | str]:
        """Counts of the last forward solve (accepted and rejected steps, failed Newton
        solves, Newton and Krylov iterations: 0 for explicit methods) and the implicit
        Jacobian kind in use."""
        return {**self.last_stats, "jacobian": self._args["jacobian"]}

    def sibling(self, **changes) -> "Integrator":
        """Another integrator of the same problem and settings (kept and freed with this one)."""
        key = tuple(sorted(changes.items()))
        if key not in self.siblings:
            self.siblings[key] = Integrator(**{**self._args, **changes})
        return self.siblings[key]

    def _initial_step(self, t_out: np.ndarray) -> float:
        if self._option_step is not None:
            return self._option_step
        if self.step_size is not None:
            return float(self.step_size)
        gaps = np.diff(t_out)
        span = float(t_out[-1] - t_out[0])
        if self.adaptive:
            return min(float(gaps.min()), 1e-2 * span) if span > 0 else 1.0
        return float(gaps.min())

    def _solve(self, run) -> None:
        self._error = None
        self.views.clear()
        try:
            run()
        except BaseException as exc:
            if self.comm.getSize() > 1:
                abort_on_error(self.comm, self._error or exc)
            err, self._error = self._error, None
            if err is not None and err is not exc:
                raise err.with_traceback(err.__traceback__) from None
            if isinstance(exc, PETSc().Error):
                raise ConvergenceError(
                    f"PETSc failed: {_petsc_error_words(exc)}; try tighter tolerances, a smaller "
                    "step or an implicit method", time=self._user_t(self.ts.getTime()),
                    step=self.ts.getStepNumber()) from exc
            raise
        reason = self.ts.getConvergedReason()
        if reason < 0:
            words, hint = ts_reason(reason), ("try tighter tolerances, a smaller step, an implicit "
                                              "method or another preconditioner")
            if self.implicit is not None:
                words, hint = failure_detail(self.ts, reason)
            raise ConvergenceError(f"the time integration failed; {hint}",
                                   time=self._user_t(self.ts.getTime()),
                                   step=self.ts.getStepNumber(), reason=words)

    # ---- adjoint -------------------------------------------------------------------
    def set_cost_gradients(self) -> None:
        """Hand ``lam`` (and ``mu``) to PETSc as the adjoint variables."""
        self.L.stateIncrease()
        if self.M is not None:
            self.M.stateIncrease()
            self.ts.setCostGradients([self.L], [self.M])
        else:
            self.ts.setCostGradients([self.L])

    def adjoint(self, grads_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TSAdjointSolve back through the last forward, adding ``grads_out[k]`` at each
        output time. Returns (dL/dy0 flat, dL/dparams flat) as views of owned buffers."""
        g = grads_out.reshape(len(self.out_steps), -1)
        self.lam.copy_(g[-1])
        self.mu.zero_()
        self.set_cost_gradients()
        for k in range(len(self.out_steps) - 1, 0, -1):
            self.adjoint_steps(self.out_steps[k] - self.out_steps[k - 1])
            self.lam.add_(g[k - 1])
            self.L.stateIncrease()
        self.reduce_param_gradients()
        return self.lam, self.mu

    @contextmanager
    def _fresh_jacobians(self) -> Iterator[None]:
        """No Jacobian or preconditioner lagging during an implicit adjoint: PETSc's theta
        and ARKIMEX adjoints fetch each transposed Jacobian through the SNES, which would
        otherwise hand back a stale one (``snes_lag_*`` options are for forward solves)."""
        if self.implicit is None or all(self._options.get(key) is None for key in _LAG_OPTIONS):
            yield
            return
        snes = self.ts.getSNES()
        with self._options.applied(force={key: 1 for key in _LAG_OPTIONS[:2]}):
            snes.setFromOptions()
        try:
            yield
        finally:
            with self._options.applied():
                snes.setFromOptions()

    def adjoint_steps(self, nsteps: int) -> None:
        """TSAdjointSolve over the last ``nsteps`` steps not yet reversed. Steps that PETSc
        recomputes (solution-only trajectories) record their stage graphs on the way."""
        tape = self.tape
        if tape is not None:
            tape.recording = True
        with self._fresh_jacobians():
            try:
                self.ts.adjointSetSteps(nsteps)
                self._solve(self.ts.adjointSolve)
            finally:
                if tape is not None:
                    tape.recording = False
        if self.ts.getStepNumber() == 0:
            self._trajectory_dirty = False  # the adjoint has emptied the trajectory
            if tape is not None:
                tape.clear()

    def reduce_param_gradients(self) -> None:
        """On several ranks each holds its own block of ``mu`` (its part of ``(df/dp)^T
        lam``); sum the blocks so every rank has the whole gradient (one Allreduce)."""
        if self.M is not None and self.comm.getSize() > 1:
            from mpi4py import MPI

            host = self.mu.cpu()
            self.comm.tompi4py().Allreduce(MPI.IN_PLACE, host.numpy(), op=MPI.SUM)
            self.mu.copy_(host)

    def destroy(self) -> None:
        """Free the PETSc objects now (otherwise the garbage collector does)."""
        for sib in self.siblings.values():
            sib.destroy()
        self.siblings = {}
        if self.shells is not None:
            self.shells.destroy()
        if self.implicit is not None:
            self.implicit.destroy()
        self.ts.destroy()
        self.U.destroy()
        self.F.destroy()


# PETSc's "no limit" (PETSC_INT_MAX): the memory trajectory then sizes its stack from the
# span and step (fixed steps) or starts small and grows (adaptive); a large finite value
# would make it allocate a stack of that many entries up front.
_UNLIMITED_STEPS = int(np.iinfo(np.int32).max)


_LAG_OPTIONS = ("snes_lag_jacobian", "snes_lag_preconditioner",
                "snes_lag_jacobian_persists", "snes_lag_preconditioner_persists")


def _step_option(options: ScopedOptions) -> float | None:
    """``-<prefix>ts_time_step`` (or its old name ``ts_dt``) from the command line, else
    from the object's options dict: it sets the (initial) step as in PETSc, over ``step_size``."""
    value = options.get("ts_time_step", "ts_dt")
    return None if value is None else float(value)


def _petsc_error_words(exc) -> str:
    if getattr(exc, "ierr", None) == 72:
        return "a non-finite value (NaN or Inf) appeared"
    lines = [ln.split("] ", 1)[-1] for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else str(exc)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-10 * max(1.0, abs(a), abs(b))
