"""Pure-torch implicit schemes (theta, Crank-Nicolson, ARK IMEX) on given step times.

Each implicit stage equation ``R(Y) = 0`` is solved by dense Newton to convergence
without a graph, then differentiated by one Newton correction from the detached root,
``Y = Y* - J(Y*)^{-1} R(Y*)`` with ``J`` detached: its value is ``Y*`` and its gradient is
the implicit-function-theorem gradient ``-J^{-1} dR/d(inputs)``, i.e. what backpropagation
through an exactly solved stage gives. Autograd through these functions is the reference
for PETSc's discrete adjoint.
"""
from __future__ import annotations

import math

import torch

S2 = math.sqrt(2.0)
US2 = 1.0 - 1.0 / S2

# name -> (At, A, bt, b): implicit and explicit tableaux and weights, as registered in
# PETSc's arkimex.c (b defaults to bt there, not to A's last row)
ARK_TABLEAUS = {
    "l2": ([[US2, 0], [1 - 2 * US2, US2]], [[0, 0], [1, 0]], [0.5, 0.5], [0.5, 0.5]),
    "ars122": ([[0, 0], [0, 0.5]], [[0, 0], [0.5, 0]], [0, 1.0], [0, 1.0]),
    "2e": ([[0, 0, 0], [1 - 1 / S2, 1 - 1 / S2, 0], [1 / (2 * S2), 1 / (2 * S2), 1 - 1 / S2]],
           [[0, 0, 0], [2 - S2, 0, 0], [(3 - 2 * S2) / 6, (3 + 2 * S2) / 6, 0]],
           [1 / (2 * S2), 1 / (2 * S2), 1 - 1 / S2], [1 / (2 * S2), 1 / (2 * S2), 1 - 1 / S2]),
}


def newton(residual, guess: torch.Tensor, tol: float = 1e-14, maxit: int = 50) -> torch.Tensor:
    """Solve ``residual(Y) = 0`` (flat ``Y``) and return a root that carries the IFT gradient."""
    y = guess.detach().clone()
    with torch.no_grad():
        for _ in range(maxit):
            r = residual(y)
            J = torch.autograd.functional.jacobian(residual, y)
            dy = torch.linalg.solve(J, r)
            y = y - dy
            if float(dy.abs().max()) <= tol * (1.0 + float(y.abs().max())):
                break
        else:
            raise RuntimeError("reference Newton did not converge")
        J = torch.autograd.functional.jacobian(residual, y)
    return y - torch.linalg.solve(J, residual(y))


def _f(func, t: float, y: torch.Tensor, shape, dtype) -> torch.Tensor:
    return func(torch.tensor(t, dtype=dtype), y.view(shape)).reshape(-1)


def _mass(M, v):
    if M is None:
        return v
    return M * v if M.ndim == 1 else M @ v


def march(step, y0, step_times, out_times):
    """Apply ``step(t0, h, x) -> x1`` (flat states) over the step times; the states at
    ``out_times`` (each one of the step times), shaped like ``y0``."""
    key = lambda s: round(float(s), 9)  # noqa: E731
    targets = {key(s) for s in out_times}
    x, outs = y0.reshape(-1), {}
    if key(step_times[0]) in targets:
        outs[key(step_times[0])] = x
    for n in range(len(step_times) - 1):
        t0 = float(step_times[n])
        x = step(t0, float(step_times[n + 1]) - t0, x)
        if key(step_times[n + 1]) in targets:
            outs[key(step_times[n + 1])] = x
    return torch.stack([outs[key(s)].view(y0.shape) for s in out_times])


def theta_solve(func, y0, step_times, out_times, theta: float, endpoint: bool, mass=None):
    """TSTHETA: ``endpoint=False``: ``M (X - x0) = theta h g(t + theta h, X)``,
    ``x1 = x0 + (X - x0)/theta``; ``endpoint=True``: ``M (x1 - x0) = h (theta g1 + (1-theta) g0)``."""
    shape, dt = y0.shape, y0.dtype

    def step(t0, h, x):
        if endpoint:
            g0 = _f(func, t0, x, shape, dt) if theta < 1 else 0.0
            return newton(lambda X: _mass(mass, X - x) - h * (theta * _f(func, t0 + h, X, shape, dt)
                                                              + (1 - theta) * g0), x)
        X = newton(lambda X: _mass(mass, X - x) - theta * h * _f(func, t0 + theta * h, X, shape, dt), x)
        return x + (X - x) / theta

    return march(step, y0, step_times, out_times)


def ark_solve(implicit, explicit, y0, step_times, out_times, tableau: str):
    """ARK IMEX: ``y' = implicit(t, y) + explicit(t, y)`` (``explicit`` may be None)."""
    At, A, bt, b = ARK_TABLEAUS[tableau]
    s = len(bt)
    ct = [sum(row) for row in At]
    c = [sum(row) for row in A]
    shape, dt = y0.shape, y0.dtype

    def step(t0, h, x):
        KI, KE = [], []
        for i in range(s):
            Z = x
            for j in range(i):
                if At[i][j]:
                    Z = Z + h * At[i][j] * KI[j]
                if explicit is not None and A[i][j]:
                    Z = Z + h * A[i][j] * KE[j]
            ti = t0 + ct[i] * h
            if At[i][i]:
                Y = newton(lambda Y, Z=Z, a=At[i][i], ti=ti: Y - Z - h * a * _f(implicit, ti, Y, shape, dt), Z)
            else:
                Y = Z
            KI.append(_f(implicit, ti, Y, shape, dt))
            if explicit is not None:
                KE.append(_f(explicit, t0 + c[i] * h, Y, shape, dt))
        x = x + h * sum(bt[i] * KI[i] for i in range(s) if bt[i])
        if explicit is not None:
            x = x + h * sum(b[i] * KE[i] for i in range(s) if b[i])
        return x

    return march(step, y0, step_times, out_times)
