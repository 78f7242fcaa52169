"""Newton's method for implicit stages: Jacobian reuse (modified Newton) and a stopping
test tied to the step's error tolerance, in the manner of SUNDIALS CVODE.

**Reuse.** ``dg/du`` (a dense matrix, the per-sample blocks or the matrix-free
linearisation point) is kept across Newton iterations and steps; every IJacobian call
re-forms ``shift*M - dg/du`` with the current shift (cheap: a copy and a factorisation of
the assembled kinds, a number for the matrix-free one). ``dg/du`` is evaluated afresh
(:meth:`NewtonControl.fresh`) when

1. there is none yet in this solve, or the solve is an adjoint (TSAdjoint asks for the
   Jacobian at the converged stage values: always exact), or reuse is off (``reuse=False``;
   the default ``None`` keeps Jacobians under the WRMS test only, see :func:`resolved`);
2. it is ``max_age`` accepted steps old;
3. a step was rejected (error test or Newton failure) since it was evaluated;
4. Newton contracts slowly: the residual norm fell by less than the factor ``slow`` in
   the last iteration;
5. the WRMS test below found Newton diverging or out of iterations with a stale
   ``dg/du``: the iteration then goes on from where it is with a fresh one, instead of
   failing the stage (which would cut the step by 4).

**Stopping** (``test="wrms"``). With ``w_i = 1 / (atol + rtol |x_i|)`` (the step error
test's weights) and ``d_k`` the WRMS norm ``sqrt(mean((w_i dx_i)^2))`` of Newton update
``k``, the contraction rate is estimated as ``c = max(0.3 c_prev, d_k / d_{k-1})`` (1
after a fresh Jacobian, else kept from the last solve) and Newton stops when
``d_k min(1, c) <= safety`` (the remaining error of the stage, measured like the local
error the step controller accepts at 1; CVODE's ``nlscoef`` is 0.1), where a solve's first
update must also satisfy ``d_1 <= 1`` for the carried rate to count (beyond the error
tolerance Newton may not yet be in its linear regime: a blow-up was stepped over without
this). It fails when
``d_k > divergence * d_{k-1}`` or after ``max_iterations`` iterations on one Jacobian (a
fresh one is tried first, rule 5). ``test="petsc"`` keeps PETSc's own tests
(``snes_rtol``, ``snes_atol``, ``snes_stol``, ``snes_max_it``). ``test="auto"`` (the
default) takes ``"wrms"`` for adaptive steps, whose error tolerance defines the accuracy
wanted, unless the options set one of PETSc's SNES tolerances (:data:`PETSC_TEST_OPTIONS`);
fixed steps have no error tolerance and keep PETSc's tight tests.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch

from .comm import allreduce
from .errors import ConfigurationError
from .startup import PETSc
from .vec import ViewCache

#: options that select PETSc's own Newton stopping tests under ``test="auto"``
PETSC_TEST_OPTIONS = ("snes_rtol", "snes_atol", "snes_stol", "snes_max_it", "snes_max_funcs",
                      "snes_convergence_test")
TESTS = ("auto", "wrms", "petsc")
_SMALL_NORM = 512  # states up to this size take the WRMS norm by PETSc Vec ops


@dataclass(frozen=True)
class Newton:
    """How implicit stages are solved (``newton=`` of ``odeint``, ``odeint_adjoint`` and
    ``NeuralODE``); the rules are in :mod:`pnode.newton`.

    ``reuse``: keep ``dg/du`` across iterations and steps (False: a fresh Jacobian at every
    Newton iteration, as full Newton; None: reuse under the WRMS test only). ``max_age``: accepted steps a Jacobian may serve.
    ``slow``: refresh when an iteration reduces the residual norm by less than this factor.
    ``test``: ``"auto"``, ``"wrms"`` or ``"petsc"``. ``safety``: the WRMS test's bound.
    ``max_iterations``: WRMS iterations per Jacobian. ``divergence``: the growth of the
    update's norm that counts as diverging.
    """

    reuse: bool | None = None
    max_age: int = 20
    slow: float = 0.5
    test: str = "auto"
    safety: float = 0.1
    max_iterations: int = 4
    divergence: float = 2.0

    def __post_init__(self):
        if self.test not in TESTS:
            raise ConfigurationError(f"Newton test must be one of {', '.join(map(repr, TESTS))}, got {self.test!r}")
        if not (isinstance(self.max_age, int) and self.max_age >= 1
                and isinstance(self.max_iterations, int) and self.max_iterations >= 1):
            raise ConfigurationError("Newton max_age and max_iterations must be positive integers")
        if not (0 < self.slow <= 1 and self.safety > 0 and self.divergence > 1):
            raise ConfigurationError("Newton needs 0 < slow <= 1, safety > 0 and divergence > 1")


def as_newton(newton) -> Newton:
    """A user's ``newton=`` (None, a :class:`Newton` or a dict of its fields)."""
    if newton is None:
        return Newton()
    if isinstance(newton, Newton):
        return newton
    if isinstance(newton, dict):
        try:
            return Newton(**newton)
        except TypeError as exc:
            raise ConfigurationError(f"newton: {exc}") from None
    raise ConfigurationError(f"newton must be a pnode.Newton or a dict, got {type(newton).__name__}")


def resolved(newton: Newton, test: str) -> Newton:
    """``newton`` with ``reuse`` decided for ``test``: by default Jacobians are kept under
    the WRMS test only. PETSc's tests stop on a small step (``snes_stol``, 1e-8 relative),
    which leaves ``rate / (1 - rate)`` of that step as error when Newton converges
    linearly (a kept Jacobian): measured 1.2e-10 on the algebraic equation of the DAE of
    tests/test_implicit.py, against below 1e-10 with full Newton."""
    if newton.reuse is not None:
        return newton
    return replace(newton, reuse=test == "wrms")


def choose_test(newton: Newton, adaptive: bool, options) -> str:
    """``"wrms"`` or ``"petsc"`` for a solve (see the module docstring)."""
    if newton.test != "auto":
        return newton.test
    if not adaptive or any(options.get(key) is not None for key in PETSC_TEST_OPTIONS):
        return "petsc"
    return "wrms"


class NewtonControl:
    """The reuse decisions and the WRMS stopping test of one integrator's Newton solves."""

    def __init__(self, settings: Newton, test: str, rtol: float, atol: float, numel: int, comm,
                 dtype: torch.dtype, device: torch.device, views: ViewCache):
        self.settings, self.test, self.views = settings, test, views
        self.rtol, self.atol, self.comm = rtol, atol, comm
        self.global_numel = allreduce(numel, "sum", comm) if comm.getSize() > 1 else numel
        # a few entries: PETSc's Vec ops (~0.3 us for the norm against ~4 us of numpy or
        # torch calls); many: numpy or torch (PETSc's VecAbs and VecPointwiseDivide are
        # 5-15x slower than numpy's ufuncs at 1e5 entries)
        self._small = self.global_numel <= _SMALL_NORM  # the same choice on every rank
        self._work = None  # the PETSc work Vec of the small path, made at the first test
        self._weights = None if self._small else torch.empty(numel, dtype=dtype, device=device)
        self._weights_np = self._weights.numpy() if not self._small and device.type == "cpu" else None
        self.exact = False
        self.start()

    def start(self) -> None:
        """Forget the kept Jacobian and the counts (a new forward solve)."""
        self.evaluations = 0
        self.retries = 0
        self._have = False
        self._age_step = 0
        self._counts = (0, 0)
        self._stale = False  # the kept Jacobian failed: the next call evaluates one
        self._norm = None  # (iteration, residual norm) seen at the last call
        self._solve_fresh = False  # dg/du was evaluated in the Newton solve under way
        # the solve's iterations and last update norm, and the contraction rate (1 after a
        # fresh Jacobian; CVODE keeps it across steps until then)
        self._iterations, self._previous, self._rate = 0, None, 1.0


    @contextmanager
    def exact_jacobians(self) -> Iterator[None]:
        """Fresh Jacobians at every call (the adjoint phase)."""
        self.exact = True
        try:
            yield
        finally:
            self.exact = False
            self._have = False

    def fresh(self, ts) -> bool:
        """Whether the IJacobian call now under way must evaluate ``dg/du`` (then it is
        counted as evaluated)."""
        s = self.settings
        counts = (ts.getStepRejections(), ts.getSNESFailures())
        snes = ts.getSNES()
        it, norm = snes.getIterationNumber(), snes.getFunctionNorm()
        slow = (self._norm is not None and it > 0 and self._norm[0] == it - 1
                and norm > s.slow * self._norm[1])
        self._norm = (it, norm)
        step = ts.getStepNumber()
        need = (self.exact or not s.reuse or not self._have or self._stale or slow
                or counts != self._counts or step - self._age_step >= s.max_age)
        self._counts = counts
        if need:
            self.evaluations += 1
            self._have, self._stale, self._age_step = True, False, step
            self._solve_fresh = True
            self._rate = 1.0
        return need

    def converged(self, snes, it: int, norms) -> int:
        """PETSc's convergence-test callback of the WRMS test (a SNES converged reason)."""
        R = PETSc().SNES.ConvergedReason
        if it == 0:  # a new Newton solve (before its first IJacobian call)
            self._iterations, self._previous = 0, None
            self._solve_fresh = False
            return R.ITERATING
        if norms[2] != norms[2]:  # a NaN residual
            return R.DIVERGED_FNORM_NAN
        d = self._wrms(snes)
        s = self.settings
        self._iterations += 1
        if self._previous is not None:
            self._rate = max(0.3 * self._rate, d / max(self._previous, 1e-300))
        diverging = self._previous is not None and d > s.divergence * self._previous
        self._previous = d
        # a rate carried from earlier solves vouches for a first update only within the
        # error tolerance (d <= 1): a larger one may be outside the linear regime
        trusted = self._iterations > 1 or d <= 1.0
        if not diverging and trusted and d * min(1.0, self._rate) <= s.safety:
            return R.CONVERGED_SNORM_RELATIVE
        if diverging or self._iterations >= s.max_iterations:
            if not self._solve_fresh:  # a Jacobian kept from an earlier solve: try a fresh one
                self.retries += 1
                self._stale = True  # the next iteration evaluates a fresh Jacobian
                self._iterations, self._previous = 0, None
                return R.ITERATING
            return R.DIVERGED_DTOL if diverging else R.DIVERGED_MAX_IT
        return R.ITERATING

    def _wrms(self, snes) -> float:
        """The WRMS norm of the last Newton update (collective on several ranks)."""
        if self._small:
            x = snes.getSolution()
            if self._work is None:
                self._work = x.duplicate()
            w = self._work
            x.copy(w)
            w.abs()
            w.scale(self.rtol)
            w.shift(self.atol)
            w.pointwiseDivide(snes.getSolutionUpdate(), w)
            return (w.dot(w).real / max(self.global_numel, 1)) ** 0.5
        dx = self.views.get(snes.getSolutionUpdate(), "r")
        x = self.views.get(snes.getSolution(), "r")
        w = self._weights
        if w.device.type == "cpu":  # numpy: a few microseconds less per torch op
            dx, x, w = dx.numpy(), x.numpy(), self._weights_np
            np.abs(x, out=w)
            w *= self.rtol
            w += self.atol
            np.divide(dx, w, out=w)
            total = float(np.dot(w, w))
        else:
            torch.abs(x, out=w).mul_(self.rtol).add_(self.atol)
            total = float(torch.div(dx, w, out=w).square_().sum())
        if self.comm.getSize() > 1:
            total = allreduce(total, "sum", self.comm)
        return (total / max(self.global_numel, 1)) ** 0.5


def initial_step(rhs, y0: torch.Tensor, rtol: float, atol: float, order: int, comm) -> float:
    """A first step for an adaptive stiff solve from ``y' = rhs(s, y)`` at ``s = 0`` (Hairer,
    Norsett and Wanner's rule, with the step error test's WRMS norm): ``h0 = 0.01 |y0| / |f0|``,
    then ``min(100 h0, (0.01 / max(|f0|, |f1 - f0| / h0))^(1 / (order + 1)))`` from one
    explicit Euler step. A stiff start (ROBER: 3e-4 instead of a hundredth of the span)
    keeps Newton's first solves in its region of convergence."""
    w = torch.abs(y0).mul_(rtol).add_(atol).reciprocal_()
    total = comm.getSize() > 1

    def rms(v: torch.Tensor) -> float:
        s, n = float((v * w).square().sum()), v.numel()
        if total:
            s, n = allreduce(s, "sum", comm), allreduce(n, "sum", comm)
        return (s / max(n, 1)) ** 0.5

    with torch.no_grad():
        f0 = rhs(0.0, y0)
        d0, d1 = rms(y0), rms(f0)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        d2 = rms(rhs(h0, y0 + h0 * f0) - f0) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)
