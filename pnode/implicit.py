"""Implicit and IMEX problems on PETSc: ``F(t, u, u') = M u' - g(t, u)`` as IFunction,
its Newton Jacobian (a kind of :mod:`pnode.ijacobians`) as IJacobian, and the parameter
Jacobian shell ``dF/dp = -dg/dp`` as IJacobianP for the adjoint. An explicit part ``f``
(IMEX, ARKIMEX only) stays a RHSFunction whose adjoint shells are
:class:`pnode.rhs_adjoint.AdjointShells`.

Exactness of gradients. PETSc's adjoint solves ``(shift*M - dg/du)^T lambda = r`` once per
implicit stage with the TS's own KSP, so the gradient is exact only up to that solve's
tolerance, and the forward stages must satisfy their equations up to Newton's. Defaults
(:data:`pnode.ijacobians.SOLVER_DEFAULTS`): ``snes_rtol=1e-10``, ``snes_atol=1e-12``
(forward), ``ksp_rtol=1e-12``, ``ksp_atol=1e-30`` (forward and adjoint, matrix-free GMRES
without preconditioner; assembled Jacobians solve directly, i.e. exactly). With them
gradients agree with backpropagation through the same discrete scheme to ~1e-13 relative
in float64 (tests/test_implicit.py); looser values (``options={"ksp_rtol": ...}``) trade
that for speed.

A state-dependent mass ``M(u)`` makes the Jacobian depend on the stage's ``u'`` too. PETSc
hands IJacobian the ``Xdot`` of its last residual evaluation, which during TSAdjointSolve
is a stale one (theta.c sets it before the parameter Jacobian, not before the state
Jacobian). So the forward residual evaluations of a solve that keeps a trajectory (for an
adjoint; forward-only solves record nothing) keep their ``u'`` under the exact values of
their ``u`` and their time, and IJacobian/IJacobianP take the ``u'`` recorded for exactly
that ``u`` at the nearest time (the adjoint's stage times may differ in the last bit from
the forward's; one ``u`` can be two stages' point: backward Euler's first Newton iterate
of a step is the previous step's solution, with ``u' = 0``); the
endpoint theta form (``cn``) is refused with such a mass: PETSc evaluates its start-of-step
residual with ``u' = 0`` and its adjoint with the start state's mass, which holds only
for a constant ``M``.
"""
from __future__ import annotations

import torch

from .guard import CallbackGuard
from .errors import ConfigurationError
from .ijacobians import SOLVER_DEFAULTS, Linearisation, build_jacobian, state_mass
from .matop import shell_mat
from .newton import NewtonControl
from .params import ParamBuffer
from .problem import ImplicitProblem
from .vec import ViewCache, as_tensor


class ImplicitOperators:
    """IFunction, IJacobian and (for adjoints) IJacobianP of an implicit problem.

    ``jacobian`` names a kind of :mod:`pnode.ijacobians`; ``solver_defaults`` are the
    matching KSP/PC options. Every callback is guarded by ``guard``.
    """

    def __init__(self, problem: ImplicitProblem, comm, params: ParamBuffer, guard: CallbackGuard,
                 jacobian: str = "matrix-free", views: ViewCache | None = None,
                 control: NewtonControl | None = None):
        self.problem, self.params, self.guard = problem, params, guard
        self.views = views if views is not None else ViewCache()
        self.control = control  # None: a fresh Jacobian at every call
        self.jacobian = build_jacobian(jacobian, problem, comm, guard)
        self.J = self.jacobian.mat
        self._formed = (None, None)  # (shift, Mat state) of the last form()
        self.solver_defaults = {**SOLVER_DEFAULTS, **self.jacobian.solver_defaults}
        self.jacp = _ParamProducts(problem, params)
        self.Jp = shell_mat(self.jacp, problem.numel, params.numel, comm, guard)
        self.zero = None
        self.stages: dict[bytes, dict[float, torch.Tensor]] | None = {} if state_mass(problem) else None
        self.recording = False

    def attach(self, ts, F) -> None:
        """Register the callbacks on ``ts`` (``F`` is the residual work Vec)."""
        guard = self.guard
        ts.setIFunction(guard.wrap(self._ifunction), F)
        ts.setIJacobian(guard.wrap(self._ijacobian), self.J, self.J)
        ts.setIJacobianP(guard.wrap(self._ijacobianp), self.Jp)
        if self.problem.explicit is None and ts.getType() == "arkimex":
            # TSAdjointStep_ARKIMEX applies an RHS Jacobian even without an explicit part
            n = self.problem.numel
            self.zero = shell_mat(_Zero(), n, n, ts.getComm(), guard)
            ts.setRHSJacobian(lambda *a: None, self.zero, self.zero)

    def start(self, ts, record: bool) -> None:
        """A forward solve begins: forget the recorded stages and record new ones only when
        ``record`` (a trajectory is kept for an adjoint); refuse the endpoint theta form
        with a state-dependent mass (see the module docstring)."""
        if self.stages is None:
            return
        self.stages.clear()
        self.recording = record
        if ts.getType() in ("theta", "cn") and ts.getThetaEndpoint():
            raise ConfigurationError(
                "a state-dependent mass matrix needs a theta method without the endpoint form: "
                "PETSc's endpoint variant ('cn', ts_theta_endpoint) evaluates the start of each "
                "step with u' = 0 and differentiates it with the start state's mass, exact only "
                "for a constant mass; use method='theta' (the implicit midpoint rule, second "
                "order) or 'beuler'")

    def _ifunction(self, ts, t, X, Xdot, F) -> None:
        prob, views = self.problem, self.views
        u = views.get(X, "r", prob.shape)
        g = prob.implicit.rhs(t, u)
        if prob.mass is None:  # views of the state's shape: no reshape of g (~1 us)
            torch.sub(views.get(Xdot, "r", prob.shape), g, out=views.get(F, "rw", prob.shape))
        else:
            udot = views.get(Xdot, "r")
            torch.sub(prob.mass.product(t, u, udot).reshape(-1), g.reshape(-1), out=views.get(F))
            if self.stages is not None and self.recording:
                self.stages.setdefault(_key(u), {})[t] = udot.detach().clone()
        F.stateIncrease()

    def _stage_xdot(self, t: float, X, Xdot) -> torch.Tensor | None:
        """The ``u'`` of the forward stage at ``(t, X)`` (a state-dependent mass), else None."""
        if self.stages is None:
            return None
        kept = self.stages.get(_key(self.views.get(X, "r")))
        if not kept:
            return self.views.get(Xdot, "r")
        return kept[min(kept, key=lambda s: abs(s - t))]

    def _ijacobian(self, ts, t, X, Xdot, shift, A, B) -> None:
        """Re-form ``shift*M - dg/du``; ``dg/du`` itself is evaluated when the Newton
        control says so (:mod:`pnode.newton`), always without one."""
        fresh = self.control is None or self.control.fresh(ts)
        if fresh:
            self.jacobian.linearise(t, self.views.get(X, "r"), self._stage_xdot(t, X, Xdot))
        # unchanged dg/du, shift and Mat: leave it, so that PETSc keeps its factorisation
        if fresh or shift != self._formed[0] or self.J.stateGet() != self._formed[1]:
            self.jacobian.form(shift)
            self._formed = (shift, self.J.stateGet())

    def _ijacobianp(self, ts, t, X, Xdot, shift, Jp) -> None:
        self.jacp.set_point(t, as_tensor(X, None, "r"), self._stage_xdot(t, X, Xdot))

    def destroy(self) -> None:
        self.jacobian.destroy()
        for m in (self.Jp, self.zero):
            if m is not None:
                m.destroy()


def _key(u: torch.Tensor) -> bytes:
    """The exact values of a state, as a dictionary key."""
    return u.detach().reshape(-1).cpu().numpy().tobytes()


class _ParamProducts(Linearisation):
    """Shell context of ``dF/dp = -dh/dp`` (``h = g - M(u) u'``, :func:`implicit_part`;
    only its transpose is applied)."""

    def __init__(self, problem: ImplicitProblem, params: ParamBuffer):
        super().__init__(problem)
        self.params = params

    def multTranspose(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        y = as_tensor(Y)
        xr, g = self.graph()
        if g.requires_grad and self.params.numel:
            grads = torch.autograd.grad(g, self.params.params, v, retain_graph=True, allow_unused=True)
            self.params.pack(grads, y)
            y.neg_()
        else:
            y.zero_()


class _Zero:
    """Shell context of a zero matrix."""

    def mult(self, mat, X, Y) -> None:
        Y.zeroEntries()

    def multTranspose(self, mat, X, Y) -> None:
        Y.zeroEntries()
