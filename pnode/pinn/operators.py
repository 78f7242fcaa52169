"""Differential operators of a pointwise field, batched with ``torch.func``.

A *field* is a function of one point ``x`` (a tensor of shape ``(d,)``) returning a
scalar (or, for :func:`divergence` and :func:`jacobian`, a vector of shape ``(d,)`` or
``(k,)``). Every operator returns a new field of one point; :func:`batched` maps a field
over the rows of an ``(N, d)`` tensor with ``torch.func.vmap``, so that a PDE residual is
written for one point and evaluated for all of them in one vectorised call (and its
Jacobian in the network's parameters by ``vmap`` over ``jacrev``, see
:mod:`pnode.pinn.problem`).

Derivatives use reverse mode for first derivatives (``jacrev``) and forward-over-reverse
for second ones (``jacfwd(jacrev)``); a time derivative is one forward-mode product
(``jvp``) along the time axis. :func:`derivatives` returns the value, the gradient and
the Hessian of one point in one pass (the usual need of a second-order PDE).

Each operator also accepts a :class:`pnode.pinn.jets.Jet` (the field's value and
derivatives at the collocation point, carried through a multilayer perceptron by
:class:`pnode.pinn.jets.MLPJets`) and then reads the derivative from it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import hessian as _hessian
from torch.func import jacfwd, jacrev, jvp, vmap

from .jets import Jet

Field = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Field", "gradient", "jacobian", "hessian", "laplacian", "divergence", "time_derivative",
           "derivatives", "directional", "batched"]


def gradient(f: Field) -> Field:
    """``x -> grad f(x)``, shape ``(d,)``."""
    return f.derivative() if isinstance(f, Jet) else jacrev(f)


def jacobian(f: Field) -> Field:
    """``x -> df/dx(x)`` of a vector field, shape ``(k, d)``."""
    return f.derivative() if isinstance(f, Jet) else jacrev(f)


def hessian(f: Field) -> Field:
    """``x -> d2f/dx2(x)``, shape ``(d, d)``."""
    if isinstance(f, Jet):
        f.need(2)
        return Jet(f.hess, None, None, f.point)
    return _hessian(f)


def laplacian(f: Field, axes: slice | list[int] | None = None) -> Field:
    """``x -> sum_i d2f/dx_i2(x)``, over all coordinates or those of ``axes`` (e.g. the
    space axes of a space-time point: ``slice(0, -1)``)."""
    if isinstance(f, Jet):
        f.need(2)
        diag = f.hess.diagonal(dim1=-2, dim2=-1)
        return Jet((diag if axes is None else diag[..., axes]).sum(-1), None, None, f.point)

    def lap(x: torch.Tensor) -> torch.Tensor:
        diag = _hessian(f)(x).diagonal()
        return (diag if axes is None else diag[axes]).sum()
    return lap


def divergence(F: Field) -> Field:
    """``x -> sum_i dF_i/dx_i(x)`` of a vector field ``F: (d,) -> (d,)``."""
    if isinstance(F, Jet):
        F.need(1)
        grad = None if F.hess is None else F.hess.diagonal(dim1=0, dim2=1).sum(-1)
        return Jet(F.grad.diagonal(dim1=-2, dim2=-1).sum(-1), grad, None, F.point)
    return lambda x: jacfwd(F)(x).diagonal().sum()


def time_derivative(f: Field, axis: int = -1) -> Field:
    """``x -> df/dx_axis(x)`` by one forward-mode product (time is the last axis by default)."""
    if isinstance(f, Jet):
        return f.partial(axis)

    def dt(x: torch.Tensor) -> torch.Tensor:
        e = torch.zeros_like(x)
        e[axis] = 1
        return jvp(f, (x,), (e,))[1]
    return dt


def derivatives(f: Field, x: torch.Tensor, order: int = 2) -> tuple[torch.Tensor, ...]:
    """``(f(x), grad f(x))`` for ``order=1``; ``(f(x), grad f(x), hess f(x))`` for ``order=2``,
    computed in one pass (the value and gradient are by-products of the Hessian)."""
    if order not in (1, 2):
        raise ValueError(f"derivatives: order must be 1 or 2, got {order}")
    if isinstance(f, Jet):
        f.at(x)
        f.need(order)
        return (f.value, f.grad) if order == 1 else (f.value, f.grad, f.hess)

    def value_and_grad(y):
        g, value = jacrev(_with_value(f), has_aux=True)(y)
        return g, (value, g)
    if order == 1:
        return value_and_grad(x)[1]
    h, (value, g) = jacfwd(value_and_grad, has_aux=True)(x)
    return value, g, h


def directional(f: Field, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f(x), D_v f(x), D_v^2 f(x))``: the value and the first and second derivatives along
    ``v`` by forward over forward mode, for any number of outputs (a field of many outputs in
    one or few directions, e.g. the stages of a discrete-time Runge-Kutta PINN)."""
    if isinstance(f, Jet):
        f.at(x)
        f.need(2)
        return f.value, f.grad @ v, (f.hess @ v) @ v
    (value, first), (_, second) = jvp(lambda y: jvp(f, (y,), (v,)), (x,), (v,))
    return value, first, second


def _with_value(f: Field) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def out(x):
        value = f(x)
        return value, value
    return out


def batched(f: Callable[..., torch.Tensor], *args_dims) -> Callable[..., torch.Tensor]:
    """``f`` of one point mapped over the rows of its first argument (``vmap``); further
    ``in_dims`` can be given for more arguments (None: shared)."""
    return vmap(f, in_dims=(0, *args_dims) if args_dims else 0)
