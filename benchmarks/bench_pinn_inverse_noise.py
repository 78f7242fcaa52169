"""Inverse Burgers: the error in the recovered viscosity against the noise of the observations.

    python benchmarks/bench_pinn_inverse_noise.py [--noise 0 0.005 0.01 0.02 0.05] [--adam 300]
        [--iterations 150] [--out out/bench_pinn_inverse_noise] [--docs]

Runs ``examples/pinn_burgers_inverse.py`` once per noise level (one process each, one after
the other; the same network, seed, PDE points and observation nodes, only the noise
amplitude changes), reads each run's ``inverse.npz``, prints a table (noise, nu found,
relative error in nu, field error, wall seconds) and plots the error in nu and in the field
against the noise into ``--out/pinn_burgers_inverse_noise.png`` (and ``docs/img`` with
``--docs``). ``--reuse`` skips the levels already run in ``--out``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from figures import save_figure

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05])
    p.add_argument("--adam", type=int, default=300)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--out", default=str(HERE.parent / "out" / "bench_pinn_inverse_noise"))
    p.add_argument("--docs", action="store_true", help="also copy the figure to docs/img")
    p.add_argument("--reuse", action="store_true", help="skip the levels whose run in --out has its inverse.npz")
    args = p.parse_args()
    out = Path(args.out)
    rows = []
    for noise in args.noise:
        run_dir = out / f"noise_{noise:g}"
        cmd = [sys.executable, str(HERE.parent / "examples" / "pinn_burgers_inverse.py"), "--out", str(run_dir),
               "--noise", str(noise), "--adam", str(args.adam), "--iterations", str(args.iterations),
               "--no-progress"]
        if not (args.reuse and (run_dir / "inverse.npz").exists()):
            print("$", " ".join(cmd[1:]), flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            print(done.stdout.strip().splitlines()[-1], flush=True)
        rows.append({k: float(v) for k, v in np.load(run_dir / "inverse.npz").items()})
    print("| noise | nu found (true 3.183099e-3) | relative error in nu | field rel. L2 | wall (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {100 * r['noise']:g}% | {r['nu']:.6e} | {100 * r['nu_error']:.3f}% | {r['field_error']:.1e} | "
              f"{r['seconds']:.0f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    noise = [100 * r["noise"] for r in rows]
    ax.plot(noise, [100 * r["nu_error"] for r in rows], "o-", label="relative error in nu (%)")
    ax.plot(noise, [100 * r["field_error"] for r in rows], "s--", label="field relative L2 (%)")
    ax.plot(noise, noise, "k:", lw=0.8, label="noise level (%)")
    ax.set(xlabel="noise (% of the solution's standard deviation)", ylabel="%",
           title="inverse Burgers: 2000 observations, nu unknown")
    ax.legend()
    save_figure(fig, out, "pinn_burgers_inverse_noise.png", args.docs)


if __name__ == "__main__":
    main()
