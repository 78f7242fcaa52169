"""RMTR against single-level TR as the residual network deepens: bench_rmtr.py's problem
at several depths (--levels, each adding a level doubles the blocks) and two starts
(--inits): ``random`` (every block drawn on its own) and ``smooth`` (the fine network is
the prolongation of the coarsest level's random blocks, so its weights are piecewise
linear in depth). Methods: RMTR, RMTR after its nested iteration, TR, and the nested
iteration followed by TR. Prints the ratios (TR's cost to its final loss over each
method's cost to reach it) and writes OUT/depth_<problem>.json and .png.

    python benchmarks/bench_rmtr_depth.py --problem regression --levels 4,5,6,7,8 --out out/bench_rmtr_depth
    python benchmarks/bench_rmtr_depth.py --problem digits --levels 4,5,6,7 --out out/bench_rmtr_depth
    python benchmarks/bench_rmtr_depth.py --problem digits --out out/bench_rmtr_depth --plot-only   # redraw

Other options go to bench_rmtr.py, e.g. ``--hybrid 180`` (the hybrid mode; the ratios are
then taken against the TR, hybrid or full batch, that ends lower: "ref" in the table) or
``--samples 16384`` (regression points).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rmtr  # noqa: E402

METHODS = "rmtr,nested,tr,nested-tr"


def plot(path: Path, runs: list[dict], problem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for init in sorted({r["init"] for r in runs}):
        rows = [r for r in runs if r["init"] == init]
        for name in rows[0]["methods"]:
            if all(r["reference"] == name for r in rows):
                continue
            for axis, key in zip(ax, ("gradient_ratio", "time_ratio")):
                ratios = [r["methods"][name][key] for r in rows]
                axis.semilogx([r["blocks"] for r in rows], [math.nan if v is None else v for v in ratios],
                              "o", base=2, linestyle="-" if init == "random" else "--", label=f"{name}, {init} start")
    for axis, what, target in zip(ax, ("gradient evaluations", "wall time"), (3, 2)):
        axis.axhline(1, color="k", lw=0.8)
        axis.axhline(target, color="k", lw=0.8, ls=":", label=f"target ({target}x)")
        axis.set(xlabel="residual blocks", ylabel=f"TR's {what} / method's (gap: not reached)",
                 title=f"{problem}: to TR's final loss")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", choices=("digits", "regression", "node"), default="regression")
    p.add_argument("--levels", default="4,5,6,7,8", help="comma-separated level counts")
    p.add_argument("--inits", default="random,smooth")
    p.add_argument("--out", default="out/bench_rmtr_depth")
    p.add_argument("--plot-only", action="store_true", help="redraw OUT/depth_<problem>.png from its .json")
    args, rest = p.parse_known_args(argv[1:])
    out = Path(args.out)
    if args.plot_only:
        summary = json.loads((out / f"depth_{args.problem}.json").read_text())
        plot(out / f"depth_{args.problem}.png", summary, args.problem)
        return summary
    runs = []
    for init in args.inits.split(","):
        for levels in args.levels.split(","):
            runs.append(bench_rmtr.main([argv[0], "--problem", args.problem, "--levels", levels, "--init", init,
                                         "--methods", METHODS, "--out", str(out / f"{init}-{levels}"), *rest]))
    out.mkdir(parents=True, exist_ok=True)
    summary = [{k: r[k] for k in ("blocks", "levels", "init", "tr_final_loss", "tr_cost", "reference")}
               | {"methods": {name: {k: m[k] for k in ("final_loss", "reaches_tr_loss_at", "gradient_ratio",
                                                       "time_ratio", "test_accuracy")}
                              for name, m in r["methods"].items()}} for r in runs]
    for r in summary:  # the same names at every depth
        r["methods"] = {re.sub(r", \d+ levels", "", name): m for name, m in r["methods"].items()}
    (out / f"depth_{args.problem}.json").write_text(json.dumps(summary, indent=1))
    plot(out / f"depth_{args.problem}.png", summary, args.problem)
    names = [n for n in summary[0]["methods"] if not all(r["reference"] == n for r in summary)]
    print(f"\n{args.problem}: the reference TR's cost to its final loss over each method's cost to reach it "
          "(gradient evaluations / wall time; - : not reached; ref: the reference, the TR that ends lower)")
    print("| start | blocks (levels) | TR's final loss | " + " | ".join(names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for r in summary:
        cells = ["ref" if n == r["reference"] else "-" if (m := r["methods"][n])["gradient_ratio"] is None
                 else f"{m['gradient_ratio']:.2f} / {m['time_ratio']:.2f}" for n in names]
        print(f"| {r['init']} | {r['blocks']} ({r['levels']}) | {r['tr_final_loss']:.3e} | " + " | ".join(cells) + " |")
    return summary


if __name__ == "__main__":
    main(sys.argv)
