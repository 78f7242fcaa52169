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
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import hessian as _hessian
from torch.func import jacfwd, jacrev, jvp, vmap

Field = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Field", "gradient", "jacobian", "hessian", "laplacian", "divergence", "time_derivative",
           "derivatives", "batched"]


def gradient(f: Field) -> Field:
    """``x -> grad f(x)``, shape ``(d,)``."""
    return jacrev(f)


def jacobian(f: Field) -> Field:
    """``x -> df/dx(x)`` of a vector field, shape ``(k, d)``."""
    return jacrev(f)


def hessian(f: Field) -> Field:
    """``x -> d2f/dx2(x)``, shape ``(d, d)``."""
    return _hessian(f)


def laplacian(f: Field, axes: slice | list[int] | None = None) -> Field:
    """``x -> sum_i d2f/dx_i2(x)``, over all coordinates or those of ``axes`` (e.g. the
    space axes of a space-time point: ``slice(0, -1)``)."""
    def lap(x: torch.Tensor) -> torch.Tensor:
        diag = _hessian(f)(x).diagonal()
        return (diag if axes is None else diag[axes]).sum()
    return lap


def divergence(F: Field) -> Field:
    """``x -> sum_i dF_i/dx_i(x)`` of a vector field ``F: (d,) -> (d,)``."""
    return lambda x: jacfwd(F)(x).diagonal().sum()


def time_derivative(f: Field, axis: int = -1) -> Field:
    """``x -> df/dx_axis(x)`` by one forward-mode product (time is the last axis by default)."""
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

    def value_and_grad(y):
        g, value = jacrev(_with_value(f), has_aux=True)(y)
        return g, (value, g)
    if order == 1:
        return value_and_grad(x)[1]
    h, (value, g) = jacfwd(value_and_grad, has_aux=True)(x)
    return value, g, h


def _with_value(f: Field) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def out(x):
        value = f(x)
        return value, value
    return out


def batched(f: Callable[..., torch.Tensor], *args_dims) -> Callable[..., torch.Tensor]:
    """``f`` of one point mapped over the rows of its first argument (``vmap``); further
    ``in_dims`` can be given for more arguments (None: shared)."""
    return vmap(f, in_dims=(0, *args_dims) if args_dims else 0)
