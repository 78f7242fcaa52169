"""A physics-informed network for the 2-D Poisson problem, trained by Gauss-Newton.

    -lap u = 2 pi^2 sin(pi x) sin(pi y) on (0, 1)^2,  u = 0 on the boundary  (u = sin(pi x) sin(pi y))

Hard boundary condition (``u = x (1 - x) y (1 - y) N(x, y)``, N a tanh MLP), the PDE
residual at ``--points`` Sobol points (split over the ranks), ``pnode.pinn.train`` with
``--adam`` Adam iterations then ``--iterations`` Levenberg-Marquardt iterations.

    python examples/pinn_poisson.py --out out/pinn_poisson
    mpiexec -n 2 python examples/pinn_poisson.py --out out/pinn_poisson_n2

Prints the relative L2 error on a 101 x 101 grid; saves ``pinn_poisson.png`` (PINN,
error, loss) and ``checkpoint.pt`` (``--resume``) in --out.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from pinn_common import finish, parser, pyplot, start
from pnode.comm import is_root
from pnode.pinn import train
from pnode.pinn.cases import SQUARE, mlp, poisson_problem, poisson_score


def main(argv=None) -> float:
    p = parser(__doc__, "out/pinn_poisson", adam=200, iterations=300, points=1024, depth=2)
    args, comm, checkpoint = start(p, argv)
    problem = poisson_problem(mlp(args.width, args.depth, args.seed, inputs=2), args.points, seed=args.seed,
                              comm=comm, jets=not args.no_jets)
    tic = time.perf_counter()
    schedule = ([("adam", args.adam, {"lr": 1e-3})] if args.adam else []) + [("lm", args.iterations)]
    result = train(problem, schedule, progress=not args.no_progress, checkpoint=checkpoint, checkpoint_every=20)
    seconds = time.perf_counter() - tic
    error = poisson_score(problem)
    if is_root(comm):
        n = 101
        pts = SQUARE.sample(n * n, "grid")
        u = problem(pts).reshape(n, n).numpy()
        exact = (torch.sin(np.pi * pts[:, 0]) * torch.sin(np.pi * pts[:, 1])).reshape(n, n).numpy()
        fig, ax = pyplot().subplots(1, 3, figsize=(13, 3.8))
        g = np.linspace(0, 1, n)
        fig.colorbar(ax[0].pcolormesh(g, g, u.T, shading="auto"), ax=ax[0])
        ax[0].set(title="PINN u", xlabel="x", ylabel="y")
        fig.colorbar(ax[1].pcolormesh(g, g, np.log10(np.abs(u - exact).T + 1e-17), shading="auto"), ax=ax[1])
        ax[1].set(title="log10 |error|", xlabel="x", ylabel="y")
        finish(fig, os.path.join(args.out, "pinn_poisson.png"), ax[2], result)
        print(f"ranks {comm.Get_size()}  points {args.points}  parameters "
              f"{sum(q.numel() for q in problem.parameters())}  loss {result.loss:.3e}  wall {seconds:.1f} s")
        print(f"relative L2 error: {error:.3e}")
    return error


if __name__ == "__main__":
    main()
