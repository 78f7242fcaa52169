"""Exact solutions used to score PINNs (no tabulated files).

:func:`burgers_cole_hopf` is the viscous Burgers solution of ``u_t + u u_x = nu u_xx``,
``u(x, 0) = -sin(pi x)`` on the real line (periodic, so it also satisfies ``u(+-1, t) =
0``), by the Cole-Hopf transform::

    u(x, t) = - int sin(pi (x - e)) F(x - e) G(e) de / int F(x - e) G(e) de,
    F(y) = exp(-cos(pi y) / (2 pi nu)),  G(e) = exp(-e^2 / (4 nu t)).

Both integrals are computed with the substitution ``e = sqrt(4 nu t) z`` on ``|z| <= 16``
by composite Gauss-Legendre quadrature (``panels`` panels of ``order`` nodes) after
subtracting the exponent's maximum for each ``x`` (the exponents span about ``1/(pi nu)``;
without the shift they overflow).

:func:`kdv_two_soliton` is Hirota's two-soliton solution of the Korteweg-de Vries
equation in its standard form ``u_t + 6 u u_x + u_xxx = 0`` on the real line::

    u = 2 (log f)_xx,  f = 1 + e^{th_1} + e^{th_2} + A e^{th_1 + th_2},
    th_i = 2 k_i (x - x_i - 4 k_i^2 t),  A = ((k_1 - k_2) / (k_1 + k_2))^2.

Far from each other the solitons are ``2 k_i^2 sech^2(k_i (x - s_i(t)))`` (height
``2 k_i^2``, speed ``4 k_i^2``). With ``k_2 > k_1`` the faster starts behind: before the
overtaking ``s_2 = x_2 + 4 k_2^2 t`` and ``s_1 = x_1 + 4 k_1^2 t + log(1/A) / (2 k_1)``,
after it ``s_2 = x_2 + 4 k_2^2 t + log(1/A) / (2 k_2)`` and ``s_1 = x_1 + 4 k_1^2 t``: the
faster comes out shifted forward, the slower back.
``f`` is a sum of exponentials ``exp(a_j x + b_j)``, so with ``w = softmax(a x + b)``
(the four terms' weights) ``(log f)_xx = sum_j w_j (a_j - abar)^2``, ``abar = sum_j w_j
a_j``: a weighted variance of the slopes, computed without overflow for any ``x, t``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def _nodes(panels: int, order: int, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    g, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(-half_width, half_width, panels + 1)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    return (mid[:, None] + half[:, None] * g).ravel(), (half[:, None] * w).ravel()


def burgers_cole_hopf(x, t, nu: float = 0.01 / np.pi, panels: int = 160, order: int = 16) -> np.ndarray:
    """``u(t_i, x_j)`` as an array of shape ``(len(t), len(x))`` (``t = 0``: the initial state)."""
    x, t = np.atleast_1d(np.asarray(x, dtype=float)), np.atleast_1d(np.asarray(t, dtype=float))
    z, w = _nodes(panels, order, 16.0)
    out = np.empty((t.size, x.size))
    for i, ti in enumerate(t):
        if ti == 0:
            out[i] = -np.sin(np.pi * x)
            continue
        eta = np.sqrt(4 * nu * ti) * z
        y = x[:, None] - eta[None, :]
        exponent = -np.cos(np.pi * y) / (2 * np.pi * nu) - z[None, :] ** 2
        weight = np.exp(exponent - exponent.max(axis=1, keepdims=True)) * w[None, :]
        out[i] = -(np.sin(np.pi * y) * weight).sum(axis=1) / weight.sum(axis=1)
    return out


def kdv_two_soliton(x: torch.Tensor, t: torch.Tensor | float, kappa: Sequence[float] = (1.0, 2.0),
                    centers: Sequence[float] = (0.0, 0.0)) -> torch.Tensor:
    """Hirota's two-soliton ``u(x, t)`` of ``u_t + 6 u u_x + u_xxx = 0`` with wave numbers
    ``kappa`` (distinct, positive) and positions ``centers`` at ``t = 0`` (each soliton's
    position when alone), broadcast over ``x`` and ``t``; differentiable (torch)."""
    (k1, k2), (c1, c2) = (float(k) for k in kappa), (float(c) for c in centers)
    if not (k1 > 0 and k2 > 0 and k1 != k2):
        raise ValueError(f"kdv_two_soliton: need two distinct positive wave numbers, got {kappa!r}")
    x, t = torch.broadcast_tensors(torch.as_tensor(x), torch.as_tensor(t, dtype=torch.as_tensor(x).dtype))
    th1 = 2 * k1 * (x - c1 - 4 * k1 ** 2 * t)
    th2 = 2 * k2 * (x - c2 - 4 * k2 ** 2 * t)
    log_a = 2 * math.log(abs(k1 - k2) / (k1 + k2))
    logits = torch.stack([torch.zeros_like(x), th1, th2, th1 + th2 + log_a], dim=-1)
    slopes = torch.tensor([0.0, 2 * k1, 2 * k2, 2 * (k1 + k2)], dtype=x.dtype, device=x.device)
    w = torch.softmax(logits, dim=-1)
    mean = (w * slopes).sum(-1, keepdim=True)
    return 2 * (w * (slopes - mean) ** 2).sum(-1)
