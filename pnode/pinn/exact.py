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
"""
from __future__ import annotations

import numpy as np


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
