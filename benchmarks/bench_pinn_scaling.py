"""Strong scaling of a Gauss-Newton PINN iteration over the ranks (Burgers, fixed points).

    mpiexec -n 1 python benchmarks/bench_pinn_scaling.py [--points 4000] [--iterations 10]
    mpiexec -n 2 python benchmarks/bench_pinn_scaling.py

Each rank holds its share of the collocation points; one Levenberg-Marquardt iteration
assembles this rank's Jacobian rows (vmap over jacrev), forms ``J^T J`` for them, sums
over the ranks (one Allreduce) and factors the system (PETSc dense Cholesky, on every
rank). Prints the median seconds of the rows and of the whole iteration on rank 0, and the final loss (the same on any number of ranks).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pnode
from pnode.comm import is_root, world
from pnode.pinn.cases import burgers_problem, mlp
from pnode.solvers import LevenbergMarquardt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=4000)
    p.add_argument("--iterations", type=int, default=10)
    args, rest = p.parse_known_args()
    pnode.init(rest)
    torch.set_num_threads(1)
    comm = world()
    problem = burgers_problem(mlp(20, 3), args.points, comm=comm)
    rows_seconds = []
    rows_fn = problem.jacobian_rows

    def timed_rows():
        tic = time.perf_counter()
        J = rows_fn()
        rows_seconds.append(time.perf_counter() - tic)
        return J
    objective = problem.objective()
    objective.jacobian_rows = timed_rows
    opt = LevenbergMarquardt(problem.parameters(), objective, comm=comm, progress=False)
    steps = []
    for _ in range(args.iterations):
        comm.Barrier()
        tic = time.perf_counter()
        opt.step()
        steps.append(time.perf_counter() - tic)
    if is_root(comm):
        med = statistics.median
        print(f"ranks {comm.Get_size()}  points {args.points} ({problem.local[0][0].shape[0]} on rank 0)  "
              f"Jacobian rows {med(rows_seconds):.3f} s  "
              f"iteration {med(steps):.3f} s  loss {opt.loss:.12e}")
    opt.destroy()


if __name__ == "__main__":
    main()
