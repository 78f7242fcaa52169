"""PETSc's BLAS on one thread per process (pnode's default) against one per core (a
threaded OpenBLAS left alone), with several processes sharing the machine.

    python benchmarks/bench_blas_threads.py [--procs 2] [--batches 2] [--gradients 3]

Each process takes gradients through the large model of ``bench_torchdiffeq.py`` (MLP
64-512-64, batch 256, 200 rk4 steps, float64, one torch thread, ``Checkpoint("all")``):
``--procs`` independent processes at once, as in a parameter sweep. Batches of them run
with ``-blas_num_threads 1`` and ``-blas_num_threads <cores>`` in turn (``--batches``
times each). Prints the median seconds per backward pass over all processes of a setting,
the slowest process's median, and the median kernel time per backward pass (a waiting
BLAS thread spins in ``sched_yield``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def worker(threads: int, gradients: int) -> None:
    """One process: seconds and kernel seconds of each backward pass, as JSON."""
    import pnode
    from bench_torchdiffeq import problem, solver

    pnode.init(["worker", "-blas_num_threads", str(threads)])
    f, y0, t, params = problem("large")
    run = solver("pnode-all", f, y0, t)
    seconds, kernel = [], []
    for i in range(1 + gradients):
        loss = run()[-1].pow(2).sum()
        sys0, tic = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
        torch.autograd.grad(loss, params)
        if i >= 1:
            seconds.append(time.perf_counter() - tic)
            kernel.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0)
    print(json.dumps({"seconds": seconds, "kernel": kernel}))


def batch(threads: int, procs: int, gradients: int) -> list[dict]:
    """``procs`` workers at once with ``threads`` BLAS threads each."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import bench_blas_threads as b; b.worker({threads}, {gradients})")
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            for _ in range(procs)]
    out = []
    for run in runs:
        text, _ = run.communicate()
        if run.returncode:
            raise RuntimeError(f"worker failed with exit code {run.returncode}")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--gradients", type=int, default=3)
    args = p.parse_args()
    settings = (1, os.cpu_count())
    results: dict[int, list[dict]] = {n: [] for n in settings}
    for _ in range(args.batches):
        for n in settings:
            results[n] += batch(n, args.procs, args.gradients)
    print(f"{args.procs} processes at once on {os.cpu_count()} cores, large model, backward pass:")
    for n, runs in results.items():
        every = [s for r in runs for s in r["seconds"]]
        worst = max(statistics.median(r["seconds"]) for r in runs)
        kernel = statistics.median(k for r in runs for k in r["kernel"])
        print(f"  -blas_num_threads {n}: median {statistics.median(every):.2f} s, slowest process "
              f"{worst:.2f} s, kernel time {kernel:.2f} s")


if __name__ == "__main__":
    main()
