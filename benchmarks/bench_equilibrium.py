"""Deep-equilibrium gradients: exact implicit (GMRES on I - J^T), phantom (k damped
unrolled steps), truncated Neumann, and full unrolling (--unroll plain iterations of f,
backpropagated): backward-pass time and the test NMSE after the same training.

The map is one proximal-gradient step with a learned prox, ``f(x, y) = soft(v, tau lam) -
0.1 tanh(MLP(v))``, ``v = x - tau A^T (A x - y)`` (the MLP's last layer starts at zero: the
fixed point starts as the LASSO solution), on sparse recovery (A 100 x 200 Gaussian, unit columns,
x Bernoulli-Gaussian p = 0.1, SNR 40 dB); the fixed point by SNES Anderson. Every mode
starts from the same network and trains the same Adam steps on the same batches.

    python benchmarks/bench_equilibrium.py --steps 15
"""
from __future__ import annotations

import argparse
import time

import torch

from pnode import ConvergenceError
from pnode.solvers.unrolling import (Equilibrium, ProximalStep, Prox, bernoulli_gaussian, gaussian_dictionary,
                                     measurements, nmse_db, soft_threshold)

M, N = 100, 200


class SoftCorrection(Prox):
    """``soft(v, theta) - 0.1 tanh(MLP(v))``."""

    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(N, 256, dtype=torch.float64), torch.nn.Tanh(),
                                       torch.nn.Linear(256, N, dtype=torch.float64))
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, v, theta):
        return soft_threshold(v, theta) - 0.1 * torch.tanh(self.mlp(v))


def make_step(A):
    """The step size stays at 1/L (learned, it grows until the map stops contracting)."""
    torch.manual_seed(0)
    step = ProximalStep(A, SoftCorrection(), weight=0.1)
    step.step.value.requires_grad_(False)
    return step


def unrolled(step, y, iterations):
    z = y.new_zeros(y.shape[0], N)
    for _ in range(iterations):
        z = step(z, y)
    return z


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--phantom", type=int, default=5, help="phantom / Neumann steps")
    parser.add_argument("--unroll", type=int, default=30, help="iterations of full unrolling (backpropagated)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    A = gaussian_dictionary(M, N, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x_test = bernoulli_gaussian(500, N, 0.1, g)
    y_test = measurements(A, x_test, 40.0, g)
    print(f"{'gradient':>16s} {'backward ms':>12s} {'forward ms':>11s} {'test NMSE dB':>13s}")
    for mode in ("implicit", "phantom", "neumann", "unrolled"):
        step = make_step(A)
        deq = Equilibrium(step, solver="anderson", gradient=mode if mode != "unrolled" else "implicit",
                          phantom_steps=args.phantom, damping=1.0 if mode == "phantom" else 0.5,
                          rtol=1e-8, atol=1e-10, max_it=2000)
        opt = torch.optim.Adam([p for p in step.parameters() if p.requires_grad], lr=1e-3)
        data = torch.Generator().manual_seed(2)
        forward = backward = 0.0
        done = 0
        for _ in range(args.steps):
            x = bernoulli_gaussian(args.batch, N, 0.1, data)
            y = measurements(A, x, 40.0, data)
            t0 = time.perf_counter()
            if mode == "unrolled":
                out = unrolled(step, y, args.unroll)
            else:
                try:
                    out = deq(y)
                except ConvergenceError as exc:  # a trained map that stopped contracting
                    print(f"{mode:>16s} stopped after {done} steps: {exc}")
                    break
            loss = ((out - x) ** 2).sum(-1).mean()
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            forward += t1 - t0
            backward += t2 - t1
            done += 1
        with torch.no_grad():
            score = nmse_db(deq(y_test), x_test)
        print(f"{mode:>16s} {1e3 * backward / max(done, 1):12.1f} {1e3 * forward / max(done, 1):11.1f} {score:13.2f}")


if __name__ == "__main__":
    main()
