"""RMTR against single-level TR, TAO lmvm (L-BFGS) and Adam on residual networks.

    python benchmarks/bench_rmtr.py --problem digits --out out/bench_rmtr
    python benchmarks/bench_rmtr.py --problem regression --out out/bench_rmtr
    python benchmarks/bench_rmtr.py --problem node --out out/bench_rmtr

``node`` is the regression with a pnode neural ODE (:class:`EulerNeuralODE`: per-step
weights, PETSc TS forward Euler, gradients by TSAdjoint) whose levels are step counts
(:class:`StepCountHierarchy`). Every method starts from the same fine-level parameters and sees the whole training set
(deterministic full-batch losses, so that every method's curve is one function). The
cost axis is effective fine-level gradient evaluations (a coarse level's evaluation
weighs its parameter count over the finest level's) and wall time, both measured in this
one process. The figure of merit is the cost RMTR needs to reach single-level TR's final
training loss, against TR's own cost for it: the ratios are printed and written, with
the curves, to OUT/<problem>.json and OUT/<problem>.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import pnode  # noqa: E402
from pnode.solvers import (RMTR, DepthHierarchy, EulerNeuralODE, Objective, RMTRSettings,  # noqa: E402
                           ResidualNetwork, StepCountHierarchy, TaoSolver, TrustRegion, mlp_resnet)

DT = torch.float64
SELF = MPI.COMM_SELF
# per problem: the fine network has (coarse_blocks - 1) 2^(levels - 1) + 1 blocks (33, 17);
# RMTR's cycles are chosen so that its effective gradient evaluations exceed TR's budget
DEFAULTS = {"digits": {"levels": 4, "coarse_blocks": 5, "width": 16, "tr_iterations": 200, "cycles": 70},
            "regression": {"levels": 4, "coarse_blocks": 3, "width": 8, "tr_iterations": 300, "cycles": 100},
            "node": {"levels": 4, "coarse_blocks": 3, "width": 8, "tr_iterations": 300, "cycles": 100}}


def digits_problem(levels: int, coarse_blocks: int, width: int, weight_decay: float = 1e-3):
    """The example's network and loss (cross entropy plus its L2 penalty) on the whole
    training set (the split of the table in docs/benchmarks.md: 1438 training images, no
    validation set, pixels in [0, 1])."""
    from rmtr_digits import digits_data, penalty

    (xtr, ytr), _, (xte, yte) = digits_data(val_fraction=0.0, standardise=False)
    torch.manual_seed(0)
    models = mlp_resnet(64, width, 10, coarse_blocks, levels, horizon=2.0)

    def loss(model):
        return torch.nn.functional.cross_entropy(model(xtr), ytr) + penalty(model, weight_decay)

    def accuracy(model):
        with torch.no_grad():
            return float((model(xte).argmax(1) == yte).double().mean())
    return models, loss, accuracy


def regression_problem(levels: int, coarse_blocks: int, width: int, network=ResidualNetwork):
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(512, 2, generator=g, dtype=DT) - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) + 0.5 * x[:, :1] * x[:, 1:]
    torch.manual_seed(0)
    models = mlp_resnet(2, width, 1, coarse_blocks, levels, horizon=2.0, network=network)

    def loss(model):
        return 0.5 * ((model(x) - y) ** 2).mean()
    return models, loss, None


class Curve:
    """(effective gradient evaluations, seconds, loss) after each iteration of one method."""

    def __init__(self, name: str):
        self.name, self.rows, self._t0 = name, [], time.perf_counter()

    def add(self, gradients: float, loss: float) -> None:
        self.rows.append((float(gradients), time.perf_counter() - self._t0, float(loss)))

    def reach(self, target: float) -> tuple[float, float] | None:
        """Cost (gradients, seconds) at the first point at or below ``target``."""
        for g, s, f in self.rows:
            if f <= target:
                return g, s
        return None


def hierarchy_of(models, restriction: str = "injection"):
    kind = StepCountHierarchy if isinstance(models[0], EulerNeuralODE) else DepthHierarchy
    return kind(models, comm=SELF, restriction=restriction)


def rmtr_of(models, args):
    """The hierarchy of ``models`` and RMTR on it, with the run's settings."""
    H = hierarchy_of(models, args.restriction)
    return H, RMTR(H, rmtr=RMTRSettings(cycle=args.cycle, pre_smoothing=args.pre_smoothing), memory=args.memory)


def run_rmtr(models, loss, cycles: int, args, nested: int = 0) -> Curve:
    """RMTR from the fine parameters, or (``nested`` > 0) after a nested iteration of
    ``nested`` cycles per coarse level (its cost is the curve's first point)."""
    H, opt = rmtr_of(models, args)
    name = f"RMTR ({args.cycle}, {len(models)} levels)" + (f" + nested iteration ({nested})" if nested else "")
    curve = Curve(name)
    first = opt.nested_iteration(loss, nested) if nested else opt.prepare(loss)
    curve.add(opt.gradient_evaluations, first)
    for _ in range(cycles):
        f = opt.step(loss)
        curve.add(opt.gradient_evaluations, f)
    opt.destroy()
    H.destroy()
    return curve


def run_tr(model, loss, iterations: int, memory: int, curve: Curve | None = None, spent: float = 0.0) -> Curve:
    """Single-level TR from ``model``; ``curve`` and ``spent`` (gradients) carry on the
    curve of what ran before it."""
    opt = TrustRegion(model, comm=SELF, memory=memory)
    curve = Curve("TR (L-SR1, one level)") if curve is None else curve

    def closure():
        return loss(model)
    for _ in range(iterations):
        f = opt.step(closure)
        if not curve.rows:
            curve.add(1, opt.history["loss"][0])
        curve.add(spent + opt.evaluator.gradients, f)
    opt.destroy()
    return curve


def run_nested_tr(models, loss, iterations: int, args) -> Curve:
    """RMTR's nested iteration (``args.nested`` cycles per coarse level), then single-level
    TR on the finest level: what the multilevel start alone gives."""
    H, opt = rmtr_of(models, args)
    curve = Curve(f"nested iteration ({args.nested}) + TR")
    first = opt.nested_iteration(loss, args.nested)
    spent = opt.gradient_evaluations
    curve.add(spent, first)
    opt.destroy()
    H.destroy()
    return run_tr(models[-1], loss, iterations, args.memory, curve, spent)


def smooth_in_depth(models) -> None:
    """Set the finer levels to the prolongation of the coarsest level's random weights."""
    H = hierarchy_of(models)
    H.prolong_models()
    H.destroy()


def run_tao(model, loss, iterations: int) -> Curve:
    solver = TaoSolver(model, Objective(lambda: loss(model)), tao_type="lmvm", lmvm="bfgs",
                       comm=SELF, progress=False,
                       options={"tao_gatol": 0, "tao_grtol": 0, "tao_gttol": 0})
    solver.solve(max_it=iterations)
    curve = Curve("TAO lmvm (L-BFGS)")
    h = solver.history
    curve.rows = [(g, s - h["seconds"][0], f) for g, s, f in zip(h["gradients"], h["seconds"], h["loss"])]
    solver.destroy()
    return curve


def run_adam(model, loss, iterations: int, lr: float) -> Curve:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    curve = Curve(f"Adam (lr {lr:g})")
    for it in range(iterations):
        opt.zero_grad()
        f = loss(model)
        f.backward()
        if it == 0:
            curve.add(1, float(f.detach()))
        opt.step()
        if it:
            curve.add(it + 1, float(f.detach()))
    return curve


def plot(path: Path, curves: list[Curve], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for c in curves:
        g, s, f = zip(*c.rows)
        ax[0].semilogy(g, f, label=c.name)
        ax[1].semilogy(s, f, label=c.name)
    ax[0].set(xlabel="effective fine-level gradient evaluations", ylabel="training loss", title=title)
    ax[1].set(xlabel="wall time (s)", ylabel="training loss", title=title)
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", choices=tuple(DEFAULTS), default="digits")
    for name in ("levels", "coarse-blocks", "width", "tr-iterations", "cycles"):
        p.add_argument(f"--{name}", type=int, default=None, help="default: the problem's in DEFAULTS")
    p.add_argument("--cycle", choices=("V", "W"), default="V")
    p.add_argument("--pre-smoothing", type=int, default=1)
    p.add_argument("--restriction", choices=("injection", "full_weighting"), default="injection")
    p.add_argument("--memory", type=int, default=10, help="L-SR1 pairs (RMTR and TR)")
    p.add_argument("--nested", type=int, default=10, help="cycles per coarse level of the nested-iteration run")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--init", choices=("random", "smooth"), default="random",
                   help="smooth: the finer levels start as the prolongation of the coarsest level's random weights")
    p.add_argument("--methods", default="rmtr,nested,tr,tao,adam",
                   help="comma-separated, of rmtr, nested, tr (needed), tao, adam, nested-tr")
    p.add_argument("--out", default="out/bench_rmtr")
    args, petsc_args = p.parse_known_args(argv[1:])
    for name, value in DEFAULTS[args.problem].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    methods = args.methods.split(",")
    if "tr" not in methods:
        p.error("--methods needs tr (its final loss is the target)")
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make = {"digits": digits_problem, "regression": regression_problem,
            "node": lambda *a: regression_problem(*a, network=EulerNeuralODE)}[args.problem]
    models, loss, accuracy = make(args.levels, args.coarse_blocks, args.width)
    if args.init == "smooth":
        smooth_in_depth(models)
    fine0 = copy.deepcopy(models[-1])
    curves, accuracies = [], {}
    for name, run in (("rmtr", lambda m: run_rmtr(models, loss, args.cycles, args)),
                      ("nested", lambda m: run_rmtr(models, loss, args.cycles, args, args.nested)),
                      ("tr", lambda m: run_tr(m, loss, args.tr_iterations, args.memory)),
                      ("tao", lambda m: run_tao(m, loss, args.tr_iterations)),
                      ("adam", lambda m: run_adam(m, loss, args.tr_iterations, args.lr)),
                      ("nested-tr", lambda m: run_nested_tr(models, loss, args.tr_iterations, args))):
        if name not in methods:
            continue
        if name in ("rmtr", "nested", "nested-tr"):
            models[-1].load_state_dict(fine0.state_dict())
            model = models[-1]
        else:
            model = copy.deepcopy(fine0)
        curves.append(run(model))
        if accuracy is not None:
            accuracies[curves[-1].name] = accuracy(model)
    tr = next(c for c in curves if c.name.startswith("TR"))
    target, budget = tr.rows[-1][2], tr.rows[-1][0]
    report = {"problem": args.problem, "blocks": len(models[-1].blocks), "levels": args.levels, "init": args.init,
              "parameters": sum(p.numel() for p in fine0.parameters()), "tr_final_loss": target,
              "tr_cost": tr.rows[-1][:2], "methods": {}}
    for c in curves:
        reached = c.reach(target)
        report["methods"][c.name] = {
            "final_loss": c.rows[-1][2], "final_cost": c.rows[-1][:2], "reaches_tr_loss_at": reached,
            "loss_at_tr_budget": [f for g, _, f in c.rows if g <= budget][-1] if c.rows[0][0] <= budget else None,
            "gradient_ratio": budget / reached[0] if reached else None,
            "time_ratio": tr.rows[-1][1] / reached[1] if reached else None,
            "test_accuracy": accuracies.get(c.name)}
    report["curves"] = {c.name: c.rows for c in curves}
    (out / f"{args.problem}.json").write_text(json.dumps(report, indent=1))
    plot(out / f"{args.problem}.png", curves, f"{args.problem}: {report['blocks']} blocks, {args.levels} levels")
    print(f"{args.problem}: {report['blocks']} residual blocks, {report['parameters']} parameters; "
          f"TR's final loss {target:.4e} after {tr.rows[-1][0]:.0f} gradients, {tr.rows[-1][1]:.1f} s")
    print("| method | final loss | gradients | seconds | loss at TR's budget | reaches TR's loss at (gradients, s) "
          "| test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, m in report["methods"].items():
        at = "no" if m["reaches_tr_loss_at"] is None else "%.0f, %.1f" % tuple(m["reaches_tr_loss_at"])
        acc = "" if m["test_accuracy"] is None else f"{100 * m['test_accuracy']:.1f}%"
        at_budget = "" if m["loss_at_tr_budget"] is None else f"{m['loss_at_tr_budget']:.3e}"
        print(f"| {name} | {m['final_loss']:.3e} | {m['final_cost'][0]:.0f} | {m['final_cost'][1]:.1f} | {at_budget} "
              f"| {at} | {acc} |")
    for c in curves:
        if c is tr or not ("RMTR" in c.name or "nested" in c.name):
            continue
        m = report["methods"][c.name]
        ratios = ("not reached" if m["gradient_ratio"] is None else
                  f"{m['gradient_ratio']:.2f}x fewer gradient evaluations, {m['time_ratio']:.2f}x less wall time")
        at_budget = "past it before its first cycle" if m["loss_at_tr_budget"] is None else f"{m['loss_at_tr_budget']:.4e}"
        print(f"{c.name} vs TR to TR's final loss: {ratios}; its loss at TR's budget: {at_budget}")
    return report


if __name__ == "__main__":
    main(sys.argv)
