"""Discrete-time Runge-Kutta PINN for viscous Burgers (Raissi et al.'s one long step).

    u_t = N[u] = -u u_x + (0.01 / pi) u_xx,  from t = 0.1 to t = 0.9 in one step of dt = 0.8

A tanh MLP of x (``--depth`` x ``--width``) outputs the ``--q`` stages of the Gauss-Legendre
method (tableau by ``pnode.pinn.gauss_legendre``, order 2q) and the value at t = 0.9, each
times ``(1 - x^2)`` (the boundary condition, built in); with ``--odd`` its layers have no
biases, so every output is an odd function of x, like the solution. The data are
``--points`` values of the exact Cole-Hopf solution at t = 0.1; the loss is the ``q + 1``
back-stepped states' misfit there (``pnode.pinn.runge_kutta_term``; the operator takes
``u``, ``u_x`` and ``u_xx`` of all outputs by ``pnode.pinn.operators.directional``, which
reads them from the jets that carry them through the network, ``pnode.pinn.jets``).
Training: ``--adam`` Adam iterations, then ``--iterations`` of ``--optimiser``: ``lm``
(Levenberg-Marquardt on the 125,250 residual rows with matrix-free normal equations, at most
``--cg`` CG iterations per step), ``lbfgs`` or a ``tao:`` quasi-Newton type; at most
``--minutes`` of wall time. The error is printed every ``--score-every`` iterations.

    python examples/pinn_burgers_rk.py --out out/pinn_burgers_rk
    OMP_NUM_THREADS=1 mpiexec -n 2 python examples/pinn_burgers_rk.py --minutes 45   # 2.5e-4 (docs/benchmarks.md)

``--init`` starts from another run's network, ``--sampler`` draws the data points and
``--nystrom R`` preconditions the CG normal equations (rank-R Nystrom). docs/benchmarks.md
reaches 6.6e-5 from the 45-minute network: 512 Sobol points, then ``--nystrom 100``.

The data points are split over the ranks.

Prints the relative L2 error at t = 0.9 against Cole-Hopf on 256 points; saves
``pinn_burgers_rk.png`` and ``checkpoint.pt`` (``--resume``) in --out.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from pinn_common import finish, parser, pyplot, start, time_limit
from pnode.comm import is_root
from pnode.pinn import AffineTransform, CollocationProblem, Interval, gauss_legendre, operators as ops
from pnode.pinn import runge_kutta_term, train
from pnode.pinn.cases import NU
from pnode.pinn.exact import burgers_cole_hopf

T0, DT = 0.1, 0.8


def burgers_operator(u, x, c):
    """``-u u_x + nu u_xx`` of every output of the field at one point ``x (1,)``: ``u``,
    ``u_x`` and ``u_xx`` of all outputs along ``x`` (read from the jets, or one
    forward-over-forward pass)."""
    v, v_x, v_xx = ops.directional(u, x, torch.ones_like(x))
    return -v * v_x + NU * v_xx


def main(argv=None) -> float:
    p = parser(__doc__, "out/pinn_burgers_rk", adam=1000, iterations=5000, points=250, width=50, depth=4)
    p.add_argument("--q", type=int, default=500)
    p.add_argument("--optimiser", default="lm")
    p.add_argument("--score-every", type=int, default=10, help="print the error every so many iterations")
    p.add_argument("--cg", type=int, default=100, help="CG iterations per Levenberg-Marquardt step (--optimiser lm)")
    p.add_argument("--nystrom", type=int, default=0,
                   help="rank of the Nystrom preconditioner of the CG normal equations (--optimiser lm; 0: none)")
    p.add_argument("--nystrom-every", type=int, default=10, help="LM iterations between its sketches")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--odd", action="store_true",
                   help="layers without biases: every output is an odd function of x, as the solution is")
    p.add_argument("--sampler", default="uniform", help="how the data points are drawn (Interval.sample's "
                   "methods: uniform, sobol, halton, lhs, grid)")
    p.add_argument("--init", help="start from the network of another run's checkpoint.pt (same --q, --width, "
                   "--depth and --odd; its data points may differ)")
    args, comm, checkpoint = start(p, argv)
    tab = gauss_legendre(args.q)
    domain = Interval(-1.0, 1.0)
    x = domain.sample(args.points, args.sampler, seed=args.seed)
    data = torch.as_tensor(burgers_cole_hopf(x[:, 0].numpy(), [T0])[0])[:, None]
    torch.manual_seed(args.seed)
    layers, n = [], 1
    for _ in range(args.depth):
        layers += [torch.nn.Linear(n, args.width, bias=not args.odd), torch.nn.Tanh()]
        n = args.width
    net = torch.nn.Sequential(*layers, torch.nn.Linear(n, args.q + 1, bias=not args.odd)).double()
    problem = CollocationProblem(net, [runge_kutta_term("rk", x, data, burgers_operator, tab, DT)], domain,
                                 transform=AffineTransform(scale=lambda x: 1 - x[0] ** 2), comm=comm,
                                 jets=not args.no_jets)
    if args.init:
        torch.nn.utils.vector_to_parameters(torch.load(args.init)["x"], problem.parameters())
    grid = np.linspace(-1, 1, 256)
    exact = burgers_cole_hopf(grid, [T0 + DT])[0]

    def score() -> float:
        u = problem(torch.as_tensor(grid)[:, None])[:, -1].numpy()
        return float(np.linalg.norm(u - exact) / np.linalg.norm(exact))

    def each(name: str, iteration: int, loss: float) -> None:
        if iteration % args.score_every == 0 and is_root(comm):
            print(f"iteration {iteration} ({name}): loss {loss:.3e}  rel. L2 error {score():.3e}", flush=True)
    tic = time.perf_counter()
    main_opts = {}
    if args.optimiser.startswith("tao:"):
        main_opts = {"tao_gatol": 0.0, "tao_grtol": 0.0, "tao_gttol": 0.0}
    elif args.optimiser == "lm":
        main_opts = {"linear_solver": "cg", "damping": 0.05, "options": {"ksp_max_it": args.cg}}
        if args.nystrom:
            main_opts.update(nystrom_rank=args.nystrom, nystrom_every=args.nystrom_every)
    schedule = ([("adam", args.adam, {"lr": 1e-3})] if args.adam else []) + [(args.optimiser, args.iterations,
                                                                              main_opts)]
    result = train(problem, schedule, progress=not args.no_progress, checkpoint=checkpoint, checkpoint_every=100,
                   callback=time_limit(args.minutes, comm, each))
    seconds, error = time.perf_counter() - tic, score()
    if is_root(comm):
        fig, ax = pyplot().subplots(1, 2, figsize=(10, 3.6))
        u = problem(torch.as_tensor(grid)[:, None])[:, -1].numpy()
        ax[0].plot(grid, exact, "k-", label="Cole-Hopf, t = 0.9")
        ax[0].plot(grid, u, "r--", label="RK PINN")
        ax[0].plot(x[:, 0], data[:, 0], "b.", ms=2, label="data, t = 0.1")
        ax[0].set(xlabel="x", ylabel="u")
        ax[0].legend()
        finish(fig, os.path.join(args.out, "pinn_burgers_rk.png"), ax[1], result)
        print(f"q {args.q}  points {args.points}  parameters {sum(t.numel() for t in problem.parameters())}  "
              f"loss {result.loss:.3e}  wall {seconds:.1f} s")
        print(f"relative L2 error at t = 0.9: {error:.3e}")
    return error


if __name__ == "__main__":
    main()
