"""Per-call overhead on the small case: pnode and torchdiffeq backprop alternated in one process.

    python benchmarks/bench_overhead.py [--checkpoint all|solution] [--rounds 40]

The small model of ``bench_torchdiffeq.py`` (MLP 2-50-2 on y**3, batch 20, 40 rk4 steps,
float64, one thread). One gradient of each, alternated, ``--rounds`` times after a
warm-up; prints the medians and their ratio. Alternating in one process keeps slow drifts
of the machine out of the ratio, which separate processes (``bench_torchdiffeq.py``) do not.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchdiffeq

import pnode
from bench_torchdiffeq import CASES, STEP, Field


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="all", choices=["all", "solution"])
    p.add_argument("--rounds", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = CASES["small"]
    f = Field(c["n"], c["hidden"], c["cubic"])
    y0 = (0.5 * torch.randn(c["batch"], c["n"], dtype=torch.float64)).requires_grad_(True)
    params = (y0, *f.parameters())
    t = torch.tensor([0.0, STEP * c["steps"]], dtype=torch.float64)
    ode = pnode.NeuralODE(f, method="rk4", step_size=STEP, checkpoint=pnode.Checkpoint(args.checkpoint))
    runs = {
        "pnode": lambda: ode(y0, t),
        "torchdiffeq": lambda: torchdiffeq.odeint(f, y0, t, method="rk4", options={"step_size": STEP}),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(3 + args.rounds):
        for name, run in runs.items():
            tic = time.perf_counter()
            torch.autograd.grad(run()[-1].pow(2).sum(), params)
            if i >= 3:
                seconds[name].append(time.perf_counter() - tic)
    med = {name: statistics.median(s) * 1e3 for name, s in seconds.items()}
    print(f"Checkpoint({args.checkpoint!r}): pnode {med['pnode']:.2f} ms, torchdiffeq backprop "
          f"{med['torchdiffeq']:.2f} ms, ratio {med['pnode'] / med['torchdiffeq']:.3f}")


if __name__ == "__main__":
    main()
