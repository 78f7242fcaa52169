"""PDE operators and Jacobian rows of a PINN: pnode.pinn's jets and torch.func batching
against autograd.

    python benchmarks/bench_pinn_operators.py [--points 1000] [--width 32] [--repeat 5] [--burgers-points 6000] [--lm-iterations 20]

Network: tanh MLP 2-W-W-1 (float64, one torch thread), N points in [0, 1]^2. Rows:

- Laplacian: ``vmap(hessian)`` (``pnode.pinn.laplacian``), the batched autograd idiom
  (``grad`` of the summed output with ``create_graph``, once per coordinate), and a naive
  loop over points (two nested ``autograd.grad`` per point);
- Jacobian rows of the Poisson residual in the parameters ``(N, n)``: the jets
  (``CollocationProblem(jets=True)``, the default for MLPs: :mod:`pnode.pinn.jets`),
  ``vmap`` over ``jacrev`` (``jets=False``) and one backward pass per row (the bridge's
  generic ``Evaluator.dense_jacobian``);
- the Burgers case of ``examples/pinn_burgers.py`` (MLP 2-20-20-20-1, hard conditions) at
  ``--burgers-points``: residual rows, Jacobian rows and the mean Levenberg-Marquardt
  iteration (``--lm-iterations`` after 3) with and without jets.

Prints median seconds, the ratio to pnode's default, and the largest difference.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pnode
from pnode.pinn import laplacian, operators as ops
from pnode.pinn.cases import burgers_problem, mlp, poisson_problem
from pnode.solvers import LevenbergMarquardt


def timed(fn, repeat: int):
    """Median seconds of ``repeat`` calls after one warm-up call (none for one repeat)."""
    out, times = fn() if repeat > 1 else None, []
    for _ in range(repeat):
        tic = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--burgers-points", type=int, default=6000)
    p.add_argument("--lm-iterations", type=int, default=20, help="LM iterations timed (their mean)")
    args = p.parse_args()
    pnode.init([])
    torch.set_num_threads(1)
    net = mlp(args.width, 2)
    X = torch.rand(args.points, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    field = lambda x: net(x).reshape(())  # noqa: E731

    def batched_autograd():
        Y = X.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(Y).sum(), Y, create_graph=True)
        return sum(torch.autograd.grad(g[:, i].sum(), Y, create_graph=True)[0][:, i] for i in range(2))

    def naive_loop():
        out = []
        for x in X:
            y = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(y).sum(), y, create_graph=True)
            out.append(sum(torch.autograd.grad(g[i], y, create_graph=True)[0][i] for i in range(2)))
        return torch.stack(out)

    rows = []
    t_ref, lap = timed(lambda: ops.batched(laplacian(field))(X), args.repeat)
    rows.append(("laplacian: pnode.pinn vmap(hessian)", t_ref, 1.0, 0.0))
    for name, fn in (("laplacian: batched autograd", batched_autograd), ("laplacian: naive loop", naive_loop)):
        t, out = timed(fn, 1 if "loop" in name else args.repeat)
        rows.append((name, t, t / t_ref, float((out - lap).detach().abs().max())))

    problem = poisson_problem(mlp(args.width, 2), args.points, jets=True)
    t_jac, J = timed(problem.jacobian_rows, args.repeat)
    rows.append(("Jacobian rows: pnode.pinn jets", t_jac, 1.0, 0.0))
    generic = poisson_problem(mlp(args.width, 2), args.points, jets=False)
    t, out = timed(generic.jacobian_rows, args.repeat)
    rows.append(("Jacobian rows: vmap(jacrev)", t, t / t_jac, float((out - J).abs().max())))

    def per_row():
        r = problem.residual()
        params = problem.parameters()
        out = torch.empty(r.numel(), sum(q.numel() for q in params), dtype=r.dtype)
        for i in range(r.numel()):
            grads = torch.autograd.grad(r[i], params, retain_graph=True)
            out[i] = torch.cat([g.reshape(-1) for g in grads])
        return out
    t, out = timed(per_row, 1)
    rows.append(("Jacobian rows: one backward per row", t, t / t_jac, float((out - J).abs().max())))
    print(f"MLP 2-{args.width}-{args.width}-1, {args.points} points, float64, 1 thread; "
          f"Jacobian {tuple(J.shape)}")
    print("| operation | s | time / pnode.pinn | max abs diff |")
    print("|---|---|---|---|")
    for name, t, ratio, diff in rows:
        print(f"| {name} | {t:.4f} | {ratio:.1f} | {diff:.1e} |")
    burgers(args)


def burgers(args) -> None:
    """Residual rows, Jacobian rows and one LM iteration of the Burgers case, jets and generic."""
    timings = {}
    for jets in (True, False):
        problem = burgers_problem(mlp(20, 3), args.burgers_points, jets=jets)
        with torch.no_grad():
            timings[jets, "residual rows"] = timed(problem.residual, args.repeat)
        timings[jets, "Jacobian rows"] = timed(problem.jacobian_rows, args.repeat)
        opt = LevenbergMarquardt(problem.parameters(), problem.objective(), progress=False)
        opt.solve(max_it=3)
        tic = time.perf_counter()
        opt.solve(max_it=3 + args.lm_iterations)
        timings[jets, "LM iteration"] = ((time.perf_counter() - tic) / args.lm_iterations, None)
        opt.destroy()
    numel = sum(q.numel() for q in problem.parameters())
    print(f"\nBurgers: MLP 2-20-20-20-1, {args.burgers_points} points, {numel} parameters, float64, 1 thread")
    print("| operation | jets s | vmap(jacrev) s | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    for what in ("residual rows", "Jacobian rows", "LM iteration"):
        (t_j, a), (t_g, b) = timings[True, what], timings[False, what]
        diff = float((a - b).abs().max()) if a is not None else float("nan")
        print(f"| {what} | {t_j:.4f} | {t_g:.4f} | {t_g / t_j:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
