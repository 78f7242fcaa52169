"""One PETSc TS for a problem and a method: forward solves landing on output times, exact
replays of recorded steps, and the pieces an adjoint sweep needs.

An :class:`Integrator` is told *what to record* for an adjoint by a checkpoint policy
(:mod:`pnode.checkpoint`) and nothing else about it: ``trajectory`` is ``None`` (nothing:
forward solves and re-advances), ``"stages"`` (PETSc keeps each step's solution and
stages) or ``"solution"`` (solutions only, stages recomputed by PETSc in the backward
pass); ``record=`` and ``graph_bytes=`` on :meth:`Integrator.forward` choose the explicit stage graphs recorded
in the forward solve (:mod:`pnode.tape`). ``replay=True`` steps exactly through given
step times (no adaptivity). :class:`Setup` builds integrators of one problem.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from .errors import ConfigurationError, ConvergenceError, failure_detail, ts_reason
from .guard import CallbackGuard
from .implicit import ImplicitOperators
from .methods import Method
from .newton import Newton, NewtonControl, choose_test, initial_step, resolved
from .options import ScopedOptions
from .params import ParamBuffer
from .problem import build_problem
from .rhs_adjoint import AdjointShells
from .startup import PETSc
from .tape import StageTape
from .vec import FiniteWatch, ViewCache, as_vec

TRAJECTORIES = (None, "stages", "solution")


@dataclass
class Setup:
    """Everything that defines the integrators of one solve or one ``NeuralODE`` shape."""

    func: Callable
    implicit: Callable | None
    mass: object
    method: Method
    shape: tuple
    dtype: torch.dtype
    device: torch.device
    params: tuple
    sign: float
    rtol: float
    atol: float
    step_size: float | None
    options: ScopedOptions
    comm: object
    jacobian: str
    newton: Newton = Newton()
    jac: Callable | None = None

    def problem(self):
        """A fresh problem object (each integrator has its own time origin)."""
        return build_problem(self.func, self.implicit, self.mass, self.method, self.shape,
                             self.dtype, self.device, self.params, self.sign, self.jac)

    def newton_test(self) -> str:
        """The Newton stopping test of this setup's solves (:func:`pnode.newton.choose_test`)."""
        adaptive = (self.step_size is None and self.method.adaptive
                    and self.options.get("ts_adapt_type") != "none")
        return choose_test(self.newton, adaptive, self.options)

    def integrator(self, trajectory: str | None = None, replay: bool = False) -> "Integrator":
        return Integrator(self, trajectory, replay)


class Integrator:
    """Owns one TS (and its vectors) for a fixed problem shape; reusable across calls."""

    def __init__(self, setup: Setup, trajectory: str | None = None, replay: bool = False):
        if trajectory not in TRAJECTORIES:
            raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {trajectory!r}")
        self.setup, self.trajectory, self.replaying = setup, trajectory, replay
        self.problem = problem = setup.problem()
        self.method = method = setup.method
        self.comm = setup.comm
        self.guard = guard = CallbackGuard(self.comm)
        self.broken = False  # a solve failed: PETSc's state cannot be trusted, build anew
        self._owned: list = []  # destroyed with this object (its callbacks refer to it)
        self._finalizer = weakref.finalize(self, _destroy, self._owned)
        try:
            self._build(setup, trajectory, replay)
        except BaseException:
            self.destroy()
            raise

    def _build(self, setup: Setup, trajectory: str | None, replay: bool) -> None:
        problem, method, guard = self.problem, self.method, self.guard
        P = PETSc()
        n, dev, dt = problem.numel, problem.device, problem.dtype
        self.u = torch.zeros(n, dtype=dt, device=dev)
        self.U = as_vec(self.u, self.comm)
        self._f = torch.zeros(n, dtype=dt, device=dev)
        self.F = as_vec(self._f, self.comm)
        ts = self.ts = P.TS().create(self.comm)
        self.adopt(ts, self.U, self.F)
        ts.setProblemType(P.TS.ProblemType.NONLINEAR)
        ts.setType(method.ts_type)
        explicit = problem.explicit if method.implicit else problem
        if explicit is not None:
            ts.setRHSFunction(guard.wrap(self._rhs_cb), self.F)
        ts.setExactFinalTime(P.TS.ExactFinalTime.MATCHSTEP)
        fixed = setup.step_size is not None or not method.adaptive
        # fixed steps cannot shrink a step whose Newton solve failed; adaptive ones retry
        # with a smaller step, bounded by ts_max_reject consecutive rejections (PETSc's
        # failure count is cumulative over the solve, so a finite one ends long solves)
        ts.setMaxSNESFailures(1 if method.implicit and fixed else -1)
        ts.setErrorIfStepFails(False)
        ts.setMonitor(guard.wrap(self._monitor_cb))
        ts.setPreStep(guard.wrap(self._prestep_cb))
        defaults = dict(method.options)
        if setup.step_size is None and method.adaptive:
            defaults["ts_adapt_type"] = "basic"
            ts.setTolerances(rtol=setup.rtol, atol=setup.atol)
        else:
            defaults["ts_adapt_type"] = "none"
        self.params = ParamBuffer(problem.params)
        self.views = ViewCache()
        self.implicit = self.newton = None
        if method.implicit:
            test = setup.newton_test()
            # Rosenbrock-W stages are linear solves on the Jacobian of each step (no Newton)
            settings = resolved(setup.newton, test) if method.ts_type != "rosw" else replace(setup.newton, reuse=False)
            self.newton = NewtonControl(settings, test, setup.rtol, setup.atol, n, self.comm, dt, dev, self.views)
            self.implicit = ImplicitOperators(problem, self.comm, self.params, guard, setup.jacobian,
                                              self.views, self.newton)
            self.adopt(self.implicit)
            defaults.update(self.implicit.solver_defaults)
            if test == "wrms":
                defaults["snes_linesearch_type"] = "basic"  # modified Newton: the full update
            defaults.update(method.solver_options)
            self.implicit.attach(ts, self.F)
        self.tape = StageTape(self.comm) if trajectory is not None and not method.implicit else None
        self._in_forward = False
        self.shells = None
        if trajectory is not None and explicit is not None:
            self.shells = AdjointShells(explicit, self.comm, self.params, self.tape, self.views, guard)
            self.adopt(self.shells)
            ts.setRHSJacobian(guard.wrap(self.shells.at), self.shells.J, self.shells.J)
            ts.setRHSJacobianP(guard.wrap(self.shells.at_p), self.shells.Jp)
        self._trajectory = {}
        if trajectory is not None:
            ts.setSaveTrajectory()
            self._trajectory = {"ts_trajectory_type": "memory",
                                "ts_trajectory_solution_only": trajectory == "solution"}
        self._options = setup.options.with_defaults(defaults)
        self._force = {"ts_adapt_type": "none"} if replay else None
        self._configure()
        self._trajectory_dirty = self._trajectory_grown = False
        self._option_step = _step_option(setup.options)
        self._max_steps = _max_steps_option(setup.options)
        self.adaptive = not replay and self._options.get("ts_adapt_type") != "none"
        self._min_step_option = _positive(self._options, ("ts_adapt_dt_min",))
        self._adjoint_rtol = _positive(self._options, ("adjoint_ksp_rtol",)) if self.implicit is not None else None
        self._min_step = 0.0
        self._finite = FiniteWatch()
        self._collective = self.comm.getSize() > 1
        self.out: torch.Tensor | None = None
        self.t_out: np.ndarray | None = None
        self.out_steps: list[int] = []
        self.step_times: list[float] = []
        self._times: np.ndarray | None = None
        self._on_step = None
        self.last_stats: dict = {}

    def _configure(self) -> None:
        """setFromOptions with this object's options. A TSTrajectory reads its options
        without the TS's prefix, and with no type set it writes TS-data-* folders (type
        basic): pnode always sets memory, for this call only. Then the WRMS Newton test
        (:mod:`pnode.newton`) replaces PETSc's, if chosen."""
        with ScopedOptions("", {}).applied(force=self._trajectory):
            self._options.apply(self.ts, force=self._force, until_solved=self.implicit is not None)
        if self.newton is not None and self.newton.test == "wrms":
            self.ts.getSNES().setConvergenceTest(self.guard.wrap(self.newton.converged))
        self._ksp_tolerances = self.ts.getSNES().getKSP().getTolerances() if self.implicit is not None else None

    def _fresh_trajectory(self) -> None:
        """A forward solve needs an empty trajectory; one left by a forward solve that was
        never differentiated is replaced, and so is one whose stack grew.

        PETSc's memory trajectory sizes its stack at each solve's set-up from the span and
        the first step (10000 entries for adaptive steps) and doubles it when a solve takes
        more steps. The next set-up shrinks the size again but keeps the grown container,
        and the doubling after that copies only the first entries: stored states are lost
        and destroying the trajectory then crashes (PETSc 3.26.1, trajmemory.c: StackInit,
        StackResize, StackDestroy). So a trajectory that may have grown is not reused."""
        if self._trajectory and (self._trajectory_dirty or self._trajectory_grown):
            self.ts.removeTrajectory()
            self.ts.setSaveTrajectory()
            self._configure()
        self._trajectory_dirty = bool(self._trajectory)
        self._trajectory_grown = False

    def _stack_capacity(self) -> int:
        """The stack size PETSc's memory trajectory gives the solve about to start."""
        ts = self.ts
        if self.adaptive:
            size = ts.getMaxSteps() if ts.getMaxSteps() < _UNLIMITED_STEPS else 10000
        else:
            total = min(ts.getMaxSteps(), int(np.ceil((ts.getMaxTime() - ts.getTime()) / ts.getTimeStep())))
            size = total if self.trajectory == "solution" else total - 1
        return max(size, 1)

    # ---- callbacks (guarded: an exception comes back from the solve as itself) ------
    def _rhs_cb(self, ts, t, X, F):
        prob = self.problem
        x = self.views.get(X, "r", prob.shape)
        tape = self.tape
        f = tape.record(t, x, prob.rhs) if tape is not None and tape.recording else prob.rhs(t, x)
        self.views.get(F, "rw", prob.shape).copy_(f)
        F.stateIncrease()

    def _prestep_cb(self, ts):
        """Land on the next output time. Replays take the recorded step. Otherwise the
        step (the user's fixed one, restored after an output shortened it, or TSAdapt's)
        is clipped to the next output time as PETSc clips the last step before its final
        time: to the rest if it would leave less than 1% of a step, to half the rest if
        under two steps. (PETSc's own evaluation times are not used: resetting them with
        another number of times frees their arrays and then writes into them, PETSc
        3.26.1, TSSetEvaluationTimes; they would also keep a copy of the state per output.)"""
        if self._times is not None:
            k = ts.getStepNumber()
            ts.setTimeStep(float(self._times[k + 1] - self._times[k]))
            return
        k = len(self.out_steps)
        if k >= len(self.t_out):
            return
        dt = self._fixed_step if not self.adaptive else ts.getTimeStep()
        gap = float(self.t_out[k] - ts.getTime())
        ts.setTimeStep(gap if dt * 1.01 >= gap else gap / 2 if dt * 2 > gap else dt)

    def _monitor_cb(self, ts, step, t, X):
        if not self._in_forward:  # PETSc also monitors the steps it recomputes for the adjoint
            return
        k = len(self.out_steps)
        times = self.step_times
        if times and t <= times[-1]:  # PETSc monitors a failed solve's last state again
            return
        if step > 0 and not self._finite_now():
            raise self._non_finite("the state became non-finite (NaN or Inf)", t, step, k - 1)
        on_output = k < len(self.t_out) and _close(t, self.t_out[k])
        h_min = max(self._min_step, 1e-12 * abs(t))
        if step > 0 and self.adaptive and not on_output and t - times[-1] < h_min:
            raise ConvergenceError(
                f"the step size collapsed to {t - times[-1]:.3e} (below the minimum "
                f"{h_min:.3e}, -ts_adapt_dt_min; by default 1e-14 of the span or 1e-12 of the time "
                "since t[0], where time steps lose their accuracy in float64): the "
                "solution probably blows up here; check the problem, loosen rtol/atol or use an "
                "implicit method", time=self._user_t(t), step=step, collective=True)
        times.append(t)
        if on_output:
            self.out[k].view(-1).copy_(self.u)
            self.out_steps.append(step)
            if not self._finite.settle():
                raise self._non_finite("the state became non-finite (NaN or Inf) before this output time",
                                       t, step, k - 1)
        if self._on_step is not None:
            self._on_step(step, self.u, _close(t, self.t_out[-1]))

    def _non_finite(self, message: str, t: float, step: int, good: int) -> ConvergenceError:
        """The error of a non-finite state at ``(t, step)``, carrying the last output
        ``good`` reached with a finite state (checked there) as ``last_good``."""
        err = ConvergenceError(message, time=self._user_t(t), step=step, collective=self._collective)
        if good >= 0:
            err.last_good = (self._user_t(float(self.t_out[good])), self.out[good].detach().clone())
        return err

    def _finite_now(self) -> bool:
        if self._collective:  # the verdict of every rank (VecSum is collective)
            return abs(self.U.sum()) < np.inf
        return self._finite.check(self.u)

    def _user_t(self, s: float) -> float:
        return self.problem.origin + self.problem.sign * s

    def _where(self) -> dict:
        return {"time": self._user_t(self.ts.getTime()), "step": self.ts.getStepNumber()}

    def _run(self, solve: Callable[[], None]) -> None:
        """Run a PETSc solve under the guard; any failure leaves this integrator broken."""
        self.views.clear()
        try:
            self.guard.run(solve, self._where)
        except BaseException:
            self.broken = True
            raise
        reason = self.ts.getConvergedReason()
        if reason < 0:
            self.broken = True
            words, hint = failure_detail(self.ts, reason)
            raise ConvergenceError(f"the time integration failed; {hint}", reason=words,
                                   collective=True, **self._where())

    def _run_forward(self, record: bool, graph_bytes: int | None) -> None:
        """TSSolve from the state in ``U`` into an empty trajectory; with ``record``,
        explicit methods record their stage graphs (at most ``graph_bytes``; None: no cap)."""
        self._fresh_trajectory()
        tape = self.tape
        if tape is not None:
            tape.clear()
            tape.max_bytes = graph_bytes
            tape.entry_bytes = None
            tape.recording = record
        capacity = self._stack_capacity() if self._trajectory else None
        if self.newton is not None:
            self.newton.start()
        if self.implicit is not None:
            self.implicit.start(self.ts, record=bool(self._trajectory))
        self._in_forward = True
        try:
            with self._options.solving(self.ts, force=self._force):
                self._run(lambda: self.ts.solve(self.U))
        finally:
            self._in_forward = False
            if tape is not None:
                tape.recording = False
            if capacity is not None:  # entries pushed: steps 0..n-1 (solutions) or 1..n-1 (stages)
                pushed = self.ts.getStepNumber() - (self.trajectory == "stages")
                self._trajectory_grown = pushed > capacity

    # ---- forward -------------------------------------------------------------------
    def forward(self, y0: torch.Tensor, origin: float, t_out: np.ndarray, out: torch.Tensor, *,
                record: bool = False, graph_bytes: int | None = None,
                on_step: Callable | None = None) -> None:
        """Solve from ``t_out[0]`` to ``t_out[-1]`` (PETSc time, measured from the user time
        ``origin``), writing ``out[k]`` and recording the accepted step times in
        ``step_times``. ``record``/``graph_bytes``: stage graphs for the adjoint (explicit
        methods with a trajectory). ``on_step(step, state, last)`` is called after each
        accepted step (and at step 0) with the flat state."""
        if self.replaying:
            raise RuntimeError("a replaying integrator only replays recorded steps")
        ts = self.ts
        self.problem.origin = origin
        self.t_out, self.out, self.out_steps = t_out, out, []
        self.step_times, self._times, self._on_step = [], None, on_step
        self._fixed_step = self._initial_step(t_out, y0)
        span = float(t_out[-1] - t_out[0])
        self._min_step = self._min_step_option if self._min_step_option is not None else 1e-14 * span
        self.u.copy_(y0.reshape(-1))
        self.U.stateIncrease()
        ts.setTime(float(t_out[0]))
        ts.setStepNumber(0)
        ts.setMaxTime(float(t_out[-1]))
        ts.setMaxSteps(self._max_steps)
        ts.setTimeStep(self._fixed_step)
        try:
            self._run_forward(record, graph_bytes)
        finally:
            # the output becomes the autograd node's result, which refers to the call that
            # refers to this integrator: keeping it would make a cycle Python cannot free
            self._on_step, self.out = None, None
        self.last_stats = {"steps": ts.getStepNumber(), "rejected": ts.getStepRejections(),
                           "newton_failures": ts.getSNESFailures(),
                           "newton_iterations": ts.getSNESIterations(),
                           "krylov_iterations": ts.getKSPIterations()}
        if self.newton is not None:
            self.last_stats.update(jacobian_evaluations=self.newton.evaluations,
                                   jacobian_retries=self.newton.retries, newton_test=self.newton.test)
        if len(self.out_steps) != len(t_out):
            self.broken = True
            limit = (f"; it stopped after ts_max_steps={self._max_steps} steps"
                     if ts.getStepNumber() >= self._max_steps else "")
            raise ConvergenceError(
                f"the solve reached {len(self.out_steps)} of {len(t_out)} output times{limit}",
                time=self._user_t(ts.getTime()), step=ts.getStepNumber(),
                reason=ts_reason(ts.getConvergedReason()), collective=True)

    def replay(self, x: torch.Tensor, origin: float, times: np.ndarray) -> torch.Tensor:
        """Step exactly through the recorded step ``times`` from state ``x`` (needs
        ``replay=True``), recording stage graphs if there is a trajectory; returns the final
        state (a view of the owned buffer)."""
        if not self.replaying:
            raise RuntimeError("replay needs an integrator made with replay=True")
        ts = self.ts
        self.problem.origin = origin
        self._times = times
        self.t_out, self.out_steps, self.step_times, self._on_step = times[[0, -1]], [], [], None
        self.out = torch.empty((2, self.problem.numel), dtype=self.u.dtype, device=self.u.device)
        self.u.copy_(x.reshape(-1))
        self.U.stateIncrease()
        ts.setTime(float(times[0]))
        ts.setStepNumber(0)
        ts.setMaxTime(float(times[-1]))
        ts.setMaxSteps(len(times) - 1)
        ts.setTimeStep(float(times[1] - times[0]))
        self._run_forward(self.trajectory is not None, None)
        return self.u

    def stats(self) -> dict[str, int | str]:
        """Counts of the last forward solve (accepted and rejected steps, failed Newton
        solves, Newton and Krylov iterations: 0 for explicit methods; for implicit methods
        also ``jacobian_evaluations`` of ``dg/du``, ``jacobian_retries``, Newton solves
        that went on with a fresh Jacobian, and the ``newton_test``), the TS type and
        sub-type that ran, the implicit Jacobian kind in use and, for explicit methods with a
        trajectory, the stage graphs kept for the adjoint (``stage_graphs``, and
        ``stage_graph_bytes`` each when a cap made pnode measure them)."""
        stats = {**self.last_stats, "ts_type": self.ts.getType(), "method": self.method.name,
                 "ts_subtype": _subtype(self.ts, self.method), "jacobian": self.setup.jacobian}
        if self.tape is not None:
            stats.update(stage_graphs=len(self.tape.entries), stage_graph_bytes=self.tape.entry_bytes)
        return stats

    def _initial_step(self, t_out: np.ndarray, y0: torch.Tensor) -> float:
        if self._option_step is not None:
            return self._option_step
        if self.setup.step_size is not None:
            return float(self.setup.step_size)
        gaps = np.diff(t_out)
        span = float(t_out[-1] - t_out[0])
        if self.adaptive:
            step = min(float(gaps.min()), 1e-2 * span) if span > 0 else 1.0
            return min(step, self._stiff_start(y0)) if self._stiff_start_applies() else step
        return float(gaps.min())

    def _stiff_start_applies(self) -> bool:
        """Adaptive stiff solves under the WRMS Newton test start from
        :func:`pnode.newton.initial_step` (an identity mass: ``y'`` is known)."""
        return self.newton is not None and self.newton.test == "wrms" and self.problem.mass is None

    def _stiff_start(self, y0: torch.Tensor) -> float:
        prob = self.problem

        def rhs(s: float, y: torch.Tensor) -> torch.Tensor:
            y = y.view(prob.shape)
            f = prob.implicit.rhs(s, y)
            return (f if prob.explicit is None else f + prob.explicit.rhs(s, y)).reshape(-1)

        return initial_step(rhs, y0.detach().reshape(-1).clone(), self.setup.rtol, self.setup.atol, 2, self.comm)

    # ---- adjoint -------------------------------------------------------------------
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

    @contextmanager
    def _adjoint_ksp_tolerances(self) -> Iterator[None]:
        """The adjoint's linear solves at ``adjoint_ksp_rtol`` (a pnode option), else at the
        KSP tolerances the options set, and the forward's tolerances back after it.

        Eisenstat-Walker (``snes_ksp_ew``) sets the KSP's ``rtol`` before every KSP solve
        from the state of the last Newton solve, and PETSc's implicit adjoints solve with
        that KSP: EW is switched off for the adjoint (and back on after it)."""
        snes = self.ts.getSNES() if self._ksp_tolerances is not None else None
        ew = snes is not None and snes.getUseEW()
        if not ew and self._adjoint_rtol is None:
            yield
            return
        ksp = snes.getKSP()
        forward = ksp.getTolerances()
        rtol, atol, divtol, max_it = self._ksp_tolerances
        if ew:
            snes.setUseEW(False)
        ksp.setTolerances(rtol if self._adjoint_rtol is None else self._adjoint_rtol, atol, divtol, max_it)
        try:
            yield
        finally:
            ksp.setTolerances(*forward)
            if ew:
                snes.setUseEW(True)

    def adjoint_steps(self, nsteps: int) -> None:
        """TSAdjointSolve over the last ``nsteps`` steps not yet reversed. Steps that PETSc
        recomputes (solution-only trajectories) record their stage graphs on the way."""
        tape = self.tape
        if tape is not None:
            tape.recording = True
            tape.max_bytes = None
        exact = self.newton.exact_jacobians() if self.newton is not None else nullcontext()
        with self._fresh_jacobians(), self._adjoint_ksp_tolerances(), exact:
            try:
                self.ts.adjointSetSteps(nsteps)
                self._run(self.ts.adjointSolve)
            finally:
                if tape is not None:
                    tape.recording = False
        if self.ts.getStepNumber() == 0:
            self._trajectory_dirty = False  # the adjoint has emptied the trajectory
            if tape is not None:
                tape.clear()

    def adopt(self, *objects) -> None:
        """Destroy ``objects`` (PETSc objects, or anything with ``destroy()``) with this one."""
        self._owned.extend(obj for obj in objects if obj is not None)

    def destroy(self) -> None:
        """Free the PETSc objects now (otherwise the garbage collector does)."""
        self._finalizer()


def _destroy(objects: list) -> None:
    for obj in objects:
        obj.destroy()


_LAG_OPTIONS = ("snes_lag_jacobian", "snes_lag_preconditioner",
                "snes_lag_jacobian_persists", "snes_lag_preconditioner_persists")

# PETSc's "no limit" (PETSC_INT_MAX): the memory trajectory then sizes its stack from the
# span and step (fixed steps) or starts small and grows (adaptive); a large finite value
# would make it allocate a stack of that many entries up front.
_UNLIMITED_STEPS = int(np.iinfo(np.int32).max)
_ROSW_DEFAULT = "ra34pw2"  # TSROSW's default tableau (PETSc 3.26)


def _positive(options: ScopedOptions, names: tuple[str, ...], kind=float):
    value = options.get(*names)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not (number > 0 and np.isfinite(number)):
        raise ConfigurationError(f"option {names[0]} must be a positive finite number, got {value!r}")
    return number


def _step_option(options: ScopedOptions) -> float | None:
    """``-<prefix>ts_time_step`` (or its old name ``ts_dt``) from the command line, else
    from the object's options dict: it sets the (initial) step as in PETSc, over ``step_size``."""
    return _positive(options, ("ts_time_step", "ts_dt"))


def _max_steps_option(options: ScopedOptions) -> int:
    """The user's ``ts_max_steps`` (command line or dict), else no limit."""
    value = _positive(options, ("ts_max_steps",), int)
    return _UNLIMITED_STEPS if value is None else value


def _subtype(ts, method) -> str | None:
    """The tableau that ran. petsc4py has no getter for TSROSW's type: that one is the
    type pnode set (``ts_rosw_type`` of the options or command line), else PETSc's default."""
    getter = {"rk": "getRKType", "arkimex": "getARKIMEXType"}.get(ts.getType())
    if getter:
        return getattr(ts, getter)()
    return method.options.get("ts_rosw_type", _ROSW_DEFAULT) if ts.getType() == "rosw" else None


def _close(a: float, b: float) -> bool:
    """Whether a step ending at ``a`` landed on the output time ``b`` (PETSc clips the step
    to ``b - t``, which lands within an ulp or two of ``b``)."""
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))
