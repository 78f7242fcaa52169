"""Allen-Cahn with physics-informed networks: time marching, built-in conditions, Gauss-Newton.

    u_t = 1e-4 u_xx - 5 u^3 + 5 u,  x in [-1, 1] periodic, t in [0, 1],  u(x, 0) = x^2 cos(pi x)

Vanilla PINNs are reported to fail here (the interfaces are 6e-3 wide and the early dynamics
are unstable).
This example marches in time (``pnode.pinn.TimeMarching``): ``[0, 1]`` is cut into the
slabs between ``--times`` (or ``--slabs`` equal ones), each with its own small tanh network
on the periodic features ``cos(pi k x), sin(pi k x)`` (``k <= --modes``, exactly periodic),
the kink feature ``|cos(pi x / 2)|`` (the initial slope is not periodic) and the slab's
time; the field ``u = u_k(x) + (t - t_k) N_k(x, t)`` takes its initial condition ``u_k``
exactly from the slabs before it (``x^2 cos(pi x)`` on the first). The slabs are trained in order,
each by one ``pnode.pinn.train`` schedule: ``--adam`` Adam iterations (0: none), then
``--rounds + 1`` Levenberg-Marquardt stages (float64, PETSc dense Cholesky, at most
``--iterations`` each, stopping at a loss below ``--fmin``) with ``--resample`` points
added where the residual is large after each but the last (residual-based adaptive
resampling). Points are split over the ranks.

    python examples/pinn_allen_cahn.py --out out/pinn_allen_cahn
    mpiexec -n 2 python examples/pinn_allen_cahn.py --out out/pinn_allen_cahn_n2
    python examples/pinn_allen_cahn.py --out out/pinn_allen_cahn --resume   # after a --minutes stop

Writes to --out (rank 0): ``prediction.npz`` (``x (512,)``, ``t (201,)``, ``u (201, 512)`` on
``x = linspace(-1, 1, 512)``, ``t = linspace(0, 1, 201)``), ``slabs.npz`` (per slab: end
time, loss, iterations, points, wall seconds, error so far), ``pinn_allen_cahn.png``
(reference, PINN, error, error per slab), ``marching.pt`` (the finished slabs) and
``slab_<k>.pt`` (the slab in training; ``--resume`` continues from both). Prints the
relative L2 error against the PETSc TS reference (``pnode.pinn.reference``).
"""
from __future__ import annotations

import glob
import os
import time

import numpy as np

from pinn_common import field_figure, parser, save_figure, start, time_limit
from pnode.comm import is_root
from pnode.pinn import train
from pnode.pinn.cases import (allen_cahn_grid, allen_cahn_marching, allen_cahn_network, allen_cahn_predict,
                              allen_cahn_problem, allen_cahn_score)
from pnode.solvers.monitor import Progress
from pnode.solvers.tao import load_state, save_state

TIMES = "0,0.1,0.2,0.3,0.4,0.7,1"  # short slabs while the interfaces form, longer ones after


def schedule(args) -> list:
    lm = ("lm", args.iterations, {"fmin": args.fmin})
    stages = [("adam", args.adam, {"lr": 1e-3})] if args.adam else []
    for _ in range(args.rounds):
        stages += [lm, ("resample", args.resample, {"candidates": 20 * args.resample})]
    return stages + [lm]


def figure(path: str, u: np.ndarray, slabs: dict) -> None:
    x, t, ref = allen_cahn_grid()
    fig, ax = field_figure(x, t, ref, u, "reference (PETSc TS)")
    ax[3].semilogy(slabs["end"], slabs["error"], "o-", ms=3, label="rel. L2 on [0, t_k]")
    ax[3].semilogy(slabs["end"], slabs["loss"], "s-", ms=3, label="slab loss")
    ax[3].set(xlabel="slab end time", title="marching")
    ax[3].legend()
    save_figure(fig, path)


def main(argv=None) -> float:
    p = parser(__doc__, "out/pinn_allen_cahn", adam=0, iterations=60, points=1024, width=16, depth=2)
    p.add_argument("--times", default=TIMES, help=f"slab times (default {TIMES})")
    p.add_argument("--slabs", type=int, default=None, help="equal time slabs instead of --times")
    p.add_argument("--modes", type=int, default=2, help="periodic features cos/sin(pi k x), k <= modes")
    p.add_argument("--rounds", type=int, default=2, help="residual-based resampling rounds per slab")
    p.add_argument("--resample", type=int, default=512, help="points added per round")
    p.add_argument("--fmin", type=float, default=1e-12, help="an LM stage stops below this loss")
    p.add_argument("--minutes", type=float, default=30.0)
    args, comm, _ = start(p, argv)
    state_path = os.path.join(args.out, "marching.pt")
    if not args.resume and is_root(comm):
        for stale in glob.glob(os.path.join(args.out, "marching.pt")) + glob.glob(os.path.join(args.out, "slab_*.pt")):
            os.remove(stale)
    comm.Barrier()
    times = None if args.slabs else [float(v) for v in args.times.split(",")]
    marching = allen_cahn_marching(args.slabs or 0, times)

    def network(k: int):
        return allen_cahn_network(marching.times[k], marching.times[k + 1], args.width, args.depth,
                                  args.modes, seed=args.seed + k)
    slabs = {key: [] for key in ("end", "loss", "iterations", "points", "seconds", "error")}
    if os.path.exists(state_path):
        state = load_state(state_path)
        marching.load_state_dict(state["marching"], network)
        slabs = {key: list(v) for key, v in state["slabs"].items()}
    limit = time_limit(args.minutes, comm)
    bar = Progress(marching.slabs, "slabs", comm, not args.no_progress, initial=marching.done)
    tic, cpu, stopped = time.perf_counter(), time.process_time(), False
    while marching.done < marching.slabs and not stopped:
        k = marching.done
        net = network(k)
        problem = allen_cahn_problem(net, marching, args.points, seed=args.seed + k, comm=comm,
                                     jets=not args.no_jets)
        checkpoint = os.path.join(args.out, f"slab_{k}.pt")
        slab_tic = time.perf_counter()
        result = train(problem, schedule(args), progress=False, checkpoint=checkpoint, checkpoint_every=10,
                       callback=limit)
        stopped = result.stopped
        if not stopped:
            marching.finish(net)
            for key, value in (("end", marching.times[k + 1]), ("loss", result.loss),
                               ("iterations", len(result.history)), ("points", problem.terms[0].points.shape[0]),
                               ("seconds", time.perf_counter() - slab_tic),
                               ("error", allen_cahn_score(marching, marching.times[k + 1]))):
                slabs[key].append(value)
            save_state({"marching": marching.state_dict(), "slabs": slabs}, state_path, comm)
            if is_root(comm):
                os.remove(checkpoint)
            bar.update(1, loss=result.loss, error=slabs["error"][-1])
    bar.close()
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    if marching.done == 0:
        if is_root(comm):
            print("stopped before the first slab was finished; continue with --resume")
        return float("nan")
    t_end = marching.times[marching.done]
    error = allen_cahn_score(marching, t_end)
    if is_root(comm):
        u = allen_cahn_predict(marching, t_end)
        x, t, ref = allen_cahn_grid()
        np.savez(os.path.join(args.out, "slabs.npz"), **{key: np.asarray(v) for key, v in slabs.items()})
        if marching.done == marching.slabs:
            np.savez(os.path.join(args.out, "prediction.npz"), x=x, t=t, u=u)
            figure(os.path.join(args.out, "pinn_allen_cahn.png"), u, slabs)
        params = sum(q.numel() for q in marching.models[0].parameters())
        print(f"ranks {comm.Get_size()}  slabs {marching.done}/{marching.slabs}  parameters per slab {params}  "
              f"LM/Adam iterations {int(sum(slabs['iterations']))}  final points per slab "
              f"{slabs['points'][-1]}  wall {seconds:.1f} s, CPU {cpu:.1f} s on rank 0 (this run)")
        for row in zip(*(slabs[key] for key in ("end", "loss", "iterations", "error"))):
            print(f"  slab to t = {row[0]:.3f}: loss {row[1]:.2e}, {int(row[2])} iterations, rel. L2 on [0, t] "
                  f"{row[3]:.2e}")
        what = "" if marching.done == marching.slabs else f" on [0, {t_end:.3f}] (stopped: --resume continues)"
        print(f"relative L2 error vs the PETSc TS reference{what}: {error:.3e}")
    return error


if __name__ == "__main__":
    main()
