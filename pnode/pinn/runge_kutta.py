"""Discrete-time Runge-Kutta PINNs (Raissi et al.'s formulation) with Gauss-Legendre tableaus.

One long implicit Runge-Kutta step of size ``dt`` from ``t_n`` to ``t_n + dt`` for
``u_t = N[u]``: a network of space outputs the ``q`` stages and the end value,
``(u^{n+c_1}, ..., u^{n+c_q}, u^{n+1})(x)``; each of them gives back the state at ``t_n``,

    u^n_i = u^{n+c_i} - dt sum_j a_ij N[u^{n+c_j}]  (i = 1..q),
    u^n_{q+1} = u^{n+1} - dt sum_j b_j N[u^{n+c_j}],

and all ``q + 1`` must match the data at ``t_n``. :func:`gauss_legendre` builds the
``q``-stage tableau (order ``2q``) for any ``q`` (500 included) stably: nodes and weights
from ``scipy.special.roots_legendre``, and ``A = (int_0^{c_i} P_k) V^{-1}`` in the Legendre
basis, where ``V^{-1}`` follows from the discrete orthogonality of the Legendre
polynomials at the Gauss nodes (no Vandermonde inverse). :func:`runge_kutta_term` makes
the data term of a :class:`pnode.pinn.CollocationProblem` from a spatial operator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from pnode.errors import ConfigurationError

from .problem import Term


@dataclass(frozen=True)
class Tableau:
    """A Butcher tableau: ``A (q, q)``, ``b (q,)``, ``c (q,)`` (float64 numpy)."""

    A: np.ndarray
    b: np.ndarray
    c: np.ndarray

    @property
    def stages(self) -> int:
        return self.b.size


def gauss_legendre(q: int) -> Tableau:
    """The ``q``-stage Gauss-Legendre collocation tableau on ``[0, 1]``."""
    from scipy.special import eval_legendre, roots_legendre

    if int(q) < 1:
        raise ConfigurationError(f"a Gauss-Legendre tableau needs q >= 1 stages, got {q}")
    q = int(q)
    x, w = roots_legendre(q)  # on [-1, 1]
    k = np.arange(q)
    P = eval_legendre(k[None, :], x[:, None])  # P[i, k] = P_k(x_i), k < q
    # V^{-1} = diag((2k + 1) / 2) V^T W: the Gauss rule integrates P_k P_m exactly for k, m < q
    V_inv = ((2 * k + 1) / 2)[:, None] * P.T * w[None, :]
    # int_{-1}^{x_i} P_k = (P_{k+1} - P_{k-1}) / (2k + 1) for k >= 1, x_i + 1 for k = 0
    upper = eval_legendre(k[None, :] + 1, x[:, None])
    lower = eval_legendre(np.maximum(k - 1, 0)[None, :], x[:, None])
    integral = np.where(k[None, :] == 0, x[:, None] + 1, (upper - lower) / (2 * k[None, :] + 1))
    A = 0.5 * integral @ V_inv  # the change of variable tau = (1 + s) / 2 halves the integrals
    return Tableau(A=A, b=w / 2, c=(x + 1) / 2)


def runge_kutta_term(name: str, points: torch.Tensor, data: torch.Tensor,
                     operator: Callable[[Callable, torch.Tensor, dict], torch.Tensor], tableau: Tableau, dt: float,
                     weight: float = 1.0) -> Term:
    """The data term at ``t_n``: ``q + 1`` rows per point, ``u^n_i - data``.

    ``operator(u, x, c)`` returns ``N[u]`` for every component of the field ``u`` of one
    point (the network's ``q + 1`` outputs; only the first ``q``, the stages, are used).
    ``data``: ``(N, 1)`` values of ``u`` at ``t_n``."""
    q = tableau.stages
    A = torch.as_tensor(tableau.A, dtype=points.dtype)
    b = torch.as_tensor(tableau.b, dtype=points.dtype)
    weights = torch.cat([A, b[None, :]])  # (q + 1, q)

    def residual(u, x, c, y):
        stages = u(x)
        if stages.shape != (q + 1,):
            raise ConfigurationError(f"the network must output q + 1 = {q + 1} values per point, got "
                                     f"{tuple(stages.shape)}")
        n = operator(u, x, c)[:q]
        return stages - dt * (weights @ n) - y[0]
    return Term(name, points, residual, weight=weight, data=data)
