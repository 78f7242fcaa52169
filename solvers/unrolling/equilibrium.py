"""Deep-equilibrium mode: the fixed point ``x* = f(x*, y)`` of one iteration map, found by
PETSc SNES, with a selectable gradient: :class:`Equilibrium`.

Forward: SNES on ``F(x) = x - f(x, y)`` over the whole batch as one Vec on the
operator's communicator: ``"anderson"`` (SNESANDERSON), ``"newton"`` (Newton-Krylov,
SNESNEWTONLS with a Jacobian shell ``v - (df/dx) v`` whose product is a JVP by double
backward) or ``"picard"`` (SNESNRICHARDSON); every SNES/KSP option under
``options_prefix`` (the command line wins). A solve that does not reach the tolerance
raises :class:`pnode.ConvergenceError` naming the iteration count and the residual.

Backward (``gradient=``):

* ``"implicit"``: the implicit function theorem. The output is ``f(x*, y)`` recorded
  once; a hook replaces its incoming gradient ``g`` by the solution ``w`` of
  ``(I - J^T) w = g`` (``J = df/dx`` at ``x*``), a matrix-free KSP (GMRES) whose
  product is one VJP, so the backward through ``f`` gives ``(df/dtheta)^T w``.
* ``"phantom"``: Geng et al.'s unrolled phantom gradient, ``k`` damped steps
  ``z <- (1 - lam) z + lam f(z, y)`` from ``z = x*`` recorded by autograd.
* ``"neumann"``: the truncated Neumann series ``w = sum_{j<=k} (J^T)^j g`` in the hook.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from pnode.comm import as_petsc_comm
from pnode.errors import ConfigurationError, ConvergenceError, snes_reason
from pnode.guard import CallbackGuard
from pnode.matop import TensorProducts, shell_mat
from pnode.options import ScopedOptions
from pnode.startup import PETSc
from pnode.vec import as_tensor, lent

from .operators import as_operator
from .prox import Prox, as_prox
from .unrolled import IterationParameter

SOLVERS = {"anderson": "anderson", "newton": "newtonls", "picard": "nrichardson"}
GRADIENTS = ("implicit", "phantom", "neumann")


class ProximalStep(torch.nn.Module):
    """One proximal-gradient step ``f(x, y) = prox(x - tau A^T(Ax - y), tau lam)`` with
    learnable ``tau`` (start ``1/L``) and ``lam``: a fixed-point map for :class:`Equilibrium`."""

    def __init__(self, A, prox: Prox | str = "soft", weight: float = 0.1, lipschitz: float | None = None):
        super().__init__()
        self.op = as_operator(A)
        self.prox = as_prox(prox)
        L = self.op.lipschitz() if lipschitz is None else float(lipschitz)
        self.step = IterationParameter(1.0 / L, 1, tied=True, dtype=self.op.dtype)
        self.weight = IterationParameter(weight, 1, tied=True, dtype=self.op.dtype)

    @property
    def n_local(self) -> int:
        return self.op.n_local

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tau = self.step(0)
        return self.prox(x - tau * self.op.adjoint(self.op(x) - y), tau * self.weight(0))


class Equilibrium(torch.nn.Module):
    """``x* = f(x*, y)`` for ``f`` = ``step`` (a module ``step(x, y)`` with ``n_local``,
    this rank's signal size, and optionally ``op.comm``), see the module docstring."""

    def __init__(self, step: torch.nn.Module, *, solver: str = "anderson", gradient: str = "implicit",
                 phantom_steps: int = 5, damping: float = 0.5, rtol: float = 1e-10, atol: float = 1e-12,
                 max_it: int = 200, options: Mapping[str, Any] | None = None, options_prefix: str | None = None):
        super().__init__()
        if solver not in SOLVERS:
            raise ConfigurationError(f"unknown fixed-point solver {solver!r}; choose one of {sorted(SOLVERS)}")
        if gradient not in GRADIENTS:
            raise ConfigurationError(f"unknown gradient {gradient!r}; choose one of {GRADIENTS}")
        if phantom_steps < 1 or not 0.0 < damping <= 1.0:
            raise ConfigurationError(f"phantom gradients need phantom_steps >= 1 and 0 < damping <= 1, "
                                     f"got {phantom_steps} and {damping}")
        self.step = step
        self.solver, self.gradient = solver, gradient
        self.phantom_steps, self.damping = phantom_steps, damping
        self.tolerances = {"snes_rtol": rtol, "snes_atol": atol, "snes_stol": 1e-16, "snes_max_it": max_it}
        self.options = ScopedOptions(options_prefix, options)
        op = getattr(step, "op", None)
        self.comm = as_petsc_comm(getattr(op, "comm", None))
        self.guard = CallbackGuard(self.comm)
        self.iterations = 0  # of the last solve
        self.residual = float("nan")

    def forward(self, y: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
        op = getattr(self.step, "op", None)
        if op is not None:
            op.check_measurements(y)
            if x0 is not None:
                op.check_signal(x0, "the initial guess x0")
        x0 = y.new_zeros(*y.shape[:-1], self.step.n_local) if x0 is None else x0
        x_star = self.solve(y.detach(), x0.detach())
        if self.gradient == "phantom":
            z = x_star
            for _ in range(self.phantom_steps):
                z = (1.0 - self.damping) * z + self.damping * self.step(z, y)
            return z
        z = self.step(x_star, y)
        if z.requires_grad:
            backward = self._implicit if self.gradient == "implicit" else self._neumann
            z.register_hook(lambda g: backward(x_star, y.detach(), g))
        return z

    # -- forward: SNES --------------------------------------------------------------------
    def solve(self, y: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The fixed point (no graph), from ``x0``."""
        P = PETSc()
        x = x0.clone().contiguous()
        X = P.Vec().createMPI((x.numel(), P.DECIDE), comm=self.comm)
        F = X.duplicate()
        snes = P.SNES().create(comm=self.comm)
        jac = None
        try:
            snes.setFunction(self.guard.wrap(lambda s, Xv, Fv: self._residual(Xv, Fv, y, x.shape)), F)
            if self.solver == "newton":
                lin = _Linearisation(self.step, y, x.shape)
                jac = shell_mat(TensorProducts(lin.product), x.numel(), x.numel(), self.comm, self.guard)
                snes.setJacobian(self.guard.wrap(lambda s, Xv, J, Pm: lin.at(Xv)), jac, jac)
            defaults = {"snes_type": SOLVERS[self.solver], **self.tolerances}
            if self.solver == "newton":
                defaults.update({"ksp_type": "gmres", "pc_type": "none", "ksp_rtol": 1e-12})
            self.options.with_defaults(defaults).apply(snes)
            with lent(X, x) as Xv:
                self.guard.run(lambda: snes.solve(None, Xv), lambda: {"step": snes.getIterationNumber()})
            self.iterations = int(snes.getIterationNumber())
            reason = int(snes.getConvergedReason())
            self.residual = float(snes.getFunctionNorm())
            if reason < 0:
                raise ConvergenceError(
                    f"the fixed-point iteration ({snes.getType()}) did not converge: {self.iterations} "
                    f"iterations, residual ||x - f(x, y)|| = {self.residual:.3e}; raise "
                    f"-{self.options.prefix}snes_max_it, loosen the tolerances or make f contractive "
                    "(smaller steps)", step=self.iterations, reason=snes_reason(reason), collective=True)
        finally:
            snes.destroy()
            X.destroy()
            F.destroy()
            if jac is not None:
                jac.destroy()
        return x

    def _residual(self, Xv, Fv, y: torch.Tensor, shape) -> None:
        x = as_tensor(Xv, shape, "r")
        with torch.no_grad():
            as_tensor(Fv, shape).copy_(x - self.step(x, y))

    # -- backward ---------------------------------------------------------------------------
    def _vjp_at(self, x_star: torch.Tensor, y: torch.Tensor):
        with torch.enable_grad():
            xg = x_star.detach().requires_grad_(True)
            fx = self.step(xg, y)
        return lambda v: torch.autograd.grad(fx, xg, v, retain_graph=True)[0]

    def _implicit(self, x_star: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``w`` with ``(I - J^T) w = g`` by a matrix-free KSP."""
        P = PETSc()
        vjp = self._vjp_at(x_star, y)
        shape = g.shape
        mat = shell_mat(TensorProducts(lambda v: v - vjp(v.view(shape)).reshape(-1)), g.numel(), g.numel(),
                        self.comm, self.guard)
        ksp = P.KSP().create(comm=self.comm)
        b, w = mat.createVecs()
        out = torch.zeros_like(g).contiguous()
        rhs = g.detach().contiguous()
        try:
            ksp.setOperators(mat)
            ScopedOptions(f"{self.options.prefix}adjoint_", None).with_defaults(
                {"ksp_type": "gmres", "pc_type": "none", "ksp_rtol": 1e-12, "ksp_atol": 1e-50,
                 "ksp_max_it": 500}).apply(ksp)
            with lent(b, rhs) as B, lent(w, out) as W:
                self.guard.run(lambda: ksp.solve(B, W), lambda: {})
            reason = int(ksp.getConvergedReason())
            if reason < 0:
                raise ConvergenceError(
                    f"the implicit-gradient solve (I - J^T) w = g did not converge: "
                    f"{ksp.getIterationNumber()} iterations, residual {ksp.getResidualNorm():.3e}",
                    reason=f"KSP reason {reason}", collective=True)
        finally:
            ksp.destroy()
            mat.destroy()
            b.destroy()
            w.destroy()
        return out

    def _neumann(self, x_star: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``sum_{j <= k} (J^T)^j g``."""
        vjp = self._vjp_at(x_star, y)
        term, total = g, g
        for _ in range(self.phantom_steps):
            term = vjp(term)
            total = total + term
        return total


class _Linearisation:
    """``v - (df/dx) v`` at the point SNES linearises at (a JVP by double backward)."""

    def __init__(self, step: torch.nn.Module, y: torch.Tensor, shape):
        self.step, self.y, self.shape = step, y, shape
        self._u = self._g = None

    def at(self, Xv) -> None:
        with torch.enable_grad():
            x = as_tensor(Xv, self.shape, "r").detach().clone().requires_grad_(True)
            fx = self.step(x, self.y)
            self._u = torch.zeros_like(fx, requires_grad=True)
            self._g = torch.autograd.grad(fx, x, self._u, create_graph=True)[0]

    def product(self, v: torch.Tensor) -> torch.Tensor:
        jv = torch.autograd.grad(self._g, self._u, v.view(self.shape), retain_graph=True)[0]
        return (v.view(self.shape) - jv).reshape(-1)
