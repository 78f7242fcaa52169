"""What a training solver minimises, evaluated on a distributed parameter Vec.

:class:`Objective` describes the loss: a closure returning this rank's scalar
contribution (a torch tensor with its graph), or a residual function returning this
rank's rows of a residual vector ``r`` (the loss is then ``0.5 ||r||^2``). With
``reduce="sum"`` (the default) the ranks' contributions add up to the loss (each rank
holds a shard of the data); with ``reduce="none"`` every rank computes the whole loss.

:class:`Evaluator` binds an objective to a :class:`pnode.params.ParamVec`: it puts a
point ``X`` (a distributed Vec) into the replicated model, runs the closure and writes
the loss, the gradient (reduce-scattered into a Vec split like ``X``), Hessian-vector
products (double backward) and residual Jacobian products (JVP/VJP) back into PETSc
vectors. A non-finite loss or gradient raises :class:`NonFiniteObjectiveError` on every
rank together.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from pnode.comm import allreduce, reduce_scatter_sum
from pnode.errors import ConfigurationError, ConvergenceError
from pnode.params import ParamVec
from pnode.vec import as_tensor, host_array

REDUCTIONS = ("sum", "none")
JACOBIANS = ("shell", "dense")


class NonFiniteObjectiveError(ConvergenceError):
    """The loss or its gradient became NaN or Inf; the model holds the last good iterate."""


class Objective:
    """A loss to minimise over a model's parameters.

    ``closure()`` returns this rank's scalar loss (do not call ``backward``: pnode
    differentiates it; a torch.optim-style closure that calls ``loss.backward()`` itself
    works for first-order use, its ``.grad`` is read). ``residual()`` returns this rank's
    residual rows (any shape; their number must not change; the ranks' rows together
    make the residual); the loss is then
    ``0.5 * ||r||^2`` and Gauss-Newton solvers (TAO ``brgn``) use the Jacobian, as
    matrix-free JVP/VJP products (``jacobian="shell"``) or assembled (``"dense"``, for
    small problems). Give one of ``closure`` or ``residual``. ``jacobian_rows()``, when
    given, returns this rank's assembled Jacobian rows ``(rows, numel)`` at the model's
    point, columns in the order of the solver's parameters (e.g. by ``vmap`` over
    ``jacrev``, as :mod:`pnode.pinn` does); without it assembled rows take one backward
    pass each.
    """

    def __init__(self, closure: Callable[[], torch.Tensor] | None = None, *,
                 residual: Callable[[], torch.Tensor] | None = None, reduce: str = "sum",
                 jacobian: str = "shell", jacobian_rows: Callable[[], torch.Tensor] | None = None):
        if (closure is None) == (residual is None):
            raise ConfigurationError("an Objective needs exactly one of closure= or residual=")
        if jacobian_rows is not None and residual is None:
            raise ConfigurationError("jacobian_rows= belongs to a residual (give residual= too)")
        for name, fn in (("closure", closure), ("residual", residual), ("jacobian_rows", jacobian_rows)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(f"{name} must be callable, got {type(fn).__name__}")
        if reduce not in REDUCTIONS:
            raise ConfigurationError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if residual is not None and reduce != "sum":
            raise ConfigurationError(
                "a residual's rows are split over the ranks (each rank returns its own rows), so "
                "reduce must be 'sum'")
        if jacobian not in JACOBIANS:
            raise ConfigurationError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
        self.closure, self.residual = closure, residual
        self.reduce, self.jacobian = reduce, jacobian
        self.jacobian_rows = jacobian_rows

    @property
    def has_residual(self) -> bool:
        return self.residual is not None

    def loss(self) -> torch.Tensor:
        """This rank's contribution to the loss, with its graph."""
        if self.residual is not None:
            r = self.residual_rows()
            return 0.5 * (r * r).sum()
        loss = self.closure()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ConfigurationError(f"the closure must return a scalar torch tensor (the loss), got {shape}")
        return loss.reshape(())

    def residual_rows(self) -> torch.Tensor:
        """This rank's residual rows, flat."""
        r = self.residual()
        if not isinstance(r, torch.Tensor):
            raise ConfigurationError(f"residual() must return a torch tensor, got {type(r).__name__}")
        return r.reshape(-1)


def as_param_vec(params, comm=None) -> ParamVec:
    """A ParamVec from a ParamVec, an ``nn.Module`` or an iterable of tensors."""
    if isinstance(params, ParamVec):
        return params
    if isinstance(params, torch.nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    elif isinstance(params, torch.Tensor):
        params = [params]
    return ParamVec(list(params), comm)


class Evaluator:
    """An :class:`Objective` evaluated at distributed points of a :class:`ParamVec`."""

    def __init__(self, objective: Objective, pvec: ParamVec):
        if not isinstance(objective, Objective):
            raise ConfigurationError(f"objective must be a pnode.solvers.Objective, got {type(objective).__name__}")
        self.objective, self.pvec = objective, pvec
        self.params = list(pvec.params)
        self.reduce = objective.reduce == "sum"
        self.calls_backward: bool | None = None  # learned at the first gradient evaluation
        self.gradients = 0  # evaluations of the loss with its gradient
        self.values = 0  # evaluations of the loss alone
        self._flat = torch.empty_like(pvec.full)
        self._point = torch.empty_like(pvec.full)
        self._at: torch.Tensor | None = None  # the values last put into the model
        self._versions: tuple[int, ...] = ()
        self._rows: int | None = None

    def _model_versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.params)

    def push(self, X) -> None:
        """Put the point ``X`` into the model (skipped when the model holds it already, so
        that graphs recorded there stay valid; None: the model stays as it is)."""
        if X is None:
            return
        self.pvec.to_full(X, self._point)
        if self._at is not None and self._versions == self._model_versions() and torch.equal(self._point, self._at):
            return
        self.pvec.buffer.assign(self._point)
        self._at = self._point.clone()
        self._versions = self._model_versions()

    # -- values and gradients ------------------------------------------------------------

    def _total(self, loss: torch.Tensor) -> float:
        value = float(loss.detach())
        return allreduce(value, "sum", self.pvec.mpi) if self.reduce else value

    def value(self, X) -> float:
        """The loss at ``X`` (no gradient)."""
        self.push(X)
        self.values += 1
        if self.calls_backward is False or self.calls_backward is None and self.objective.has_residual:
            with torch.no_grad():
                loss = self.objective.loss()
        else:
            loss = self.objective.loss()
        value = self._total(loss)
        self._check(value, None)
        return value

    def value_gradient(self, X, G) -> float:
        """The loss at ``X``; its gradient into ``G`` (split like ``X``)."""
        self.push(X)
        self.gradients += 1
        for p in self.params:
            p.grad = None
        loss = self.objective.loss()
        did_backward = any(p.grad is not None for p in self.params)
        self.calls_backward = did_backward if self.calls_backward is None else self.calls_backward
        if not did_backward:
            if not loss.requires_grad:
                raise ConfigurationError("the loss does not depend on the parameters (it has no graph)")
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            for p, g in zip(self.params, grads):
                p.grad = g
        value = self._total(loss)
        self.pvec.gradient_into(G, reduce=self.reduce)
        self._check(value, G.norm())
        return value

    def _check(self, value: float, gnorm: float | None) -> None:
        if not math.isfinite(value) or (gnorm is not None and not math.isfinite(gnorm)):
            what = "loss" if not math.isfinite(value) else "gradient"
            raise NonFiniteObjectiveError(
                f"the {what} is not finite (loss {value}, gradient norm {gnorm}); the model keeps "
                "the last good iterate", collective=True)

    # -- second order: Hessian-vector products -------------------------------------------

    def linearise_gradient(self, X) -> None:
        """Record the gradient's graph at ``X`` for Hessian-vector products."""
        if self.calls_backward:
            raise ConfigurationError(
                "Hessian-vector products need a closure that returns the loss without calling "
                "backward() (pnode differentiates it twice)")
        self.push(X)
        loss = self.objective.loss()
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self._hvp = [(p, g) for p, g in zip(self.params, grads) if g is not None and g.requires_grad]
        self._hvp_at = (self._at, self._versions)

    def hessian_product(self, V, Y) -> None:
        """``Y = H V`` at the point of :meth:`linearise_gradient` (double backward; the graph
        is recorded again if the model was moved to another point in between)."""
        at, versions = self._hvp_at
        if self._at is not at or self._versions != self._model_versions():
            self._relinearise(at, self.linearise_gradient)
        views = self._views(self.pvec.to_full(V, self._flat))
        index = {id(p): i for i, p in enumerate(self.params)}
        outs = [g for _, g in self._hvp]
        ins = [views[index[id(p)]] for p, _ in self._hvp]
        hv = torch.autograd.grad(outs, self.params, grad_outputs=ins, retain_graph=True,
                                 allow_unused=True) if outs else [None] * len(self.params)
        self._scatter(hv, Y)

    def _relinearise(self, at: torch.Tensor, linearise: Callable) -> None:
        self.pvec.buffer.assign(at)
        self._at, self._versions = at, self._model_versions()
        linearise(None)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return self.pvec.buffer.unpack(flat)

    def _scatter(self, grads: Sequence[torch.Tensor | None], Y) -> None:
        """This rank's contributions ``grads`` (full length) into ``Y``: summed over the
        ranks (``reduce="sum"``) or this rank's own block."""
        full = self.pvec.full
        self.pvec.buffer.pack(list(grads), full)
        out = self.pvec.local_of(Y)
        if self.reduce:
            reduce_scatter_sum(full, self.pvec.counts, out, self.pvec.mpi)
        else:
            out.copy_(full[self.pvec.start:self.pvec.stop])
        Y.stateIncrease()

    # -- least squares: residual and its Jacobian ----------------------------------------

    def residual_rows(self) -> int:
        """How many residual rows this rank holds (evaluated once at the model's point)."""
        if self._rows is None:
            with torch.no_grad():
                self._rows = int(self.objective.residual_rows().numel())
        return self._rows

    def residual(self, X, F) -> None:
        """The residual rows at ``X`` into ``F``."""
        self.push(X)
        self.values += 1
        with torch.no_grad():
            r = self._rows_checked()
        as_tensor(F).copy_(r)
        F.stateIncrease()
        self._check(float(F.norm()), None)

    def _rows_checked(self) -> torch.Tensor:
        r = self.objective.residual_rows()
        if r.numel() != self.residual_rows():
            raise ConfigurationError(
                f"residual() returned {r.numel()} rows on this rank, {self.residual_rows()} before: "
                "the number of residual rows must stay fixed")
        return r

    def linearise_residual(self, X) -> None:
        """Record the residual's graph at ``X`` for Jacobian products."""
        self.push(X)
        self.gradients += 1
        r = self._rows_checked()
        if not r.requires_grad:
            raise ConfigurationError("the residual does not depend on the parameters (it has no graph)")
        u = torch.zeros_like(r, requires_grad=True)
        jt_u = torch.autograd.grad(r, self.params, grad_outputs=u, create_graph=True, allow_unused=True)
        self._r, self._u = r, u
        self._jt_u = [g for g in jt_u if g is not None]
        self._jt_u_params = [p for p, g in zip(self.params, jt_u) if g is not None]
        self._jac_at = (self._at, self._versions)

    def linearised_residual_into(self, F) -> None:
        """The residual rows recorded by :meth:`linearise_residual` into ``F``."""
        as_tensor(F).copy_(self._r.detach().reshape(-1))
        F.stateIncrease()

    def _at_residual_point(self) -> None:
        at, versions = self._jac_at
        if self._at is not at or self._versions != self._model_versions():
            self._relinearise(at, self.linearise_residual)

    def jacobian_product(self, V, Y) -> None:
        """``Y = J V`` (this rank's rows), by the transpose of the transposed product."""
        self._at_residual_point()
        views = self._views(self.pvec.to_full(V, self._flat))
        index = {id(p): i for i, p in enumerate(self.params)}
        ins = [views[index[id(p)]] for p in self._jt_u_params]
        (jv,) = torch.autograd.grad(self._jt_u, self._u, grad_outputs=ins, retain_graph=True,
                                    allow_unused=True)
        out = as_tensor(Y)
        if jv is None:
            out.zero_()
        else:
            out.copy_(jv)
        Y.stateIncrease()

    def jacobian_transpose_product(self, W, Y) -> None:
        """``Y = J^T W`` (the ranks' rows summed), one backward pass."""
        self._at_residual_point()
        w = as_tensor(W, None, "r")
        jt_w = torch.autograd.grad(self._r, self.params, grad_outputs=w.view_as(self._r),
                                   retain_graph=True, allow_unused=True)
        self._scatter(jt_w, Y)

    def residual_and_rows(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's residual rows and assembled Jacobian rows ``(rows, numel)`` at ``X``
        (by the objective's ``jacobian_rows`` when it has one)."""
        if self.objective.jacobian_rows is None:
            self.linearise_residual(X)
            return self._r.detach(), self.dense_jacobian()
        self.push(X)
        self.gradients += 1
        with torch.no_grad():
            r = self._rows_checked()
        return r, self._checked_rows(self.objective.jacobian_rows(), r.numel())

    def _checked_rows(self, rows, m: int) -> torch.Tensor:
        if not isinstance(rows, torch.Tensor) or tuple(rows.shape) != (m, self.pvec.numel):
            shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
            raise ConfigurationError(
                f"jacobian_rows() must return this rank's rows as a ({m}, {self.pvec.numel}) tensor, got {shape}")
        return rows.detach()

    def dense_jacobian(self) -> torch.Tensor:
        """This rank's rows of the Jacobian at the linearised point, ``(rows, numel)``."""
        if self.objective.jacobian_rows is not None:
            self._at_residual_point()
            return self._checked_rows(self.objective.jacobian_rows(), self._r.numel())
        m = self._r.numel()
        eye = torch.eye(m, dtype=self._r.dtype, device=self._r.device)
        rows = torch.empty(m, self.pvec.numel, dtype=self._r.dtype, device=self._r.device)
        for i in range(m):
            grads = torch.autograd.grad(self._r, self.params, grad_outputs=eye[i], retain_graph=True,
                                        allow_unused=True)
            self.pvec.buffer.pack(list(grads), rows[i])
        return rows


def host_rows(rows: torch.Tensor):
    """A CPU numpy view of assembled Jacobian rows (dense assembly is CPU only)."""
    return host_array(rows, "an assembled (dense) Jacobian")
