"""Second order pays off: Newton trust region and Gauss-Newton vs Adam and L-BFGS at equal wall time.

    python benchmarks/bench_second_order.py --seconds 20 --out out/bench_second_order

A small full-batch regression: an MLP (2-H-H-1, tanh, float64) fitting a smooth 2-D
function on N points, loss ``0.5 mean (f(x) - y)^2``. Every method starts from the same
parameters and runs for the same wall time (``--seconds``, measured in this one process,
one torch thread):

* TAO ``ntr`` (Newton trust region, Hessian-vector products by double backward as a shell
  matrix, KSP STCG), through :class:`pnode.solvers.TaoSolver`;
* TAO ``brgn`` (Gauss-Newton with a proximal damping ``--damping/2 ||x - x_k||^2``, the
  residual's Jacobian a JVP/VJP shell, subsolver ``bnls``), through
  :class:`pnode.solvers.TaoSolver`;
* TAO ``lmvm`` (L-BFGS), through :class:`pnode.solvers.TaoSolver`;
* ``torch.optim.LBFGS`` (strong Wolfe line search) and ``torch.optim.Adam``.

The TAO solvers stop at the time limit through a TAO convergence test, which also records
the training loss at each iterate (on a copy of the model; the time spent recording is
not counted, for any method). The figure of
merit is the training loss each method holds at the time limit, and the ratios of the
first-order methods' losses to the second-order ones'. Curves (seconds, loss) and the
table go to OUT/second_order.json and OUT/second_order.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
from mpi4py import MPI

import pnode
from pnode.solvers import Objective, TaoSolver

DT = torch.float64
NO_TOLERANCES = {"tao_gatol": 0, "tao_grtol": 0, "tao_gttol": 0}


def problem(points: int, hidden: int):
    """Data, a model and the residual ``(f(x) - y) / sqrt(N)`` (its half squared norm is the loss)."""
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(points, 2, generator=g, dtype=DT) - 1
    y = torch.sin(math.pi * x[:, :1]) * torch.cos(0.5 * math.pi * x[:, 1:]) + 0.3 * x[:, :1] * x[:, 1:]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).to(DT)
    scale = 1 / math.sqrt(points)

    def residual(m):
        return (m(x) - y).reshape(-1) * scale
    return model, residual


def loss_of(residual, model) -> torch.Tensor:
    r = residual(model)
    return 0.5 * (r * r).sum()


class Curve:
    """(seconds, loss) of one method; the seconds spent recording are not counted."""

    def __init__(self, name: str, model, residual):
        self.name, self.rows, self.model, self.residual = name, [], model, residual
        self.t0, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.paused

    def record(self, flat: torch.Tensor | None = None) -> float:
        """Record the training loss of the model (with the flat parameters ``flat`` put in
        first) at the time elapsed; returns that time."""
        now, t = time.perf_counter(), self.elapsed()
        with torch.no_grad():
            if flat is not None:
                torch.nn.utils.vector_to_parameters(flat, self.model.parameters())
            self.rows.append((t, float(loss_of(self.residual, self.model))))
        self.paused += time.perf_counter() - now
        return t

    def at(self, seconds: float) -> float:
        """The loss held at ``seconds`` (the last point recorded by then)."""
        held = [f for s, f in self.rows if s <= seconds]
        return held[-1] if held else self.rows[0][1]


def run_tao(name: str, model, residual, seconds: float, tao_type: str, options: dict, least_squares=False,
            lmvm=None) -> Curve:
    if least_squares:
        objective = Objective(residual=lambda: residual(model))
    else:
        objective = Objective(lambda: loss_of(residual, model))
    solver = TaoSolver(model, objective, tao_type=tao_type, lmvm=lmvm, comm=MPI.COMM_SELF, progress=False,
                       options={**NO_TOLERANCES, **options}, options_prefix=f"{tao_type}_")
    # the curve's points are the true training loss at each iterate (TAO's f of brgn has its
    # damping term), on a copy of the model, so that the solver's graphs stay valid
    curve = Curve(name, copy.deepcopy(model), residual)

    def stop_after(tao):
        """A TAO convergence test: stop (CONVERGED_USER) once ``seconds`` have passed, or at
        a zero gradient (CONVERGED_GATOL); keep iterating otherwise."""
        _, f, gnorm, _, _, _ = tao.getSolutionStatus()
        t = curve.record(torch.tensor(tao.getSolution().getArray(readonly=True)))
        if not math.isfinite(f):
            tao.setConvergedReason(-4)
        elif gnorm == 0:
            tao.setConvergedReason(3)
        else:
            tao.setConvergedReason(8 if t > seconds else 0)
    iterating = solver.tao.getBRGNSubsolver() if tao_type == "brgn" else solver.tao
    iterating.setConvergenceTest(stop_after)
    curve.t0 = time.perf_counter()
    result = solver.solve(max_it=10**7)
    curve.reason, curve.iterations, curve.total = result.words, result.iterations, curve.elapsed()
    solver.destroy()
    return curve


def run_torch(name: str, model, residual, seconds: float, make_optimizer) -> Curve:
    opt = make_optimizer(model.parameters())
    curve = Curve(name, model, residual)
    curve.record()
    iterations = 0

    def closure():
        opt.zero_grad()
        f = loss_of(residual, model)
        f.backward()
        return f
    while curve.elapsed() < seconds:
        opt.step(closure)
        iterations += 1
        curve.record()
        if not math.isfinite(curve.rows[-1][1]):
            break
    curve.reason, curve.iterations, curve.total = "time limit", iterations, curve.elapsed()
    return curve


def plot(path: Path, curves: list[Curve], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        s, f = zip(*c.rows)
        ax.semilogy(s, f, label=c.name)
    ax.set(xlabel="wall time (s)", ylabel="training loss", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="wall time of every method")
    p.add_argument("--points", type=int, default=256)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate")
    p.add_argument("--damping", type=float, default=1e-10, help="Gauss-Newton's proximal weight")
    p.add_argument("--out", default="out/bench_second_order")
    args, petsc_args = p.parse_known_args(argv[1:])
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model0, residual = problem(args.points, args.hidden)
    T = args.seconds
    GAUSS_NEWTON = f"TAO brgn (Gauss-Newton, proximal damping {args.damping:g}, Jacobian shell)"
    methods = [
        ("TAO ntr (Newton TR, Hessian shell, STCG)",
         lambda m: run_tao("TAO ntr (Newton TR, Hessian shell, STCG)", m, residual, T, "ntr",
                           {"tao_ntr_ksp_max_it": 100})),
        (GAUSS_NEWTON,
         lambda m: run_tao(GAUSS_NEWTON, m, residual, T, "brgn",
                           {"tao_brgn_regularization_type": "l2prox", "tao_brgn_regularizer_weight": args.damping,
                            "tao_brgn_subsolver_tao_gatol": 0, "tao_brgn_subsolver_tao_grtol": 0,
                            "tao_brgn_subsolver_tao_gttol": 0}, least_squares=True)),
        ("TAO lmvm (L-BFGS)", lambda m: run_tao("TAO lmvm (L-BFGS)", m, residual, T, "lmvm", {}, lmvm="bfgs")),
        ("torch LBFGS (strong Wolfe)",
         lambda m: run_torch("torch LBFGS (strong Wolfe)", m, residual, T,
                             lambda ps: torch.optim.LBFGS(ps, lr=1, max_iter=20, history_size=20,
                                                          line_search_fn="strong_wolfe"))),
        (f"Adam (lr {args.lr:g})",
         lambda m: run_torch(f"Adam (lr {args.lr:g})", m, residual, T,
                             lambda ps: torch.optim.Adam(ps, lr=args.lr))),
    ]
    curves = [run(copy.deepcopy(model0)) for _, run in methods]
    second, first = curves[:2], curves[2:]
    held = {c.name: c.at(T) for c in curves}
    best_first = min(held[c.name] for c in first)
    parameters = sum(q.numel() for q in model0.parameters())
    report = {"seconds": T, "points": args.points, "hidden": args.hidden, "parameters": parameters,
              "methods": {c.name: {"loss_at_time": held[c.name], "iterations": c.iterations, "reason": c.reason,
                                   "ran_seconds": c.total} for c in curves},
              "ratios": {s.name: {f.name: held[f.name] / held[s.name] for f in first} for s in second},
              "curves": {c.name: c.rows for c in curves}}
    (out / "second_order.json").write_text(json.dumps(report, indent=1))
    plot(out / "second_order.png", curves, f"MLP 2-{args.hidden}-{args.hidden}-1 ({parameters} parameters), "
                                           f"{args.points} points")
    print(f"MLP 2-{args.hidden}-{args.hidden}-1, {parameters} parameters, {args.points} points, {T:g} s per method")
    print("| method | loss at %g s | iterations | stopped by |" % T)
    print("|---|---|---|---|")
    for c in curves:
        print(f"| {c.name} | {held[c.name]:.3e} | {c.iterations} | {c.reason} |")
    for s in second:
        ratios = ", ".join(f"{held[f.name] / held[s.name]:.3g}x ({f.name})" for f in first)
        print(f"{s.name}: first-order loss / its loss at {T:g} s: {ratios}; "
              f">= 100x lower than every first-order method: {best_first / held[s.name] >= 100}")
    return report


if __name__ == "__main__":
    main(sys.argv)
