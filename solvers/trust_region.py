"""A trust-region method with limited-memory SR1 curvature, all of it PETSc's.

Public API (``pnode.solvers``)::

    opt = TrustRegion(model, comm=None, memory=10, ksp_type="stcg", settings=TrustRegionSettings(),
                      options_prefix="tr_", options=None, max_krylov=50)
    loss = opt.step(closure)         # one trust-region iteration (torch.optim-like)
    opt.radius, opt.history, opt.state_dict(), opt.load_state_dict(state)

The curvature is PETSc's ``MATLMVMSR1`` on the distributed parameter Vec (its pairs split
over the ranks like the Vec); the subproblem ``min g.s + s.Bs/2, ||s|| <= radius`` is
solved by a PETSc Krylov trust-region method (``KSPSTCG``, ``KSPGLTR`` or ``KSPNASH``,
PC none). ``KSPCGSetRadius`` is not wrapped in petsc4py: pnode sets
``-<prefix>ksp_cg_radius`` in the options database (over the command line) before each
``KSPSetFromOptions``. The defaults are UTOPIA's (:class:`TrustRegionSettings`, the
table in docs/solvers.md). A step is accepted when ``rho = actual / predicted reduction``
exceeds ``rho_tol``; the radius then shrinks (``rho < eta1``) or grows (``rho > eta2``)
by ``gamma1``/``gamma2``. The pair ``(s, y)`` of an accepted step updates the L-SR1
matrix. A trial point whose loss or gradient is not finite is rejected (rho = 0); a
non-finite loss at the iterate raises :class:`NonFiniteObjectiveError`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import torch

from pnode.comm import allreduce
from pnode.errors import ConfigurationError
from pnode.options import ScopedOptions
from pnode.params import ParamVec
from pnode.startup import PETSc

from .monitor import History
from .objective import Evaluator, NonFiniteObjectiveError, Objective, as_param_vec
from .tao import restore_iterate

KSP_TYPES = ("stcg", "gltr", "nash")
SAME_POINT = 1e-10  # relative distance below which a point repeats the last one


@dataclass(frozen=True)
class TrustRegionSettings:
    """Trust-region constants (UTOPIA's defaults)."""

    delta0: float = 1.0  # initial radius
    gamma1: float = 0.25  # shrink factor
    gamma2: float = 2.5  # growth factor
    eta1: float = 0.05  # rho below: shrink
    eta2: float = 0.9  # rho above: grow
    rho_tol: float = 0.005  # rho above: accept the step
    delta_min: float = 1e-14
    delta_max: float = 1e14

    def __post_init__(self):
        if not (0 < self.gamma1 < 1 < self.gamma2):
            raise ConfigurationError(f"need 0 < gamma1 < 1 < gamma2, got {self.gamma1}, {self.gamma2}")
        if not (0 <= self.rho_tol <= self.eta1 < self.eta2 < 1):
            raise ConfigurationError(
                f"need 0 <= rho_tol <= eta1 < eta2 < 1, got {self.rho_tol}, {self.eta1}, {self.eta2}")
        if not (0 < self.delta_min <= self.delta0 <= self.delta_max):
            raise ConfigurationError(
                f"need 0 < delta_min <= delta0 <= delta_max, got {self.delta_min}, {self.delta0}, {self.delta_max}")

    def updated_radius(self, rho: float, radius: float) -> float:
        """The radius after a step with ratio ``rho``."""
        if rho < self.eta1:
            return max(self.gamma1 * radius, self.delta_min)
        if rho > self.eta2:
            return min(self.gamma2 * radius, self.delta_max)
        return radius


def ratio(actual: float, predicted: float) -> float:
    """``actual / predicted`` reduction; 0 for a non-finite or non-positive prediction or
    a non-finite loss (the step is then rejected)."""
    if not (math.isfinite(actual) and math.isfinite(predicted)) or predicted <= 0:
        return 0.0
    return actual / predicted


class SR1Subproblem:
    """L-SR1 curvature (``MATLMVMSR1``) and a Krylov trust-region solver on one layout.

    ``update(x, g)`` feeds an accepted iterate and its gradient to the matrix;
    ``solve(g, radius, s)`` writes a step with ``||s|| <= radius`` into ``s`` and returns
    the predicted reduction ``-(g.s + s.Bs/2)``. Options (``-<prefix>ksp_type gltr``,
    ``-<prefix>mat_lmvm_hist_size 20``...) are read under ``options.prefix``.
    """

    def __init__(self, pvec: ParamVec, memory: int = 10, ksp_type: str = "stcg", max_krylov: int = 50,
                 options: ScopedOptions | None = None):
        if ksp_type not in KSP_TYPES:
            raise ConfigurationError(f"the trust-region subproblem needs one of {KSP_TYPES}, got {ksp_type!r}")
        if int(memory) < 1:
            raise ConfigurationError(f"memory must be at least 1 pair, got {memory}")
        P = PETSc()
        self.pvec = pvec
        opts = options if options is not None else ScopedOptions()
        self.opts = opts.with_defaults({"ksp_type": ksp_type, "pc_type": "none", "ksp_max_it": int(max_krylov),
                                        "mat_lmvm_hist_size": int(memory)})
        n = pvec.counts[pvec.mpi.Get_rank()]
        self.B = P.Mat().create(pvec.comm)
        self.B.setType(P.Mat.Type.LMVMSR1)
        self.B.setSizes(((n, pvec.numel), (n, pvec.numel)))
        self.opts.apply(self.B)
        self.B.setUp()
        self.ksp = P.KSP().create(pvec.comm)
        self.ksp.setOperators(self.B)
        self._rhs, self._Bs = pvec.duplicate(), pvec.duplicate()
        self.updates = 0
        self.resets = 0  # memory resets after non-finite products
        # this rank's blocks of the last memory + 1 points: enough to rebuild the pairs
        self.points: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=int(memory) + 1)

    def update(self, x, g) -> None:
        """An accepted point and its gradient (the first call only records them). A point
        within rounding of the last one is ignored: its pair would be rounding noise, and
        SR1's skip test on noise decides differently on different numbers of ranks (RMTR
        restricts a coarse level's last point back onto itself when only its correction
        was accepted above)."""
        if self.points:
            diff = self.pvec.local_of(x, "r") - self.points[-1][0]
            if allreduce(float(diff @ diff), "sum", self.pvec.mpi) ** 0.5 <= SAME_POINT * max(1.0, x.norm()):
                return
        self.B.updateLMVM(x, g)
        self.updates += 1
        self.points.append((self.pvec.local_of(x, "r").clone(), self.pvec.local_of(g, "r").clone()))

    def reset(self) -> None:
        self.B.resetLMVM()
        self.updates = 0
        self.points.clear()

    def state_dict(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The recorded points, whole (one all-gather each)."""
        return [(self.pvec.to_full(self._vec(x, self._rhs)).cpu(), self.pvec.to_full(self._vec(g, self._Bs)).cpu())
                for x, g in self.points]

    def load_state_dict(self, points) -> None:
        """Rebuild the matrix by replaying the points (the same pairs unless SR1 skipped an
        update among them, in which case older pairs it held are lost)."""
        self.reset()
        x, g = self.pvec.duplicate(), self.pvec.duplicate()
        for xf, gf in points:
            self._vec(xf[self.pvec.start:self.pvec.stop], x)
            self._vec(gf[self.pvec.start:self.pvec.stop], g)
            self.update(x, g)
        x.destroy()
        g.destroy()

    def _vec(self, local: torch.Tensor, vec):
        self.pvec.local_of(vec).copy_(local)
        vec.stateIncrease()
        return vec

    def product(self, s, out) -> None:
        """``out = B s``."""
        self.B.mult(s, out)

    def solve(self, g, radius: float, s) -> float:
        """A step of length at most ``radius`` into ``s``; the predicted reduction.

        PETSc's SR1 accepts an update whose denominator ``s.(y - Bs)`` is exactly zero (a
        pair the matrix already satisfies) and its products become NaN: the memory is then
        reset to the last point and the step solved again with ``B = J0``."""
        predicted = self._solve(g, radius, s)
        if not math.isfinite(predicted) and self.points:
            self.resets += 1
            x_last, g_last = self.points[-1]
            x, gl = self.pvec.duplicate(), self.pvec.duplicate()
            self.load_state_dict([(self.pvec.to_full(self._vec(x_last, x)), self.pvec.to_full(self._vec(g_last, gl)))])
            x.destroy()
            gl.destroy()
            predicted = self._solve(g, radius, s)
        return predicted

    def _solve(self, g, radius: float, s) -> float:
        self.opts.apply(self.ksp, force={"ksp_cg_radius": float(radius)})
        g.copy(self._rhs)
        self._rhs.scale(-1.0)
        s.zeroEntries()
        self.ksp.solve(self._rhs, s)
        norm = s.norm()
        if norm > radius:  # the Krylov solvers stop on the boundary up to rounding
            s.scale(radius / norm)
        self.B.mult(s, self._Bs)
        return -(g.dot(s) + 0.5 * s.dot(self._Bs))

    def destroy(self) -> None:
        for obj in (self.ksp, self.B, self._rhs, self._Bs):
            obj.destroy()


class TrustRegionCore:
    """The trust-region iteration on one layout: the iterate, its loss and gradient, the
    radius and an :class:`SR1Subproblem`; shared by :class:`TrustRegion` and every level
    of ``RMTR``.

    The function minimised is ``m(x) = f(x) + <shift, x - anchor>`` (no shift: ``f``
    itself; RMTR's coarse models set one with :meth:`set_model`). ``evaluate(X, G)``
    returns ``f(X)`` and writes ``grad f(X)`` into ``G``; the L-SR1 pairs are those of
    ``f`` (the shift has no curvature), so they stay valid when the shift changes.
    """

    def __init__(self, pvec: ParamVec, sub: SR1Subproblem, settings: TrustRegionSettings):
        self.pvec, self.sub, self.settings = pvec, sub, settings
        self.radius = settings.delta0
        self.x, self.g = pvec.pull(pvec.duplicate()), pvec.duplicate()
        self.loss = math.nan
        self.shift = self.anchor = None
        self._offset = 0.0  # <shift, anchor>
        self._trial, self._trial_g, self._s, self._gm = (pvec.duplicate() for _ in range(4))
        self.last: dict[str, Any] = {}

    def set_model(self, shift=None, anchor=None) -> None:
        """Minimise ``f + <shift, x - anchor>`` from now on (None: ``f``). The vectors are
        copied."""
        if shift is None:
            self.shift = self.anchor = None
            self._offset = 0.0
            return
        if self.shift is None:
            self.shift, self.anchor = self.pvec.duplicate(), self.pvec.duplicate()
        shift.copy(self.shift)
        anchor.copy(self.anchor)
        self._offset = self.shift.dot(self.anchor)

    def model_value(self, loss: float, X) -> float:
        """``m(X)`` from ``f(X) = loss``."""
        return loss if self.shift is None else loss + self.shift.dot(X) - self._offset

    def model_gradient(self):
        """``grad m`` at the iterate (a Vec owned by the core)."""
        if self.shift is None:
            return self.g
        self.g.copy(self._gm)
        self._gm.axpy(1.0, self.shift)
        return self._gm

    def start(self, evaluate: Callable) -> float:
        """Evaluate ``f`` and its gradient at the iterate (raises
        :class:`NonFiniteObjectiveError` for a non-finite one); the point feeds the SR1
        matrix."""
        self.loss = evaluate(self.x, self.g)
        self.sub.update(self.x, self.g)
        return self.loss

    def iterate(self, evaluate: Callable, bound: float = math.inf) -> dict[str, Any]:
        """One trust-region iteration with the radius capped at ``bound``; the report
        (``rho``, ``accepted``, ``predicted``, ``step_norm``, ``radius``) is also
        :attr:`last`."""
        radius = min(self.radius, bound)
        predicted = self.sub.solve(self.model_gradient(), radius, self._s)
        return self.try_step(self._s, predicted, evaluate, radius)

    def try_step(self, s, predicted: float, evaluate: Callable, radius: float) -> dict[str, Any]:
        """Evaluate ``x + s``, accept it when ``rho = (m(x) - m(x + s)) / predicted``
        exceeds ``rho_tol`` (the pair then updates the SR1 matrix) and update the radius
        from ``radius``. A non-finite trial loss or gradient gives ``rho = 0``."""
        self.x.copy(self._trial)
        self._trial.axpy(1.0, s)
        try:
            trial_loss = evaluate(self._trial, self._trial_g)
        except NonFiniteObjectiveError:
            trial_loss = math.nan
        actual = self.model_value(self.loss, self.x) - self.model_value(trial_loss, self._trial)
        rho = ratio(actual, predicted)
        accepted = rho > self.settings.rho_tol
        if accepted:
            self._trial.copy(self.x)
            self._trial_g.copy(self.g)
            self.loss = trial_loss
            self.sub.update(self.x, self.g)
        self.radius = self.settings.updated_radius(rho, radius)
        self.last = {"rho": rho, "accepted": accepted, "predicted": predicted, "step_norm": s.norm(),
                     "radius": radius}
        return self.last

    def destroy(self) -> None:
        self.sub.destroy()
        for v in (self.x, self.g, self._trial, self._trial_g, self._s, self._gm, self.shift, self.anchor):
            if v is not None:
                v.destroy()


class TrustRegion:
    """A single-level L-SR1 trust region used like a torch optimiser.

    ``step(closure)`` evaluates the closure at the current iterate (unless the same
    closure already did at that point), solves the subproblem, evaluates the trial point
    (loss and gradient) and accepts or rejects it; the model holds the iterate after the
    step. The closure returns this rank's loss (``Objective`` conventions; a
    torch.optim-style closure that calls ``backward`` works too).
    """

    def __init__(self, params, *, comm=None, memory: int = 10, ksp_type: str = "stcg",
                 settings: TrustRegionSettings | None = None, options_prefix: str | None = None,
                 options: Mapping[str, Any] | None = None, max_krylov: int = 50, reduce: str = "sum"):
        self.pvec = as_param_vec(params, comm)
        settings = settings if settings is not None else TrustRegionSettings()
        if not isinstance(settings, TrustRegionSettings):
            raise ConfigurationError(f"settings must be a TrustRegionSettings, got {type(settings).__name__}")
        sub = SR1Subproblem(self.pvec, memory, ksp_type, max_krylov, ScopedOptions(options_prefix, options))
        self.core = TrustRegionCore(self.pvec, sub, settings)
        self.reduce = reduce
        self.evaluator: Evaluator | None = None
        self.history = History()
        self.iterations = 0
        self._closure: Callable | None = None

    @property
    def sub(self) -> SR1Subproblem:
        return self.core.sub

    @property
    def settings(self) -> TrustRegionSettings:
        return self.core.settings

    @property
    def radius(self) -> float:
        return self.core.radius

    @property
    def last(self) -> dict[str, Any]:
        return self.core.last

    def _evaluator(self, closure: Callable) -> Evaluator:
        if self.evaluator is None or self.evaluator.objective.closure is not closure:
            self.evaluator = rebind(self.evaluator, Objective(closure, reduce=self.reduce), self.pvec)
        return self.evaluator

    def _current(self, closure: Callable) -> float:
        """Loss and gradient at the iterate (reused when the closure is the one that gave them)."""
        ev = self._evaluator(closure)
        core = self.core
        if closure is not self._closure or not math.isfinite(core.loss):
            self.pvec.pull(core.x)  # the model may have been changed by the caller
            core.loss = ev.value_gradient(core.x, core.g)
            self._closure = closure
            if self.sub.updates == 0:
                self.sub.update(core.x, core.g)
            if not len(self.history):
                self.history.append(0, core.loss, core.g.norm(), self.radius, ev.gradients)
        return core.loss

    def step(self, closure: Callable[[], torch.Tensor]) -> float:
        """One trust-region iteration; returns the loss at the iterate after it."""
        if not callable(closure):
            raise ConfigurationError("step() needs a closure returning the loss")
        self._current(closure)
        ev, core = self.evaluator, self.core
        core.iterate(ev.value_gradient)
        ev.push(core.x)  # a rejected trial leaves the model at the iterate
        self.iterations += 1
        self.history.append(self.iterations, core.loss, core.g.norm(), self.radius, ev.gradients)
        return core.loss

    def state_dict(self) -> dict[str, Any]:
        """Iterate, radius, iteration count, history, settings and the points that rebuild
        the L-SR1 pairs."""
        return {"solver": "trust_region", "x": self.pvec.to_full(self.core.x).cpu(), "radius": self.radius,
                "iterations": self.iterations, "history": self.history.state_dict(),
                "settings": asdict(self.settings), "sr1_points": self.sub.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        restore_iterate(state, "trust_region", "a TrustRegion", self.pvec)
        self.pvec.pull(self.core.x)
        self.core.radius = float(state["radius"])
        self.iterations = int(state["iterations"])
        self.history.load_state_dict(state["history"])
        self.core.settings = TrustRegionSettings(**{f.name: state["settings"][f.name]
                                                    for f in fields(TrustRegionSettings)})
        self.sub.load_state_dict(state["sr1_points"])
        self._closure, self.core.loss = None, math.nan

    def destroy(self) -> None:
        self.core.destroy()


def rebind(evaluator: Evaluator | None, objective: Objective, pvec: ParamVec) -> Evaluator:
    """An evaluator of ``objective`` that keeps ``evaluator``'s counts and what it learned
    about the closure's style."""
    new = Evaluator(objective, pvec)
    if evaluator is not None:
        new.calls_backward = evaluator.calls_backward
        new.gradients, new.values = evaluator.gradients, evaluator.values
    return new
