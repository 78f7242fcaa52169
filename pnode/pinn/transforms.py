"""Output transforms of the common hard-condition form ``u = shift(x) + scale(x) * out``.

Any ``transform(x, out)`` callable works as :class:`pnode.pinn.CollocationProblem`'s
``transform=``; an :class:`AffineTransform` says in addition that the field is affine in
the network's output with coefficients of the point alone, so that the jets
(:mod:`pnode.pinn.jets`) apply it by the product rule with the coefficients' derivatives
computed once per set of points, instead of differentiating the transform at every
evaluation.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import vmap

from pnode.errors import ConfigurationError

from .operators import derivatives


class AffineTransform:
    """``(x, out) -> shift(x) + scale(x) * out`` for one point ``x`` ``(d,)``; ``shift`` and
    ``scale`` return a scalar or one value per network output (None: ``0`` and ``1``)."""

    def __init__(self, shift: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 scale: Callable[[torch.Tensor], torch.Tensor] | None = None):
        for name, fn in (("shift", shift), ("scale", scale)):
            if fn is not None and not callable(fn):
                raise ConfigurationError(f"AffineTransform: {name} must be callable or None, got {type(fn).__name__}")
        self.shift, self.scale = shift, scale
        self._cache: dict[int, tuple[torch.Tensor, tuple]] = {}

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        u = out if self.scale is None else self.scale(x) * out
        return u if self.shift is None else self.shift(x) + u

    def coefficient_jets(self, x: torch.Tensor) -> tuple:
        """``(shift, scale)`` at the points ``x`` ``(N, d)``, each None or ``(value (N, m),
        gradient (N, m, d), Hessian (N, m, d, d))``; kept for the last few point sets."""
        key = id(x)
        if key in self._cache and self._cache[key][0] is x:
            return self._cache[key][1]
        with torch.no_grad():
            jets = tuple(None if fn is None else _jets_of(fn, x) for fn in (self.shift, self.scale))
        if len(self._cache) >= 8:
            self._cache.clear()
        self._cache[key] = (x, jets)
        return jets


def _jets_of(fn: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def one(y):
        value = torch.as_tensor(fn(y), dtype=y.dtype).reshape(-1)
        return value + 0 * y.sum()  # a constant coefficient still has derivatives (zero)
    value, grad, hess = vmap(lambda y: derivatives(one, y))(x)
    return value, grad, hess
