"""Every benchmark of docs/benchmarks.md with its documented command, one after another.

    python benchmarks/run_all.py [--out out/bench] [--mpiexec mpiexec]

About 20 minutes on 2 idle cores (`make bench`: 12.5 min measured before bench_rmtr.py,
which adds about 3.5 min with its neural-ODE problem, and bench_second_order.py and
bench_shared_comm.py, about 4 min together, then bench_stiff.py and bench_stiff_node.py (diffrax
where the stiff-bench extra is installed); bench_rmtr needs scikit-learn, the `bench` extra). Prints each
benchmark's output and wall time; the exit status is non-zero if one fails (the others
still run). Run on an idle machine: the benchmarks time themselves.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commands(out: str, mpiexec: str) -> list[list[str]]:
    py = sys.executable
    return [
        [py, "bench_torchdiffeq.py", "--out", out],
        [py, "bench_alternated.py"],
        [py, "bench_alternated.py", "--checkpoint", "solution"],
        [py, "bench_alternated.py", "--case", "large", "--against", "backprop-classic"],
        [py, "bench_alternated.py", "--case", "large", "--checkpoint", "solution", "--against", "adjoint"],
        [py, "bench_schedule.py"],
        [py, "bench_blas_threads.py", "--procs", "1"],
        [py, "bench_blas_threads.py"],
        [mpiexec, "-n", "1", py, "bench_scaling.py"],
        [mpiexec, "-n", "2", py, "bench_scaling.py"],
        [py, "bench_stiff_imex.py"],
        [py, "bench_stiff.py"],
        [py, "bench_stiff_node.py"],
        [py, "bench_rmtr.py", "--problem", "digits", "--out", out],
        [py, "bench_rmtr.py", "--problem", "regression", "--out", out],
        [py, "bench_rmtr.py", "--problem", "node", "--out", out],
        [py, "bench_second_order.py", "--out", out],
        [mpiexec, "-n", "1", py, "bench_shared_comm.py", "--out", out],
        [mpiexec, "-n", "2", py, "bench_shared_comm.py", "--out", out],
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE.parent / "out" / "bench"))
    p.add_argument("--mpiexec", default="mpiexec")
    args = p.parse_args()
    failed = []
    for cmd in commands(str(Path(args.out).resolve()), args.mpiexec):
        line = " ".join(Path(c).name if c == sys.executable else c for c in cmd)
        print(f"\n$ {line}", flush=True)
        tic = time.perf_counter()
        if subprocess.run(cmd, cwd=HERE).returncode:
            failed.append(line)
        print(f"({time.perf_counter() - tic:.0f} s)", flush=True)
    if failed:
        sys.exit("failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
