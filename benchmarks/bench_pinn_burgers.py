"""Burgers PINN: relative L2 error against wall time for Adam, L-BFGS, TAO quasi-Newton and
Levenberg-Marquardt, from the same network, points and Adam warm-up.

    python benchmarks/bench_pinn_burgers.py [--minutes 4] [--out out/bench_pinn_burgers]

Runs ``examples/pinn_burgers.py`` once per optimiser (one process each, one after the
other, ``--minutes`` of wall time each including the warm-up), reads each run's
``trace.npz`` and plots the error against wall time into ``--out/pinn_burgers_optimisers.png``
(and ``docs/img`` with ``--docs``). Prints the last and the best error of each.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from figures import save_figure

HERE = Path(__file__).resolve().parent
RUNS = {
    "Adam": ["--optimiser", "adam"],
    "L-BFGS (torch)": ["--optimiser", "lbfgs"],
    "TAO lmvm (BFGS)": ["--optimiser", "tao:lmvm", "--lmvm", "bfgs"],
    "Levenberg-Marquardt": ["--optimiser", "lm"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--adam", type=int, default=300)
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--out", default=str(HERE.parent / "out" / "bench_pinn_burgers"))
    p.add_argument("--docs", action="store_true", help="also copy the figure to docs/img")
    args = p.parse_args()
    out = Path(args.out)
    traces = {}
    for name, extra in RUNS.items():
        run_dir = out / name.split()[0].lower().replace("-", "")
        cmd = [sys.executable, str(HERE.parent / "examples" / "pinn_burgers.py"), "--out", str(run_dir),
               "--minutes", str(args.minutes), "--adam", str(args.adam), "--points", str(args.points),
               "--iterations", "1000000", "--score-every", "25", "--no-progress", *extra]
        print("$", " ".join(cmd[1:]), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:], flush=True)
        traces[name] = dict(np.load(run_dir / "trace.npz"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    print("| optimiser (after Adam warm-up) | iterations | last rel. L2 | best rel. L2 |")
    print("|---|---|---|---|")
    for name, tr in traces.items():
        ax.semilogy(tr["seconds"], tr["error"], label=name)
        print(f"| {name} | {int(tr['iteration'][-1])} | {tr['error'][-1]:.2e} | {tr['error'].min():.2e} |")
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlabel="wall seconds (one process, shared machine)", ylabel="relative L2 error vs Cole-Hopf",
           title=f"Burgers PINN, {args.points} points, {args.adam} Adam warm-up")
    ax.legend()
    save_figure(fig, out, "pinn_burgers_optimisers.png", args.docs)


if __name__ == "__main__":
    main()
