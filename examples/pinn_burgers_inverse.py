"""Inverse Burgers: the viscosity from noisy observations, with a physics-informed network.

    u_t + u u_x = nu u_xx on x in [-1, 1], t in [0, 1];  nu unknown (true 0.01 / pi)

Observations: ``--observations`` values of the exact Cole-Hopf solution at random nodes
of the 256 x 100 scoring grid, with Gaussian noise of ``--noise`` times the solution's
standard deviation. The network ``u(x, t)`` (no conditions built in) and ``nu`` (a
trainable coefficient, started at ``--nu0``) are fitted together to the data term and the
PDE residual at ``--points`` Sobol points: ``--adam`` Adam iterations, then
``--iterations`` Levenberg-Marquardt iterations (``pnode.pinn.train``; ranks split both
terms' points).

    python examples/pinn_burgers_inverse.py --out out/pinn_inverse --noise 0.01

Prints the recovered ``nu`` and its relative error, and the field's relative L2 error;
saves them to ``inverse.npz`` (``noise``, ``nu``, ``nu_error``, ``field_error``,
``seconds``), ``pinn_burgers_inverse.png`` (nu and loss against iterations) and
``checkpoint.pt`` (``--resume``). ``benchmarks/bench_pinn_inverse_noise.py`` runs it over
noise levels.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from pinn_common import finish, parser, pyplot, start
from pnode.comm import is_root
from pnode.pinn import CollocationProblem, Term, train
from pnode.pinn.cases import DOMAIN, NU, burgers_residual, burgers_score, mlp, scoring_grid


def observations(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, t, u = scoring_grid()
    rng = np.random.default_rng(seed)
    pick = rng.choice(u.size, n, replace=False)
    it, ix = np.unravel_index(pick, u.shape)
    values = u[it, ix] + noise * u.std() * rng.standard_normal(n)
    points = np.stack([x[ix], t[it]], axis=1)
    return torch.as_tensor(points), torch.as_tensor(values)[:, None]


def main(argv=None) -> float:
    p = parser(__doc__, "out/pinn_burgers_inverse", depth=4)
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--observations", type=int, default=2000)
    p.add_argument("--nu0", type=float, default=0.01)
    args, comm, checkpoint = start(p, argv)
    obs_x, obs_u = observations(args.observations, args.noise, args.seed)
    terms = [Term("pde", DOMAIN.sample(args.points, "sobol", seed=args.seed), burgers_residual),
             Term("data", obs_x, lambda u, x, c, y: u(x) - y[0], data=obs_u)]
    nu = torch.tensor(args.nu0, dtype=torch.float64)
    problem = CollocationProblem(mlp(args.width, args.depth, args.seed), terms, DOMAIN,
                                 coefficients={"nu": nu}, comm=comm, jets=not args.no_jets)
    trace, tic = [], time.perf_counter()
    schedule = ([("adam", args.adam, {"lr": 1e-3})] if args.adam else []) + [("lm", args.iterations)]
    result = train(problem, schedule, progress=not args.no_progress, checkpoint=checkpoint, checkpoint_every=20,
                   callback=lambda name, it, loss: trace.append(float(problem.coefficients["nu"].detach())))
    seconds = time.perf_counter() - tic
    found = float(problem.coefficients["nu"].detach())
    error = abs(found - NU) / NU
    field = burgers_score(problem)
    if is_root(comm):
        fig, ax = pyplot().subplots(1, 2, figsize=(10, 3.6))
        ax[0].plot(np.arange(1, len(trace) + 1), trace)
        ax[0].axhline(NU, color="k", ls="--", label="true nu")
        ax[0].set(xlabel="iteration (this run)", ylabel="nu", title="recovered viscosity")
        ax[0].legend()
        finish(fig, os.path.join(args.out, "pinn_burgers_inverse.png"), ax[1], result)
        np.savez(os.path.join(args.out, "inverse.npz"), noise=args.noise, nu=found, nu_error=error,
                 field_error=field, seconds=seconds)
        print(f"noise {args.noise:.3f}  observations {args.observations}  nu {found:.6e} (true {NU:.6e})  "
              f"relative error {error:.2e}  field rel. L2 {field:.2e}  wall {seconds:.0f} s")
    return error


if __name__ == "__main__":
    main()
