"""The advection example's initial fit (examples/galerkin_advection.py, width 6, 64 samples)
over seeds: Levenberg-Marquardt (``fit``'s default) and TAO brgn (``solver="brgn"``),
each from the example's guess (``initial_network``) and from the random network.

    python benchmarks/bench_galerkin_fit.py [--iters 40 100]

Prints per start, solver, iteration limit and seed: the loss, the iterations taken, the
first iteration with loss below 1e-17 and the relative L2 error on 400 points.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import galerkin_advection as ga  # noqa: E402

X = torch.linspace(0, 1, 401, dtype=torch.float64)[:-1]


def fit(seed: int, guess: bool, solver: str, iters: int) -> dict:
    problem = ga.build(dataclasses.replace(ga.Config(), seed=seed))
    if guess:
        ga.initial_network(problem.net, problem.points, ga.bump(problem.points))
    theta0, result = problem.fit(ga.bump, max_it=iters, solver=solver)
    return {"loss": result.loss, "iterations": result.iterations, "rel": ga.rel_l2(problem, theta0, X, ga.bump(X))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args(argv)
    print("start   solver  max_it  seed  loss      iterations  rel_L2")
    for guess in (True, False):
        for solver in ("lm", "brgn"):
            for iters in args.iters:
                for seed in range(args.seeds):
                    r = fit(seed, guess, solver, iters)
                    print(f"{'guess' if guess else 'random':7s} {solver:6s}  {iters:6d}  {seed:4d}  {r['loss']:.2e}"
                          f"  {r['iterations']:10d}  {r['rel']:.2e}", flush=True)


if __name__ == "__main__":
    main()
