"""Recomputation of ``Checkpoint(budget=K)``: steps taken again in the backward pass.

    python benchmarks/bench_schedule.py [--steps 200 1000] [--budgets 2 4 8 16 32 64]

Runs one gradient of a small neural ODE (rk4, fixed steps) per budget and reads
``NeuralODE.stats``. Counts all forward steps outside the recording replays (one per
step, the same for every schedule): the forward solve plus the re-advances. Compared with

- ``optimum``: Griewank's binomial minimum, which needs the number of steps before the
  forward solve (``binomial_cost(n, K) + 1``: its first sweep stops one step short);
- ``record first``: a forward solve that only records the step times, then that optimum
  from the initial state (``n + binomial_cost(n, K)``; pnode's schedule before the
  online one).
"""
from __future__ import annotations

import argparse
import time

import torch

import pnode
from pnode.revolve import binomial_cost


def count(steps: int, budget: int) -> tuple[int, int]:
    """Forward steps outside recording replays, and the most states held."""
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    ode = pnode.NeuralODE(lambda t, y: f(y), method="rk4", step_size=1.0 / steps,
                          checkpoint=pnode.Checkpoint(budget=budget), adjoint_params=list(f.parameters()))
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    ode(y0, torch.tensor([0.0, 1.0], dtype=torch.float64))[-1].pow(2).sum().backward()
    stats = ode.stats
    return stats["recomputed_steps"], stats["checkpoint_states"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--budgets", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    args = p.parse_args()
    tic = time.perf_counter()
    print("| steps n | budget K | states held | pnode (online) | optimum (n known) | record first "
          "| pnode / optimum | pnode / record first |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.steps:
        for k in args.budgets:
            total, held = count(n, k)
            best, first = binomial_cost(n, k) + 1, n + binomial_cost(n, k)
            print(f"| {n} | {k} | {held} | {total} | {best} | {first} | {total / best:.2f} | {total / first:.2f} |")
    print(f"\n{time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
