"""pnode against one torchdiffeq configuration, alternated in one process: time ratio.

    python benchmarks/bench_alternated.py [--case small|large] [--checkpoint all|solution]
                                          [--against backprop|backprop-classic|adjoint]
                                          [--rounds N]

The models of ``bench_torchdiffeq.py`` (float64, one thread, rk4 at the fixed step 0.025,
loss ``sum(y(T)**2)``). One gradient of each, alternated, ``--rounds`` times after one
warm-up pair; prints the medians and their ratio. Alternating keeps the machine's slow
drifts out of the ratio, which separate processes (``bench_torchdiffeq.py``) do not; peak
memory needs those separate processes and is not measured here.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_torchdiffeq import CASES, problem, solver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="small", choices=sorted(CASES))
    p.add_argument("--checkpoint", default="all", choices=["all", "solution"])
    p.add_argument("--against", default="backprop", choices=["backprop", "backprop-classic", "adjoint"])
    p.add_argument("--rounds", type=int, default=None, help="default: 40 (small), 5 (large)")
    args = p.parse_args()
    rounds = args.rounds or (40 if args.case == "small" else 5)
    f, y0, t, params = problem(args.case)
    runs = {"pnode": solver(f"pnode-{args.checkpoint}", f, y0, t),
            "torchdiffeq": solver(f"torchdiffeq-{args.against}", f, y0, t)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(1 + rounds):
        for name, run in runs.items():
            tic = time.perf_counter()
            torch.autograd.grad(run()[-1].pow(2).sum(), params)
            if i >= 1:
                seconds[name].append(time.perf_counter() - tic)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{args.case}: pnode Checkpoint({args.checkpoint!r}) {med['pnode']:.4g} s, torchdiffeq "
          f"{args.against} {med['torchdiffeq']:.4g} s, ratio {med['pnode'] / med['torchdiffeq']:.3f} "
          f"(medians of {rounds})")


if __name__ == "__main__":
    main()
