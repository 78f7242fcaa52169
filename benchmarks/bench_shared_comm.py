"""The solvers on the shared communicator: optimiser-state memory per rank and data-parallel speed-up.

    mpiexec -n 1 python benchmarks/bench_shared_comm.py --out out/bench_shared_comm
    mpiexec -n 2 python benchmarks/bench_shared_comm.py --out out/bench_shared_comm

Run it with ``-n 1`` first, then ``-n 2``: each run writes OUT/shared_comm_n<size>.json
and the ``-n 2`` run prints its ratios to the ``-n 1`` one.

* **Memory.** A linear model with ``--parameters`` entries (replicated on every rank, its
  parameter Vec split over the ranks) is trained for ``--memory + 2`` iterations by TAO
  ``lmvm`` (L-BFGS, ``--memory`` pairs) and by :class:`pnode.solvers.TrustRegion`
  (L-SR1, ``--memory`` pairs). Per rank: the resident-memory increase from just before the
  solver is built to after its iterations (``VmRSS``, so it includes the replicated
  buffers the solver keeps besides its PETSc objects) and the bytes of the limited-memory
  pairs themselves (``2 * memory`` Vecs of this rank's local length).
* **Speed.** An MLP (2-W-W-1) on ``--points`` points sharded over the ranks: seconds per
  gradient evaluation (loss, backward, reduce-scatter into the parameter Vec), the median
  of ``--repeats`` evaluations through :class:`pnode.solvers.TaoSolver`'s evaluator, and
  of a TAO ``lmvm`` iteration.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from mpi4py import MPI

import pnode
from pnode.solvers import Objective, TaoSolver, TrustRegion

DT = torch.float64
NO_TOLERANCES = {"tao_gatol": 0, "tao_grtol": 0, "tao_gttol": 0}


def resident_bytes() -> int:
    """This process's resident set size (``VmRSS``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def linear_problem(parameters: int, comm):
    """A linear least-squares model with ``parameters`` weights, each rank with its own rows."""
    inputs = max(parameters // 4, 1)
    torch.manual_seed(0)
    model = torch.nn.Linear(inputs, 4, bias=False).to(DT)
    g = torch.Generator().manual_seed(10 + comm.Get_rank())
    x = torch.randn(8, inputs, generator=g, dtype=DT)
    y = torch.randn(8, 4, generator=g, dtype=DT)

    def closure():
        return 0.5 * ((model(x) - y) ** 2).sum() / (8 * comm.Get_size())
    return model, closure


def memory_of(kind: str, args, comm) -> dict:
    model, closure = linear_problem(args.parameters, comm)
    closure().backward()  # the model's .grad exist before the baseline
    comm.Barrier()
    before = resident_bytes()
    iterations = args.memory + 2
    if kind == "tao":
        solver = TaoSolver(model, Objective(closure), tao_type="lmvm", lmvm="bfgs", comm=comm, progress=False,
                           options={**NO_TOLERANCES, "tao_lmvm_mat_lmvm_hist_size": args.memory})
        built = resident_bytes()
        solver.solve(max_it=iterations)
        local = solver.pvec.counts[comm.Get_rank()]
    else:
        solver = TrustRegion(model, comm=comm, memory=args.memory)
        built = resident_bytes()
        for _ in range(iterations):
            solver.step(closure)
        local = solver.pvec.counts[comm.Get_rank()]
    after = resident_bytes()
    solver.destroy()
    pairs = 2 * args.memory * local * torch.finfo(DT).bits // 8
    return {"rss_increase": after - before, "rss_built": built - before, "pair_bytes": pairs, "local_entries": local}


def speed(args, comm) -> dict:
    size, rank = comm.Get_size(), comm.Get_rank()
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(args.points, 2, generator=g, dtype=DT) - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:])
    shard = slice(rank * args.points // size, (rank + 1) * args.points // size)
    xs, ys = x[shard].contiguous(), y[shard].contiguous()
    torch.manual_seed(0)
    w = args.width
    model = torch.nn.Sequential(torch.nn.Linear(2, w), torch.nn.Tanh(), torch.nn.Linear(w, w), torch.nn.Tanh(),
                                torch.nn.Linear(w, 1)).to(DT)

    def closure():
        return 0.5 * ((model(xs) - ys) ** 2).sum() / args.points
    solver = TaoSolver(model, Objective(closure), tao_type="lmvm", lmvm="bfgs", comm=comm, progress=False,
                       options=NO_TOLERANCES)
    ev, G = solver.evaluator, solver.pvec.duplicate()
    X = solver.pvec.pull(solver.pvec.duplicate())
    seconds = []
    for _ in range(args.repeats + 1):
        comm.Barrier()
        t0 = time.perf_counter()
        ev.value_gradient(X, G)
        seconds.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    G.destroy()
    X.destroy()
    comm.Barrier()
    t0 = time.perf_counter()
    solver.solve(max_it=args.iterations)
    tao_seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    gradients = solver.evaluator.gradients - (args.repeats + 1)
    solver.destroy()
    return {"gradient_seconds": statistics.median(seconds[1:]), "tao_seconds_per_gradient": tao_seconds / gradients,
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parameters", type=int, default=1_000_000, help="entries of the memory case's model")
    p.add_argument("--memory", type=int, default=10, help="limited-memory pairs")
    p.add_argument("--points", type=int, default=200_000, help="data points of the speed case")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--iterations", type=int, default=20, help="TAO lmvm iterations of the speed case")
    p.add_argument("--out", default="out/bench_shared_comm")
    args, petsc_args = p.parse_known_args(argv[1:])
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    size, rank = comm.Get_size(), comm.Get_rank()
    out = Path(args.out)
    report = {"ranks": size, "args": vars(args)}
    for kind in ("tao", "tr"):
        m = memory_of(kind, args, comm)
        report[f"memory_{kind}"] = {k: comm.allreduce(v, op=MPI.MAX) for k, v in m.items()}
    report["speed"] = speed(args, comm)
    if rank:
        return report
    out.mkdir(parents=True, exist_ok=True)
    (out / f"shared_comm_n{size}.json").write_text(json.dumps(report, indent=1))
    mib = 2.0 ** 20
    print(f"{size} rank(s), largest rank's figures")
    for kind, name in (("tao", "TAO lmvm (L-BFGS)"), ("tr", "TrustRegion (L-SR1)")):
        m = report[f"memory_{kind}"]
        print(f"{name}: {args.parameters} parameters, {m['local_entries']} on this rank, {args.memory} pairs: "
              f"pairs {m['pair_bytes'] / mib:.1f} MiB, resident increase {m['rss_increase'] / mib:.1f} MiB "
              f"({m['rss_built'] / mib:.1f} MiB of it once built, before iterating)")
    s = report["speed"]
    print(f"speed: {args.points} points, {s['parameters']} parameters: {s['gradient_seconds'] * 1e3:.1f} ms per "
          f"gradient, {s['tao_seconds_per_gradient'] * 1e3:.1f} ms per gradient inside TAO lmvm")
    serial = out / "shared_comm_n1.json"
    if size > 1 and serial.exists():
        one = json.loads(serial.read_text())
        for kind in ("tao", "tr"):
            a, b = one[f"memory_{kind}"], report[f"memory_{kind}"]
            print(f"{kind}: per-rank memory -n 1 / -n {size}: pairs {a['pair_bytes'] / b['pair_bytes']:.2f}x, "
                  f"resident increase {a['rss_increase'] / b['rss_increase']:.2f}x")
        print(f"speed-up -n 1 / -n {size}: gradient {one['speed']['gradient_seconds'] / s['gradient_seconds']:.2f}x, "
              f"TAO lmvm {one['speed']['tao_seconds_per_gradient'] / s['tao_seconds_per_gradient']:.2f}x")
    return report


if __name__ == "__main__":
    main(sys.argv)
