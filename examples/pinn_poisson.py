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

import argparse
import os
import time

import numpy as np
import torch

import pnode
from pnode.comm import is_root, world
from pnode.pinn import train
from pnode.pinn.cases import SQUARE, mlp, poisson_problem, poisson_score


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/pinn_poisson")
    p.add_argument("--adam", type=int, default=200)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--width", type=int, default=20)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args, petsc_args = p.parse_known_args(argv)
    pnode.init(petsc_args)
    comm = world()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if not args.resume and is_root(comm) and os.path.exists(checkpoint):
        os.remove(checkpoint)
    comm.Barrier()
    problem = poisson_problem(mlp(args.width, args.depth, inputs=2), args.points, comm=comm)
    start = time.perf_counter()
    schedule = ([("adam", args.adam, {"lr": 1e-3})] if args.adam else []) + [("lm", args.iterations)]
    result = train(problem, schedule, progress=not args.no_progress, checkpoint=checkpoint, checkpoint_every=20)
    seconds = time.perf_counter() - start
    error = poisson_score(problem)
    if is_root(comm):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = 101
        pts = SQUARE.sample(n * n, "grid")
        u = problem(pts).reshape(n, n).numpy()
        exact = (torch.sin(np.pi * pts[:, 0]) * torch.sin(np.pi * pts[:, 1])).reshape(n, n).numpy()
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
        g = np.linspace(0, 1, n)
        fig.colorbar(ax[0].pcolormesh(g, g, u.T, shading="auto"), ax=ax[0])
        ax[0].set(title="PINN u", xlabel="x", ylabel="y")
        fig.colorbar(ax[1].pcolormesh(g, g, np.log10(np.abs(u - exact).T + 1e-17), shading="auto"), ax=ax[1])
        ax[1].set(title="log10 |error|", xlabel="x", ylabel="y")
        ax[2].semilogy(result.history["loss"])
        ax[2].set(title="loss", xlabel="iteration")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "pinn_poisson.png"), dpi=110)
        plt.close(fig)
        print(f"stages: {[(s['optimiser'], s['iterations'], s['words']) for s in result.stages]}")
        print(f"ranks {comm.Get_size()}  points {args.points}  parameters "
              f"{sum(q.numel() for q in problem.parameters())}  loss {result.loss:.3e}  wall {seconds:.1f} s")
        print(f"relative L2 error: {error:.3e}")
    return error


if __name__ == "__main__":
    main()
