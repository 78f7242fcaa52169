"""A physics-informed network for viscous Burgers, trained to high accuracy by Gauss-Newton.

    u_t + u u_x = (0.01 / pi) u_xx,  x in [-1, 1], t in [0, 1],  u(x, 0) = -sin(pi x),  u(+-1, t) = 0

The initial and boundary conditions are built into the network's output
(``u = -sin(pi x) + t (1 - x^2) N(x, t)``, N a tanh MLP), so the loss is the PDE residual
at ``--points`` Sobol collocation points (split over the ranks), as a residual vector.
Training is one ``pnode.pinn.train`` schedule: ``--adam`` Adam warm-up iterations, then
``--iterations`` of ``--optimiser``: ``lm`` (Levenberg-Marquardt, normal equations by
PETSc's dense Cholesky), ``lbfgs`` (torch), ``tao:lmvm`` / ``tao:bqnls`` (PETSc's
quasi-Newton, ``--lmvm bfgs|sr1|symbroyden``), ``tao:brgn`` or ``adam``; with ``--rounds
R`` those iterations are split into ``R + 1`` stages with ``--resample`` points added
after each but the last, where the residual is large (``pnode.pinn`` resample stages: drawn
from 20 times as many uniform candidates with weights ``|r|^k / mean(|r|^k) + c``,
``--resample-k``, ``--resample-c``, both 1 by default).
``--minutes``
stops training at a wall-time limit (the same iteration on every rank).

    python examples/pinn_burgers.py --out out/pinn_burgers
    mpiexec -n 2 python examples/pinn_burgers.py --out out/pinn_burgers_n2
    python examples/pinn_burgers.py --out out/pinn_burgers --resume --minutes 10   # after a --minutes stop

The run that reaches 4.2e-7 in 19.5 minutes on 2 cores (docs/benchmarks.md):

    OMP_NUM_THREADS=1 mpiexec -n 2 python examples/pinn_burgers.py --depth 4 --adam 500 --iterations 7000 --rounds 12 --resample 1000 --minutes 19.5

Writes to --out (rank 0): ``prediction.npz`` (``x (256,)``, ``t (100,)``, ``u (100, 256)``
on ``x = linspace(-1, 1, 256)``, ``t = linspace(0, 0.99, 100)``, for independent scoring),
``trace.npz`` (wall seconds, iteration and relative L2 error every ``--score-every``
iterations), ``pinn_burgers.png`` (exact, PINN, error, loss and error histories) and
``checkpoint.pt`` (``--resume`` continues from it). Prints the relative L2 error against
the exact Cole-Hopf solution (pnode.pinn.exact).
"""
from __future__ import annotations

import os
import time

import numpy as np

from pinn_common import field_figure, parser, save_figure, start, time_limit
from pnode.comm import is_root
from pnode.pinn import train
from pnode.pinn.cases import burgers_problem, burgers_score, mlp, predict, scoring_grid


def schedule(args) -> list:
    main: dict = {}
    if args.optimiser.startswith("tao:"):
        main = {"tao_gatol": 0.0, "tao_grtol": 0.0, "tao_gttol": 0.0}
        if args.lmvm and args.optimiser in ("tao:lmvm", "tao:bqnls"):
            main["lmvm"] = args.lmvm
    elif args.optimiser == "adam":
        main = {"lr": args.lr}
    stages = [("adam", args.adam, {"lr": args.lr})] if args.adam else []
    chunk = args.iterations // (args.rounds + 1)
    for _ in range(args.rounds):
        stages += [(args.optimiser, chunk, main),
                   ("resample", args.resample, {"candidates": 20 * args.resample, "k": args.resample_k,
                                                "c": args.resample_c})]
    return stages + [(args.optimiser, args.iterations - args.rounds * chunk, main)]


def figure(path: str, u: np.ndarray, trace: dict, losses: list[float]) -> None:
    x, t, ref = scoring_grid()
    fig, ax = field_figure(x, t, ref, u, "exact (Cole-Hopf)")
    ax[3].semilogy(np.arange(1, len(losses) + 1), losses, label="loss")
    if len(trace["iteration"]):
        ax[3].semilogy(trace["iteration"], trace["error"], "o-", ms=3, label="rel. L2 error")
    ax[3].set(xlabel="iteration", title="training")
    ax[3].legend()
    save_figure(fig, path)


def main(argv=None) -> float:
    p = parser(__doc__, "out/pinn_burgers", iterations=2000)
    p.add_argument("--optimiser", default="lm")
    p.add_argument("--lmvm", default=None, help="quasi-Newton matrix of tao:lmvm / tao:bqnls")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=0,
                   help="residual-based resampling rounds, spread over the --optimiser iterations")
    p.add_argument("--resample", type=int, default=500, help="points added per round")
    p.add_argument("--resample-k", type=float, default=1.0,
                   help="resampling weights |r|^k / mean(|r|^k) + c (pnode.pinn.resample_by_residual)")
    p.add_argument("--resample-c", type=float, default=1.0)
    p.add_argument("--score-every", type=int, default=20)
    args, comm, checkpoint = start(p, argv)
    problem = burgers_problem(mlp(args.width, args.depth, args.seed), args.points, seed=args.seed, comm=comm,
                              jets=not args.no_jets)
    trace = {"seconds": [], "iteration": [], "error": []}
    tic = time.perf_counter()

    def monitor(name, iteration, loss):
        if iteration % args.score_every == 0:
            trace["seconds"].append(time.perf_counter() - tic)
            trace["iteration"].append(iteration)
            trace["error"].append(burgers_score(problem))
    result = train(problem, schedule(args), progress=not args.no_progress, checkpoint=checkpoint,
                   checkpoint_every=10, callback=time_limit(args.minutes, comm, monitor))
    losses, stages = result.history["loss"], result.stages
    seconds = time.perf_counter() - tic
    error = burgers_score(problem)
    u = predict(problem)
    if is_root(comm):
        x, t, _ = scoring_grid()
        np.savez(os.path.join(args.out, "prediction.npz"), x=x, t=t, u=u)
        np.savez(os.path.join(args.out, "trace.npz"), **{k: np.asarray(v) for k, v in trace.items()})
        figure(os.path.join(args.out, "pinn_burgers.png"), u, trace, losses)
        print(f"stages: {[(s['optimiser'], s.get('iterations'), s.get('words')) for s in stages]}")
        print(f"ranks {comm.Get_size()}  points {args.points}  parameters "
              f"{sum(q.numel() for q in problem.parameters())}  iterations {len(losses)}  "
              f"loss {losses[-1] if losses else float('nan'):.3e}  wall {seconds:.1f} s")
        print(f"relative L2 error vs Cole-Hopf: {error:.3e}")
    return error


if __name__ == "__main__":
    main()
