"""RMTR: a recursive multilevel trust-region method over a :class:`Hierarchy`.

Public API (``pnode.solvers``)::

    opt = RMTR(hierarchy, rmtr=RMTRSettings(cycle="V"), settings=TrustRegionSettings(), memory=10,
               ksp_type="stcg", options_prefix="rmtr_", options=None)
    loss = opt.step(closure)         # one V- or W-cycle; closure(model) -> this rank's loss
    loss = opt.nested_iteration(closure, cycles=10)   # optional start from the coarsest level
    opt.radius, opt.history, opt.gradient_evaluations, opt.log, opt.state_dict(), opt.load_state_dict(s)

Every level is a :class:`TrustRegionCore` (the iteration of ``TrustRegion``: L-SR1
``MATLMVMSR1`` + KSP STCG/GLTR/NASH) on that level's ParamVec; the levels share the
hierarchy's communicator. A cycle on level ``l`` (the finest: the loss ``f`` itself;
a coarser one: its model ``m_l``) runs

1. ``pre_smoothing`` trust-region iterations;
2. the coarse correction (twice for a W-cycle), when the recursion gate
   ``||P^T g|| >= kappa_g ||g||`` (and ``> eps_g``) is open: the iterate is restricted
   (``x_c0 = Pi x``), the coarse model is ``m_c(x) = f_c(x) + <P^T g - grad f_c(x_c0),
   x - x_c0>`` (its gradient at ``x_c0`` is ``P^T g``: first-order consistent), the
   coarse level cycles with its radius and every step bounded by the nested radius
   ``min(Delta, Delta_bound - ||x - x0||) / ||P||`` (so that the prolongated correction
   stays inside level ``l``'s radius); the correction ``P (x_c - x_c0)`` is accepted by
   ``rho = (m_l(x) - m_l(x + P s_c)) / (m_c(x_c0) - m_c(x_c))`` like any trust-region
   step, and the radius of level ``l`` is updated by the same rule;
3. ``post_smoothing`` trust-region iterations.

On the coarsest level the cycle is ``coarse_iterations`` trust-region iterations. A level
stops early when its iterate reaches the boundary of its nested radius (within
``eps_delta``). The rules and constants are in docs/solvers.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

import torch

from pnode.errors import ConfigurationError
from pnode.options import ScopedOptions

from .hierarchy import Hierarchy
from .monitor import History
from .objective import Evaluator, NonFiniteObjectiveError, Objective
from .tao import restore_iterate
from .trust_region import SR1Subproblem, TrustRegionCore, TrustRegionSettings

CYCLES = {"V": 1, "W": 2}


@dataclass(frozen=True)
class RMTRSettings:
    """The multilevel constants (UTOPIA's where it has them: docs/solvers.md)."""

    cycle: str = "V"  # "V": one coarse correction per level visit, "W": two
    pre_smoothing: int = 1  # trust-region iterations before the coarse correction
    post_smoothing: int = 1  # and after it
    coarse_iterations: int = 2  # trust-region iterations on the coarsest level per visit
    kappa_g: float = 0.125  # recursion gate: ||P^T g|| >= kappa_g ||g||
    eps_g: float = 1e-12  # no recursion below this restricted gradient norm
    eps_delta: float = 1e-3  # a coarse level stops within eps_delta * bound of its boundary

    def __post_init__(self):
        if self.cycle not in CYCLES:
            raise ConfigurationError(f"cycle must be one of {tuple(CYCLES)}, got {self.cycle!r}")
        for name in ("pre_smoothing", "post_smoothing", "coarse_iterations"):
            if int(getattr(self, name)) < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (0 < self.kappa_g < 1 and self.eps_g >= 0 and 0 <= self.eps_delta < 1):
            raise ConfigurationError(
                f"need 0 < kappa_g < 1, eps_g >= 0, 0 <= eps_delta < 1; got {self.kappa_g}, {self.eps_g}, "
                f"{self.eps_delta}")


class RMTR:
    """Recursive multilevel trust region over ``hierarchy``'s levels (module docstring).

    ``step(closure)`` runs one cycle from the finest level; ``closure(model)`` returns
    this rank's loss of ``model`` (any level's) on the current data (``Objective``
    conventions, without ``backward``). A new closure object (a new mini-batch) is
    evaluated at the iterate first; the same one reuses that evaluation. The finest
    model holds the iterate after each step.
    """

    def __init__(self, hierarchy: Hierarchy, *, rmtr: RMTRSettings | None = None,
                 settings: TrustRegionSettings | None = None, memory: int = 10, ksp_type: str = "stcg",
                 max_krylov: int = 50, options_prefix: str = "rmtr_", options: Mapping[str, Any] | None = None,
                 reduce: str = "sum"):
        if not isinstance(hierarchy, Hierarchy):
            raise ConfigurationError(f"RMTR needs a pnode.solvers.Hierarchy, got {type(hierarchy).__name__}")
        self.rmtr = rmtr if rmtr is not None else RMTRSettings()
        settings = settings if settings is not None else TrustRegionSettings()
        for name, value, kind in (("rmtr", self.rmtr, RMTRSettings), ("settings", settings, TrustRegionSettings)):
            if not isinstance(value, kind):
                raise ConfigurationError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        self.hierarchy = hierarchy
        self.cores: list[TrustRegionCore] = []
        self.evaluators: list[Evaluator] = []
        for level, (model, pvec) in enumerate(zip(hierarchy.models, hierarchy.pvecs)):
            sub = SR1Subproblem(pvec, memory, ksp_type, max_krylov,
                                ScopedOptions(f"{options_prefix}l{level}_", options))
            self.cores.append(TrustRegionCore(pvec, sub, settings))
            self.evaluators.append(Evaluator(Objective(self._level_closure(model), reduce=reduce), pvec))
        fine = hierarchy.pvecs[-1].numel
        self.costs = [pv.numel / fine for pv in hierarchy.pvecs]  # a level's gradient in fine-level units
        self._restricted = [pv.duplicate() for pv in hierarchy.pvecs]
        self._prolonged = [pv.duplicate() for pv in hierarchy.pvecs]
        self._closure: Callable | None = None
        self.history = History()
        self.cycles = 0
        self.log: list[dict[str, Any]] = []  # the steps of the last cycle

    def _level_closure(self, model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def closure():
            return self._closure(model)
        return closure

    @property
    def fine(self) -> TrustRegionCore:
        return self.cores[-1]

    @property
    def radius(self) -> float:
        return self.fine.radius

    @property
    def gradient_evaluations(self) -> float:
        """Gradient evaluations of every level, counted in fine-level units (a level's
        weighs its number of parameters over the finest level's)."""
        return sum(ev.gradients * c for ev, c in zip(self.evaluators, self.costs))

    def step(self, closure: Callable[[torch.nn.Module], torch.Tensor]) -> float:
        """One cycle; returns the finest level's loss at the iterate after it."""
        if not callable(closure):
            raise ConfigurationError("step() needs a closure(model) returning the loss")
        fine, ev = self.fine, self.evaluators[-1]
        self.prepare(closure)
        self.log = []
        self._cycle(len(self.cores) - 1, math.inf)
        ev.push(fine.x)
        self.cycles += 1
        self.history.append(self.cycles, fine.loss, fine.g.norm(), fine.radius, self.gradient_evaluations)
        return fine.loss

    def prepare(self, closure: Callable[[torch.nn.Module], torch.Tensor]) -> float:
        """Make ``closure`` the current one: the finest loss and gradient at the iterate
        (evaluated unless ``closure`` gave them already)."""
        fine, ev = self.fine, self.evaluators[-1]
        if closure is not self._closure or not math.isfinite(fine.loss):
            self._closure = closure
            fine.pvec.pull(fine.x)  # the model may have been changed by the caller
            try:
                fine.loss = ev.value_gradient(fine.x, fine.g)
            except NonFiniteObjectiveError:
                self._closure = None
                raise
            if fine.sub.updates == 0:
                fine.sub.update(fine.x, fine.g)
            if not len(self.history):
                self.history.append(0, fine.loss, fine.g.norm(), fine.radius, self.gradient_evaluations)
        return fine.loss

    def nested_iteration(self, closure: Callable[[torch.nn.Module], torch.Tensor], cycles: int = 10) -> float:
        """Start on the coarsest level (nested iteration): the finest model's parameters
        are restricted down to level 0; then each level below the finest runs ``cycles``
        cycles on its own loss (over the levels beneath it) and its iterate is prolongated
        to the next level. The finest model gets the result; returns its loss there. The
        evaluations count in :attr:`gradient_evaluations`."""
        if int(cycles) < 1:
            raise ConfigurationError(f"nested_iteration needs cycles >= 1, got {cycles}")
        H, cores = self.hierarchy, self.cores
        self._closure, self.log = closure, []
        try:
            H.pvecs[-1].pull(cores[-1].x)
            for level in range(len(cores) - 1, 0, -1):
                H.restrict(level, cores[level].x, cores[level - 1].x)
            for level in range(len(cores) - 1):
                core = cores[level]
                core.set_model(None)
                core.radius = core.settings.delta0
                core.start(self.evaluators[level].value_gradient)
                for _ in range(int(cycles)):
                    self._cycle(level, math.inf)
                H.prolong(level + 1, core.x, cores[level + 1].x)
            self.evaluators[-1].push(cores[-1].x)
        finally:  # the finest level is evaluated afresh (also after a fault on a coarse level)
            self._closure, cores[-1].loss = None, math.nan
        return self.prepare(closure)

    # -- the recursion ---------------------------------------------------------------------

    def _cycle(self, level: int, bound: float) -> None:
        s = self.rmtr
        if level == 0:
            self._smooth(level, s.coarse_iterations, bound)
            return
        self._smooth(level, s.pre_smoothing, bound)
        for _ in range(CYCLES[s.cycle]):
            self._coarse_correction(level, bound)
        self._smooth(level, s.post_smoothing, bound)

    def _remaining(self, level: int, bound: float) -> float:
        """How far the level's iterate may still move inside its nested radius."""
        if not math.isfinite(bound):
            return math.inf
        core = self.cores[level]
        d = self._prolonged[level]
        core.x.copy(d)
        d.axpy(-1.0, core.anchor)
        return bound - d.norm()

    def _on_boundary(self, remaining: float, bound: float) -> bool:
        return math.isfinite(bound) and remaining <= self.rmtr.eps_delta * bound

    def _smooth(self, level: int, iterations: int, bound: float) -> None:
        core, ev = self.cores[level], self.evaluators[level]
        for _ in range(iterations):
            remaining = self._remaining(level, bound)
            if self._on_boundary(remaining, bound):
                return
            report = core.iterate(ev.value_gradient, remaining)
            self.log.append({"level": level, "kind": "smoothing", **report})

    def coarse_model(self, level: int) -> float | None:
        """Set up level ``level - 1``'s model from level ``level``'s iterate: restrict the
        iterate, evaluate the coarse loss and gradient there and set the shift
        ``P^T g - grad f_c(x_c0)``. Returns ``f_c(x_c0)``, or None when the recursion gate
        is closed or the coarse loss is not finite there."""
        H, s = self.hierarchy, self.rmtr
        core, low = self.cores[level], self.cores[level - 1]
        g = core.model_gradient()
        rg = self._restricted[level - 1]
        H.restrict_gradient(level, g, rg)
        rnorm = rg.norm()
        if rnorm < s.kappa_g * g.norm() or rnorm <= s.eps_g:
            self.log.append({"level": level, "kind": "gate closed", "restricted": rnorm})
            return None
        H.restrict(level, core.x, low.x)
        try:
            loss = low.start(self.evaluators[level - 1].value_gradient)
        except NonFiniteObjectiveError:
            self.log.append({"level": level, "kind": "coarse loss not finite"})
            return None
        rg.axpy(-1.0, low.g)
        low.set_model(rg, low.x)
        return loss

    def _coarse_correction(self, level: int, bound: float) -> None:
        core, low = self.cores[level], self.cores[level - 1]
        remaining = self._remaining(level, bound)
        if self._on_boundary(remaining, bound):
            return
        start = self.coarse_model(level)
        if start is None:
            return
        radius = min(core.radius, remaining)
        low.radius = cbound = radius / self.hierarchy.prolongation_norm(level)
        self._cycle(level - 1, cbound)
        sc, sf = self._prolonged[level - 1], self._prolonged[level]
        low.x.copy(sc)
        sc.axpy(-1.0, low.anchor)
        predicted = start - low.model_value(low.loss, low.x)
        if sc.norm() == 0 or not predicted > 0:  # no coarse step was accepted
            return
        self.hierarchy.prolong(level, sc, sf)
        report = core.try_step(sf, predicted, self.evaluators[level].value_gradient, radius)
        self.log.append({"level": level, "kind": "coarse correction", **report})

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The finest iterate and radius, the cycle count, history, evaluation counts,
        settings and every level's SR1 points."""
        fine = self.fine
        return {"solver": "rmtr", "x": fine.pvec.to_full(fine.x).cpu(), "radius": fine.radius,
                "cycles": self.cycles, "history": self.history.state_dict(),
                "gradients": [ev.gradients for ev in self.evaluators], "rmtr": asdict(self.rmtr),
                "settings": asdict(fine.settings), "sr1_points": [c.sub.state_dict() for c in self.cores]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        fine = self.fine
        restore_iterate(state, "rmtr", "an RMTR", fine.pvec,
                        what=f"{len(self.cores)} levels and {fine.pvec.numel} parameters",
                        consistent=len(state.get("sr1_points", ())) == len(self.cores))
        fine.pvec.pull(fine.x)
        self.rmtr = RMTRSettings(**{f.name: state["rmtr"][f.name] for f in fields(RMTRSettings)})
        settings = TrustRegionSettings(**{f.name: state["settings"][f.name] for f in fields(TrustRegionSettings)})
        for core, ev, points, count in zip(self.cores, self.evaluators, state["sr1_points"], state["gradients"]):
            core.settings = settings
            core.sub.load_state_dict(points)
            ev.gradients = int(count)
        fine.radius = float(state["radius"])
        self.cycles = int(state["cycles"])
        self.history.load_state_dict(state["history"])
        self._closure, fine.loss = None, math.nan

    def destroy(self) -> None:
        for core in self.cores:
            core.destroy()
        for v in self._restricted + self._prolonged:
            v.destroy()
