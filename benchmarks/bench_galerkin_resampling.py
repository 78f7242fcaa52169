"""Neural-Galerkin marching with fixed sample points against new points per segment.

    python benchmarks/bench_galerkin_resampling.py [--kdv]

Advection (examples/galerkin_advection.py with one tanh unit, which holds the bump and
all its shifts; theta(0) set exactly; T = 0.25, rk4 with 25 steps, five segments): the
fixed 64-point grid, a new 64-point Sobol set per segment, 16 uniform random points per
segment. With ``--kdv`` also the two-soliton (examples/galerkin_kdv.py, T = 1, dopri5,
ten segments): the fixed 256-point grid against 256 Sobol points per segment. Prints the
relative L2 errors at T, the ratio resampled / fixed and the steps.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import galerkin_advection as ga  # noqa: E402
import galerkin_kdv as gk  # noqa: E402

from pnode.pinn import march_resampled, seeded_sampler  # noqa: E402

DT = torch.float64


def compare(name, problem, theta0, t, error, samplers, **solver) -> None:
    """Each sampler's march (None: the problem's fixed points, one segment) and its error
    at the last time."""
    fixed = None
    for label, sampler, every in samplers:
        start = time.perf_counter()
        with torch.no_grad():
            if sampler is None:
                march = march_resampled(problem, theta0, t, lambda k: problem.points, every=t.numel() - 1, **solver)
            else:
                march = march_resampled(problem, theta0, t, sampler, every=every, **solver)
        err = error(problem, march.theta[-1])
        fixed = err if fixed is None else fixed
        print(f"{name:10s} {label:34s} rel L2 at T {err:.4e}  ratio {err / fixed:.4f}  steps {march.steps:4d} "
              f"(rejected {march.rejected})  segments {len(march.problems)}  {time.perf_counter() - start:.1f} s",
              flush=True)


def advection() -> None:
    cfg = dataclasses.replace(ga.Config(), width=1, **ga.QUICK)
    problem = ga.build(cfg)
    theta0 = torch.tensor([-ga.KAPPA, 0.0, -ga.KAPPA / 2, 0.5, 0.5], dtype=DT)
    x = torch.linspace(0, 1, 401, dtype=DT)[:-1]
    ref = ga.exact(x, cfg.T, cfg.speed)
    t = torch.linspace(0, cfg.T, 6, dtype=DT)
    samplers = [("fixed 64-point grid", None, None),
                ("64 Sobol points per segment", seeded_sampler([0.0], [1.0], 64, "sobol", seed=3), 1),
                ("16 uniform points per segment", seeded_sampler([0.0], [1.0], 16, "uniform", seed=1), 1)]
    compare("advection", problem, theta0, t, lambda p, th: ga.rel_l2(p, th, x, ref), samplers,
            method="rk4", step_size=cfg.T / cfg.rk4_steps)


def kdv() -> None:
    cfg = gk.Config()
    problem = gk.build(cfg)
    theta0, _ = problem.fit(gk.u0, max_it=cfg.fit_iters)
    x = torch.linspace(cfg.lower, cfg.upper, 1201, dtype=DT)
    ref = gk.exact(x, cfg.T)
    t = torch.linspace(0, cfg.T, 11, dtype=DT)
    samplers = [("fixed 256-point grid", None, None),
                ("256 Sobol points per segment", seeded_sampler([cfg.lower], [cfg.upper], 256, "sobol", seed=3), 1)]
    compare("kdv", problem, theta0, t, lambda p, th: gk.rel_l2(p, th, x, ref), samplers,
            method="dopri5", rtol=cfg.rtol, atol=cfg.rtol * 1e-2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kdv", action="store_true", help="also the KdV two-soliton (minutes)")
    args = p.parse_args()
    torch.set_num_threads(1)
    advection()
    if args.kdv:
        kdv()


if __name__ == "__main__":
    main()
