"""What is solved: explicit ``y' = f(t, y)``, implicit ``M y' = g(t, y)`` and IMEX
``y' = g(t, y) + f(t, y)`` problems over a torch state of any shape.

PETSc steps forward in its own time ``s``, measured from the first output time ``t0``
(:attr:`ExplicitProblem.origin`): ``t = t0 + sign * s``. A decreasing user grid has
``sign = -1`` and the right-hand side becomes ``-f(t0 - s, y)``, which keeps the
discrete adjoint exact; times relative to ``t0`` keep the steps' arithmetic exact for
grids far from zero (Unix timestamps), while ``func`` always sees the user's time.

Mass matrices: :class:`MassMatrix` is constant (dense or diagonal, possibly singular:
index-1 DAEs). An implicit problem reaches its mass only through
``mass.product(t, u, v, transpose)``, ``mass.matrix(t, u)`` and ``mass.depends_on_state``,
so a state-dependent ``M(u)`` (neural-Galerkin marching,
:meth:`pnode.pinn.GalerkinProblem.implicit_form`) plugs in as another object with those
members; its ``product`` must be differentiable in ``u`` (the Newton Jacobian holds
``d(M(u) u')/du``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .comm import allreduce
from .errors import ConfigurationError


class ExplicitProblem:
    """``y' = func(t, y)`` with ``y`` of ``shape``; ``sign=-1`` integrates a decreasing grid."""

    def __init__(self, func: Callable, shape: Sequence[int], dtype: torch.dtype,
                 device: torch.device, params: Sequence[torch.Tensor], sign: float = 1.0):
        self.func = func
        self.shape = tuple(shape)
        self.numel = int(torch.Size(self.shape).numel())
        self.dtype, self.device = dtype, device
        self.params = tuple(params)
        self.sign = float(sign)
        self.origin = 0.0
        self._t = torch.zeros((), dtype=dtype, device=device)
        self._t_value = 0.0  # what _t holds: a stage's repeated calls skip the fill (~1 us)

    def user_time(self, s: float) -> torch.Tensor:
        """The user's time tensor for PETSc time ``s`` (one reused 0-d buffer)."""
        t = self.origin + self.sign * s
        if t != self._t_value:
            self._t.fill_(t)
            self._t_value = t
        return self._t

    def rhs(self, s: float, y: torch.Tensor) -> torch.Tensor:
        """Right-hand side in PETSc time; checks what ``func`` returns."""
        out = self.func(self.user_time(s), y)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape or out.dtype != y.dtype \
                or out.device != y.device:
            raise ConfigurationError(_describe_bad_output(out, y))
        return out if self.sign > 0 else -out


def _describe_bad_output(out, y: torch.Tensor) -> str:
    if not isinstance(out, torch.Tensor):
        return f"func must return a torch.Tensor, got {type(out).__name__}"
    return (f"func returned shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}; "
            f"the state has shape {tuple(y.shape)}, dtype {y.dtype}, device {y.device}")


class MassMatrix:
    """A constant mass matrix: ``(n, n)`` dense or ``(n,)`` diagonal; may be singular (DAE)."""

    depends_on_state = False

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

    def product(self, t: float, u: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``M(t, u) v`` (or ``M^T v``); a constant matrix ignores ``t`` and ``u``."""
        return self.apply(v, transpose)

    def matrix(self, t: float, u: torch.Tensor) -> torch.Tensor:
        """``M`` as a dense ``(n, n)`` matrix."""
        return torch.diag(self.M) if self.diagonal else self.M

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

    def __init__(self, implicit: ExplicitProblem, explicit: ExplicitProblem | None, mass,
                 jac: Callable | None = None):
        self.implicit, self.explicit, self.mass = implicit, explicit, mass
        self.jac = jac  # the user's dg/du (user time), or None: by autograd
        self.shape, self.numel = implicit.shape, implicit.numel
        self.dtype, self.device = implicit.dtype, implicit.device
        self.params, self.sign = implicit.params, implicit.sign

    @property
    def origin(self) -> float:
        return self.implicit.origin

    @origin.setter
    def origin(self, t0: float) -> None:
        for part in (self.implicit, self.explicit):
            if part is not None:
                part.origin = t0

    def user_time(self, s: float) -> torch.Tensor:
        return self.implicit.user_time(s)

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
        if self.mass is None or self.mass.depends_on_state:
            return
        W = self.mass.algebraic_basis()
        if not allreduce(W is not None, "or", comm):
            return
        with torch.no_grad():
            y = y0.reshape(self.shape)
            r = self.implicit.rhs(s0, y).reshape(-1)
            if self.explicit is not None:
                r = r + self.explicit.rhs(s0, y).reshape(-1)
        worst = allreduce(float((W.T @ r).abs().max()) if W is not None else 0.0, "max", comm)
        scale = allreduce(float(r.abs().max()) if r.numel() else 0.0, "max", comm)
        count = allreduce(W.shape[1] if W is not None else 0, "sum", comm)
        if not worst <= tol * max(1.0, scale):
            raise ConfigurationError(
                f"y0 is not consistent with the algebraic equations of the DAE (singular mass): "
                f"max |w^T g(t0, y0)| = {worst:.3e} over {count} algebraic equation(s) at "
                f"t0={self.implicit.origin + self.implicit.sign * s0:.10g} (tolerance {tol:g}); solve "
                "them for the algebraic variables before integrating")


def build_problem(func: Callable, implicit: Callable | None, mass: torch.Tensor | None, method,
                  shape, dtype: torch.dtype, device: torch.device, params, sign: float,
                  jac: Callable | None = None):
    """The problem object for ``method``: ExplicitProblem, or ImplicitProblem for implicit
    methods (``func`` implicit, or ``implicit`` implicit + ``func`` explicit for IMEX;
    ``jac(t, y)``: the user's Jacobian of the implicit part)."""
    if not method.implicit:
        if jac is not None:
            raise ConfigurationError(f"jac= is the Jacobian of an implicit method's Newton solves; "
                                     f"method {method.name!r} is explicit")
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
    if mass is None or hasattr(mass, "depends_on_state"):
        M = mass
    else:
        M = MassMatrix(mass, n, dtype, device)
    if jac is not None and not callable(jac):
        raise ConfigurationError(f"jac must be callable as jac(t, y) -> dg/du, got {type(jac).__name__}")
    return ImplicitProblem(stiff, nonstiff, M, jac)
