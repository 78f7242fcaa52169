"""Pure-torch explicit Runge-Kutta on given step times: the autograd reference."""
from __future__ import annotations

import torch

TABLEAUS = {
    "euler": ([[0.0]], [1.0], [0.0]),
    "midpoint": ([[0, 0], [0.5, 0]], [0, 1.0], [0, 0.5]),
    "heun": ([[0, 0], [1.0, 0]], [0.5, 0.5], [0, 1.0]),
    "bosh3": ([[0, 0, 0, 0], [1 / 2, 0, 0, 0], [0, 3 / 4, 0, 0], [2 / 9, 1 / 3, 4 / 9, 0]],
              [2 / 9, 1 / 3, 4 / 9, 0], [0, 1 / 2, 3 / 4, 1]),
    "rk4": ([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]],
            [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0, 0.5, 0.5, 1.0]),
    "dopri5": ([[0, 0, 0, 0, 0, 0, 0],
                [1 / 5, 0, 0, 0, 0, 0, 0],
                [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
                [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
                [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
                [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
                [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]],
               [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0],
               [0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1]),
}


def rk_solve(func, y0, step_times, out_times, method):
    """Integrate with the given tableau over ``step_times`` (increasing, the accepted steps),
    returning the states at ``out_times`` (each one of the step times)."""
    A, b, c = TABLEAUS[method]
    y, outs = y0, {}
    key = lambda s: round(float(s), 9)
    targets = {key(s) for s in out_times}
    if key(step_times[0]) in targets:
        outs[key(step_times[0])] = y
    for n in range(len(step_times) - 1):
        t0, h = float(step_times[n]), float(step_times[n + 1] - step_times[n])
        ks = []
        for i in range(len(b)):
            yi = y
            for j in range(i):
                if A[i][j]:
                    yi = yi + h * A[i][j] * ks[j]
            ks.append(func(torch.tensor(t0 + c[i] * h, dtype=y0.dtype, device=y0.device), yi))
        y = y + h * sum(bi * k for bi, k in zip(b, ks) if bi)
        if key(step_times[n + 1]) in targets:
            outs[key(step_times[n + 1])] = y
    return torch.stack([outs[key(s)] for s in out_times])
