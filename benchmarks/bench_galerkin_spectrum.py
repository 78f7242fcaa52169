"""The spectrum of the Jacobian of the solved neural-Galerkin right-hand side
``theta' = (M + eps I)^{-1} F`` along a marched Allen-Cahn trajectory, for several Tikhonov
shifts: is the Galerkin ODE stiff for an explicit method?

It reads a run directory of ``examples/galerkin_allen_cahn.py`` (``metrics.json``, ``fit.pt``
and ``dopri5.pt``: theta at each window's end), evaluates the dense Jacobian ``d theta'/d theta``
(``torch.func.jacrev``) at those thetas with each ``--shifts`` value and prints, per time and
shift, the extreme eigenvalues of ``M``, the largest ``|lambda|``, the most negative and the
largest real part, and dopri5's stability step bound ``3.3 / |lambda|max``.

    python benchmarks/bench_galerkin_spectrum.py --run out/galerkin_allen_cahn --shifts 1e-8,1e-10,1e-12
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from galerkin_allen_cahn import Config, build  # noqa: E402


def spectrum(problem, t: float, theta: torch.Tensor) -> dict:
    """Extreme eigenvalues of ``M`` and of the Jacobian of ``problem(t, theta)``."""
    tt = torch.tensor(t, dtype=theta.dtype)
    jac = torch.func.jacrev(lambda th: problem(tt, th))(theta.detach())
    lam = torch.linalg.eigvals(jac)
    mass = torch.linalg.eigvalsh(problem.mass_and_force(tt, theta.detach())[0])
    top = float(lam.abs().max())
    return {"mass_min": float(mass[0]), "mass_max": float(mass[-1]), "abs_max": top,
            "re_min": float(lam.real.min()), "re_max": float(lam.real.max()), "dopri5_h": 3.3 / top}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a galerkin_allen_cahn.py --out directory")
    parser.add_argument("--shifts", default="1e-8,1e-10,1e-12")
    parser.add_argument("--every", type=int, default=2, help="every how many saved windows")
    args = parser.parse_args(argv)
    run = Path(args.run)
    cfg = Config(**json.loads((run / "metrics.json").read_text())["config"])
    thetas = torch.load(run / "dopri5.pt")["thetas"]
    times = torch.linspace(0, cfg.T, len(thetas), dtype=torch.float64)
    print("t | shift | eig(M) min | eig(M) max | |lambda| max | Re min | Re max | 3.3/|lambda|max")
    for k in range(0, len(thetas), args.every):
        for shift in (float(s) for s in args.shifts.split(",")):
            s = spectrum(build(replace(cfg, regularization=shift)), float(times[k]), thetas[k])
            print(f"{float(times[k]):.3g} | {shift:.0e} | {s['mass_min']:.2e} | {s['mass_max']:.2e} | "
                  f"{s['abs_max']:.3e} | {s['re_min']:.3e} | {s['re_max']:.3e} | {s['dopri5_h']:.2e}", flush=True)


if __name__ == "__main__":
    main()
