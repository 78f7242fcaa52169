"""Implicit and IMEX problems: ``M y' = g(t, y) [+ f(t, y)]`` as PETSc IFunction/IJacobian.

The stiff part ``g`` goes to PETSc as ``F(t, u, u') = M u' - g(t, u)``. Small and batched
states get an assembled IJacobian with an exact direct solve (:mod:`pnode.assembled`,
``jacobian=``); otherwise the IJacobian is a matrix-free shell ``shift*M - dg/du``:
``mult`` (Newton's Krylov solves) and ``multTranspose`` (the adjoint's transposed solves)
both reuse one autograd graph of ``g`` per linearisation point (the double-backward
trick: ``(dg/du) v`` is the derivative of ``(dg/du)^T w`` in ``w``). Measured per
linearisation point with 3 products (2 shared CPU cores, float64): ROBER (n=3) 0.7 ms,
against 4.5 ms with ``torch.func.jvp`` and 166 ms with ``torch.func.linearize``; a 2-50-2
MLP on 20 points (n=40) 1.5 ms against 9 ms and 139 ms. The parameter Jacobian shell
answers ``(dF/dp)^T v = -(dg/dp)^T v``. An explicit part ``f`` (IMEX, ARKIMEX only) stays
a RHSFunction whose adjoint shells are :class:`pnode.jacobians.AdjointShells`.

Exactness of gradients. PETSc's adjoint solves ``(shift*M - dg/du)^T lambda = r`` once per
implicit stage with the TS's own KSP, so the gradient is exact only up to that solve's
tolerance, and the forward stages must satisfy their equations up to Newton's. Defaults:
``snes_rtol=1e-10``, ``snes_atol=1e-12`` (forward), ``ksp_rtol=1e-12``, ``ksp_atol=1e-30``
(forward and adjoint, matrix-free GMRES without preconditioner; assembled Jacobians solve
directly, i.e. exactly). With them gradients agree with
backpropagation through the same discrete scheme to ~1e-13 relative in float64
(tests/test_implicit.py); looser
values (``options={"ksp_rtol": ...}``) trade that for speed.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from . import assembled
from .errors import ConfigurationError, snes_reason, ts_reason
from .problem import ExplicitProblem
from .vec import PETSc, as_tensor

#: default solver options of implicit methods (the user's options and the command line win)
SOLVER_DEFAULTS = {"snes_type": "newtonls", "snes_rtol": 1e-10, "snes_atol": 1e-12,
                   "snes_max_it": 50, "ksp_type": "gmres", "pc_type": "none",
                   "ksp_rtol": 1e-12, "ksp_atol": 1e-30, "ksp_max_it": 1000}


class MassMatrix:
    """A constant mass matrix: ``(n, n)`` dense or ``(n,)`` diagonal; may be singular (DAE)."""

    def __init__(self, M: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device):
        if not isinstance(M, torch.Tensor):
            raise ConfigurationError(f"mass must be a torch.Tensor, got {type(M).__name__}")
        if tuple(M.shape) not in ((n, n), (n,)):
            raise ConfigurationError(
                f"mass must have shape ({n}, {n}) or ({n},) (diagonal) for a state of {n} values, "
                f"got {tuple(M.shape)}")
        if not bool(torch.isfinite(M).all()):
            raise ConfigurationError("mass contains non-finite values")
        self.M = M.detach().to(dtype=dtype, device=device)
        self.diagonal = M.ndim == 1

    def apply(self, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``M v`` (or ``M^T v``) for a flat ``v``."""
        if self.diagonal:
            return self.M * v
        return (self.M.T if transpose else self.M) @ v

    def algebraic_basis(self, rtol: float = 1e-12) -> torch.Tensor | None:
        """Columns spanning the left null space of M (the algebraic equations), or None."""
        if self.diagonal:
            scale = float(self.M.abs().max()) if self.M.numel() else 0.0
            idx = torch.nonzero(self.M.abs() <= rtol * max(scale, 1e-300)).view(-1)
            if idx.numel() == 0:
                return None
            return torch.eye(self.M.numel(), dtype=self.M.dtype, device=self.M.device)[:, idx]
        U, S, _ = torch.linalg.svd(self.M)
        null = S <= rtol * max(float(S.max()), 1e-300)
        return U[:, null] if bool(null.any()) else None


class ImplicitProblem:
    """``M y' = g(t, y) + f(t, y)``: ``implicit`` (g, required), ``explicit`` (f or None).

    Both parts are :class:`ExplicitProblem` objects over the same state and the same
    parameter list (the union of both parts' parameters), so their parameter gradients
    share one flat layout.
    """

    def __init__(self, implicit: ExplicitProblem, explicit: ExplicitProblem | None,
                 mass: MassMatrix | None):
        self.implicit, self.explicit, self.mass = implicit, explicit, mass
        self.shape, self.numel = implicit.shape, implicit.numel
        self.dtype, self.device = implicit.dtype, implicit.device
        self.params, self.sign = implicit.params, implicit.sign

    def rhs(self, s: float, y: torch.Tensor) -> torch.Tensor:
        """The explicit part (RHSFunction) in PETSc time."""
        return self.explicit.rhs(s, y)

    def check_consistent(self, s0: float, y0: torch.Tensor, tol: float = 1e-8, comm=None) -> None:
        """Raise ConfigurationError if ``y0`` violates the algebraic equations at ``s0``.

        With a singular M (index-1 DAE), ``w^T (g + f)(t0, y0) = 0`` must hold for every
        ``w`` in M's left null space, to ``tol * max(1, |g + f|_inf)``. On a communicator of
        several ranks (each holding its rows of M) the verdict is taken over all of them, so
        every rank raises or none does.
        """
        if self.mass is None:
            return
        W = self.mass.algebraic_basis()
        mpi = comm.tompi4py() if comm is not None and comm.getSize() > 1 else None
        if mpi is not None:
            from mpi4py import MPI

            if not mpi.allreduce(W is not None, op=MPI.LOR):
                return
        elif W is None:
            return
        with torch.no_grad():
            y = y0.reshape(self.shape)
            r = self.implicit.rhs(s0, y).reshape(-1)
            if self.explicit is not None:
                r = r + self.explicit.rhs(s0, y).reshape(-1)
        worst = float((W.T @ r).abs().max()) if W is not None else 0.0
        scale = float(r.abs().max()) if r.numel() else 0.0
        count = W.shape[1] if W is not None else 0
        if mpi is not None:  # MPI imported above
            worst, scale = mpi.allreduce(worst, op=MPI.MAX), mpi.allreduce(scale, op=MPI.MAX)
            count = mpi.allreduce(count, op=MPI.SUM)
        if not worst <= tol * max(1.0, scale):
            raise ConfigurationError(
                f"y0 is not consistent with the algebraic equations of the DAE (singular mass): "
                f"max |w^T g(t0, y0)| = {worst:.3e} over {count} algebraic equation(s) at "
                f"t0={self.implicit.sign * s0:.6g} (tolerance {tol:g}); solve them for the "
                "algebraic variables before integrating")


def _reporting(method):
    """Hand an exception raised in a PETSc callback to ``self.on_error`` before PETSc sees it."""
    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except BaseException as exc:
            self.on_error(exc)
            raise
    return wrapper


def _ignore(exc: BaseException) -> None:
    return None


class ImplicitOperators:
    """IFunction, IJacobian and (for adjoints) IJacobianP shell of an implicit problem.

    ``jacobian``: ``"matrix-free"`` (shell, GMRES), ``"dense"`` or ``"blocks"`` (assembled
    with an exact direct preconditioner, :mod:`pnode.assembled`); ``solver_defaults`` are
    the matching KSP/PC options. ``on_error`` receives any exception raised inside a
    callback (the integrator re-raises it with its own type once PETSc has unwound).
    """

    def __init__(self, problem: ImplicitProblem, comm, params=None,
                 on_error: Callable[[BaseException], None] = _ignore, jacobian: str = "matrix-free"):
        self.problem, self.params, self.on_error = problem, params, on_error
        n = problem.numel
        P = PETSc()
        self.assembled = self.jac_ctx = None
        if jacobian == "matrix-free":
            self.jac_ctx = _ShiftedJacobian(problem)
            self.jac_ctx.on_error = on_error
            self.J = P.Mat().createPython(((n, None), (n, None)), context=self.jac_ctx, comm=comm)
            self.J.setUp()
            self.solver_defaults = dict(SOLVER_DEFAULTS)
        else:
            self.assembled = assembled.build(jacobian, problem, comm)
            self.J = self.assembled.mat
            self.solver_defaults = {**SOLVER_DEFAULTS, **self.assembled.solver_defaults}
        self.Jp = self.zero = None
        if params is not None:
            self.jacp_ctx = _ParamJacobian(problem, params)
            self.jacp_ctx.on_error = on_error
            self.Jp = P.Mat().createPython(((n, None), (params.numel, None)), context=self.jacp_ctx,
                                           comm=comm)
            self.Jp.setUp()

    def attach(self, ts, F, adjoint: bool) -> None:
        """Register the callbacks on ``ts`` (``F`` is the residual work Vec)."""
        ts.setIFunction(self._ifunction, F)
        ts.setIJacobian(self._ijacobian, self.J, self.J)
        if adjoint:
            ts.setIJacobianP(self._ijacobianp, self.Jp)
            if self.problem.explicit is None and ts.getType() == "arkimex":
                # TSAdjointStep_ARKIMEX applies an RHS Jacobian even without an explicit part
                n = self.problem.numel
                self.zero = PETSc().Mat().createPython(((n, None), (n, None)), context=_Zero(),
                                                       comm=ts.getComm())
                self.zero.setUp()
                ts.setRHSJacobian(lambda *a: None, self.zero, self.zero)

    @_reporting
    def _ifunction(self, ts, t, X, Xdot, F) -> None:
        prob = self.problem
        u = as_tensor(X, prob.shape, "r")
        udot = as_tensor(Xdot, None, "r")
        out = as_tensor(F)
        g = prob.implicit.rhs(t, u).reshape(-1)
        if prob.mass is None:
            torch.sub(udot, g, out=out)
        else:
            torch.sub(prob.mass.apply(udot), g, out=out)

    @_reporting
    def _ijacobian(self, ts, t, X, Xdot, shift, A, B) -> None:
        if self.assembled is not None:
            self.assembled.assemble(t, as_tensor(X, None, "r"), shift)
        else:
            self.jac_ctx.set_point(t, as_tensor(X, None, "r"), shift)

    @_reporting
    def _ijacobianp(self, ts, t, X, Xdot, shift, Jp) -> None:
        self.jacp_ctx.set_point(t, as_tensor(X, None, "r"))

    def destroy(self) -> None:
        for m in (self.J, self.Jp, self.zero):
            if m is not None:
                m.destroy()


class _Linearisation:
    """``g(t, x)`` with its autograd graph at one point, built lazily and reused."""

    def __init__(self, problem: ImplicitProblem):
        self.problem = problem
        self.x = torch.zeros(problem.numel, dtype=problem.dtype, device=problem.device)
        self.t = 0.0
        self._graph = None

    def set_point(self, t: float, x: torch.Tensor) -> None:
        self.t = t
        self.x.copy_(x)
        self._graph = None

    def graph(self):
        """(x leaf, g(t, x) flat) with a retained graph."""
        if self._graph is None:
            prob = self.problem
            with torch.enable_grad():
                xr = self.x.detach().view(prob.shape).requires_grad_(True)
                g = prob.implicit.rhs(self.t, xr).reshape(-1)
            self._graph = (xr, g)
        return self._graph


class _ShiftedJacobian(_Linearisation):
    """Shell context of ``shift*M - dg/du`` (also scaled by ``MatScale`` calls)."""

    def __init__(self, problem: ImplicitProblem):
        super().__init__(problem)
        self.shift, self.factor = 0.0, 1.0
        self._dual = None

    def set_point(self, t: float, x: torch.Tensor, shift: float = 0.0) -> None:
        super().set_point(t, x)
        self.shift, self.factor = shift, 1.0
        self._dual = None

    def _mass(self, v: torch.Tensor, transpose: bool) -> torch.Tensor:
        mass = self.problem.mass
        return v if mass is None else mass.apply(v, transpose)

    def _jvp(self, v: torch.Tensor) -> torch.Tensor:
        # (dg/du) v = d/dw <(dg/du)^T w, v>, with one double-backward graph per point
        if self._dual is None:
            xr, g = self.graph()
            gt = w = None
            if g.requires_grad:
                with torch.enable_grad():
                    w = torch.zeros_like(g, requires_grad=True)
                    (gt,) = torch.autograd.grad(g, xr, w, create_graph=True, allow_unused=True)
            self._dual = (w, gt)
        w, gt = self._dual
        if gt is None:  # g does not depend on the state
            return torch.zeros_like(v)
        # gt = (dg/du)^T w is linear in w: a backward pass that does not reach w is one
        # that autograd cannot differentiate (it would silently give a zero product)
        jv = None
        if gt.requires_grad:
            (jv,) = torch.autograd.grad(gt, w, v.view(gt.shape), retain_graph=True, allow_unused=True)
        if jv is None:
            raise ConfigurationError(
                "the matrix-free Jacobian needs the implicit function to be twice "
                "differentiable (its Jacobian-vector products differentiate a backward pass), "
                "but its backward pass is not differentiable (a custom autograd.Function "
                "marked once_differentiable, or one that detaches?); use jacobian='dense' or "
                "'blocks', or make the backward differentiable")
        return jv.reshape(-1)

    def _vjp(self, v: torch.Tensor) -> torch.Tensor:
        xr, g = self.graph()
        if not g.requires_grad:
            return torch.zeros_like(v)
        (jt,) = torch.autograd.grad(g, xr, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if jt is None else jt.reshape(-1)

    @_reporting
    def mult(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        y = as_tensor(Y)
        y.copy_(self._mass(v, False).mul(self.shift).sub_(self._jvp(v)).mul_(self.factor))

    @_reporting
    def multTranspose(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        y = as_tensor(Y)
        y.copy_(self._mass(v, True).mul(self.shift).sub_(self._vjp(v)).mul_(self.factor))

    def scale(self, mat, a) -> None:
        self.factor *= float(a)


class _ParamJacobian(_Linearisation):
    """Shell context of ``dF/dp = -dg/dp`` (only its transpose is applied)."""

    def __init__(self, problem: ImplicitProblem, params):
        super().__init__(problem)
        self.params = params
        self._out = torch.zeros(max(params.numel, 1), dtype=problem.dtype, device=problem.device)

    @_reporting
    def multTranspose(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        y = as_tensor(Y)
        xr, g = self.graph()
        if g.requires_grad and self.params.numel:
            grads = torch.autograd.grad(g, self.params.params, v, retain_graph=True, allow_unused=True)
            self.params.pack(grads, self._out)
        else:
            self._out.zero_()
        y.copy_(self._out[: y.numel()]).neg_()


class _Zero:
    """Shell context of a zero matrix."""

    def mult(self, mat, X, Y) -> None:
        Y.zeroEntries()

    def multTranspose(self, mat, X, Y) -> None:
        Y.zeroEntries()


def failure_detail(ts, reason: int) -> tuple[str, str]:
    """(reason in words, hint) for a failed implicit TS solve or adjoint solve."""
    words = ts_reason(reason)
    prefix = "-" + (ts.getOptionsPrefix() or "")
    if reason == -1:
        snes = ts.getSNES()
        words += f"; last Newton solve: {snes_reason(snes.getConvergedReason())}"
        ksp = snes.getKSP()
        if int(ksp.getConvergedReason()) < 0:
            words += f"; its linear solve: KSP reason {int(ksp.getConvergedReason())}"
        failures = ts.getSNESFailures()
        if failures > 1:  # PETSc cut the step after each failure: smaller steps did not help
            hint = (f"Newton failed {failures} times in this solve although the step was cut after "
                    f"each failure (limit {prefix}ts_max_snes_failures): allow more failures or "
                    f"Newton iterations ({prefix}snes_max_it), tighten rtol/atol, add a "
                    f"preconditioner ({prefix}pc_type ...) or try another tableau; check that the "
                    "implicit function is smooth")
        else:
            hint = (f"Newton did not converge: try a smaller step_size, an adaptive method "
                    f"(method='arkimex'), more iterations ({prefix}snes_max_it) or a preconditioner "
                    f"({prefix}pc_type ...); check that the implicit function is smooth")
    elif reason == -2:
        hint = ("the step size collapsed after repeated rejections: loosen rtol/atol, raise "
                f"{prefix}ts_max_reject or check the problem for a singularity")
    elif reason in (-3, -4):
        hint = (f"the linear solve diverged: raise {prefix}ksp_max_it, add a preconditioner "
                f"({prefix}pc_type ...) or check that shift*M - dg/du is nonsingular")
    else:
        hint = "try tighter tolerances or a smaller step"
    return words, hint


def build_problem(func: Callable, implicit: Callable | None, mass: torch.Tensor | None, method,
                  shape, dtype: torch.dtype, device: torch.device, params, sign: float):
    """The problem object for ``method``: ExplicitProblem, or ImplicitProblem for implicit
    methods (``func`` implicit, or ``implicit`` implicit + ``func`` explicit for IMEX)."""
    if not method.implicit:
        if implicit is not None or mass is not None:
            what, which = (("implicit=", "'arkimex'") if implicit is not None
                           else ("mass=", "'beuler', 'cn' or 'theta'"))
            raise ConfigurationError(f"{what} needs method={which}, got method {method.name!r}")
        return ExplicitProblem(func, shape, dtype, device, params, sign)
    if method.ts_type == "arkimex" and mass is not None:
        raise ConfigurationError(
            "method 'arkimex' with mass= is not supported: PETSc's ARKIMEX adjoint "
            "(TSAdjointStep_ARKIMEX) and its IMEX stages assume an identity mass matrix; use "
            "method='beuler', 'cn' or 'theta' for M y' = f(t, y)")
    if implicit is not None and method.ts_type != "arkimex":
        raise ConfigurationError(
            f"an IMEX split (implicit=g) needs method='arkimex', got {method.name!r}; "
            f"{method.name!r} treats func implicitly on its own")
    n = int(torch.Size(shape).numel())
    stiff = ExplicitProblem(implicit if implicit is not None else func, shape, dtype, device, params, sign)
    nonstiff = ExplicitProblem(func, shape, dtype, device, params, sign) if implicit is not None else None
    M = MassMatrix(mass, n, dtype, device) if mass is not None else None
    return ImplicitProblem(stiff, nonstiff, M)
