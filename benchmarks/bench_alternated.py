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
import torchdiffeq

import pnode
from bench_torchdiffeq import CASES, STEP, Field, _register_classic_rk4


def torchdiffeq_run(against: str, f, y0, t):
    """A callable returning torchdiffeq's solution for the configuration ``against``."""
    method = "rk4-classic" if against == "backprop-classic" else "rk4"
    kw = dict(method=method, options={"step_size": STEP})
    if against == "adjoint":
        kw.update(adjoint_method=method, adjoint_options={"step_size": STEP})
        return lambda: torchdiffeq.odeint_adjoint(f, y0, t, **kw)
    return lambda: torchdiffeq.odeint(f, y0, t, **kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="small", choices=sorted(CASES))
    p.add_argument("--checkpoint", default="all", choices=["all", "solution"])
    p.add_argument("--against", default="backprop", choices=["backprop", "backprop-classic", "adjoint"])
    p.add_argument("--rounds", type=int, default=None, help="default: 40 (small), 5 (large)")
    args = p.parse_args()
    rounds = args.rounds or (40 if args.case == "small" else 5)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    _register_classic_rk4()
    c = CASES[args.case]
    f = Field(c["n"], c["hidden"], c["cubic"])
    y0 = (0.5 * torch.randn(c["batch"], c["n"], dtype=torch.float64)).requires_grad_(True)
    params = (y0, *f.parameters())
    t = torch.tensor([0.0, STEP * c["steps"]], dtype=torch.float64)
    ode = pnode.NeuralODE(f, method="rk4", step_size=STEP, checkpoint=pnode.Checkpoint(args.checkpoint))
    runs = {"pnode": lambda: ode(y0, t), "torchdiffeq": torchdiffeq_run(args.against, f, y0, t)}
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
