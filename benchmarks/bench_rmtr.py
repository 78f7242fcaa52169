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

``--hybrid B`` runs RMTR, TR and their nested-iteration variants in the hybrid mode
instead: each step sees a mini-batch of the training set (``HybridBatches``, from ``B``
samples, growing by ``BatchGrowth``'s defaults to the whole set), a gradient on ``b``
samples counts as ``b / n`` of a full one, and the curves hold the full training loss
after each step (evaluated outside the timed run):

    python benchmarks/bench_rmtr.py --problem digits --hybrid 180 --methods rmtr,nested,tr,nested-tr
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
from typing import Callable

import torch
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import pnode  # noqa: E402
from pnode.solvers import (RMTR, BatchGrowth, DepthHierarchy, EulerNeuralODE, HybridBatches,  # noqa: E402
                           Objective, RMTRSettings, ResidualNetwork, StepCountHierarchy, TaoSolver, TrustRegion,
                           mlp_resnet)

DT = torch.float64
SELF = MPI.COMM_SELF
# per problem: the fine network has (coarse_blocks - 1) 2^(levels - 1) + 1 blocks (33, 17);
# RMTR's cycles are chosen so that its effective gradient evaluations exceed TR's budget
DEFAULTS = {"digits": {"levels": 4, "coarse_blocks": 5, "width": 16, "tr_iterations": 200, "cycles": 70},
            "regression": {"levels": 4, "coarse_blocks": 3, "width": 8, "tr_iterations": 300, "cycles": 100},
            "node": {"levels": 4, "coarse_blocks": 3, "width": 8, "tr_iterations": 300, "cycles": 100}}


def digits_problem(levels: int, coarse_blocks: int, width: int, weight_decay: float = 1e-3):
    """The example's network and loss (cross entropy plus its L2 penalty) on the whole
    training set (the split of the table in docs/benchmarks.md: 1437 training images, no
    validation set, pixels in [0, 1]); ``loss(model, idx)`` is the loss on the samples
    ``idx`` only (the penalty in full)."""
    from rmtr_digits import digits_data, penalty

    (xtr, ytr), _, (xte, yte) = digits_data(val_fraction=0.0, standardise=False)
    torch.manual_seed(0)
    models = mlp_resnet(64, width, 10, coarse_blocks, levels, horizon=2.0)

    def loss(model, idx=None):
        x, y = (xtr, ytr) if idx is None else (xtr[idx], ytr[idx])
        return torch.nn.functional.cross_entropy(model(x), y) + penalty(model, weight_decay)

    def accuracy(model):
        with torch.no_grad():
            return float((model(xte).argmax(1) == yte).double().mean())
    return models, loss, len(ytr), accuracy


def regression_problem(levels: int, coarse_blocks: int, width: int, network=ResidualNetwork, samples: int = 512):
    """``samples`` random points of the smooth 2-D function, the mean-square loss."""
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.rand(samples, 2, generator=g, dtype=DT) - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) + 0.5 * x[:, :1] * x[:, 1:]
    torch.manual_seed(0)
    models = mlp_resnet(2, width, 1, coarse_blocks, levels, horizon=2.0, network=network)

    def loss(model, idx=None):
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
        return 0.5 * ((model(xs) - ys) ** 2).mean()
    return models, loss, len(y), None


class Data:
    """The losses a method sees: the full-batch ``loss`` itself (``initial`` = None), or
    the hybrid mode's mini-batches of ``n`` samples, growing from ``initial`` by
    :class:`BatchGrowth`'s defaults (doubling after 3 steps without a 1% decrease) to the
    whole set, where ``loss`` itself comes back again (so a solver reuses its evaluation)."""

    def __init__(self, loss, n: int, initial: int | None):
        self.loss, self.n = loss, n
        self.batches = None if initial is None else HybridBatches(n, BatchGrowth(min(initial, n), n), SELF)

    @property
    def full(self) -> bool:
        return self.batches is None or self.batches.growth.full

    @property
    def weight(self) -> float:
        """The next batch's size over ``n``: what one of its gradients counts in full ones."""
        return 1.0 if self.full else self.batches.growth.size / self.n

    def next(self):
        """The next closure ``closure(model)`` and its :attr:`weight`."""
        if self.full:
            return self.loss, 1.0
        weight = self.weight
        idx, _ = self.batches.next()
        return (lambda model: self.loss(model, idx)), weight

    def record(self, loss: float) -> None:
        if self.batches is not None:
            self.batches.record(loss)

    @property
    def steps_before_full(self) -> int | None:
        """Steps taken on mini-batches (None: full batch throughout, or never reached)."""
        if self.batches is None or not self.full:
            return None
        return self.batches.growth.sizes.index(self.n)


class Curve:
    """(effective gradient evaluations, seconds, full training loss) after each iteration
    of one method; the time spent evaluating a mini-batch method's full loss for the
    curve is left out of its seconds. ``spent`` is the gradients charged so far."""

    def __init__(self, name: str, data: Data | None = None):
        self.name, self.data, self.rows, self._t0 = name, data, [], time.perf_counter()
        self.spent = 0.0

    def add(self, gradients: float, loss: float | None, model: torch.nn.Module | None = None) -> None:
        """Add a point; ``loss`` is the method's loss on the batch it stepped on (None:
        evaluate ``model``'s)."""
        now = time.perf_counter()
        if loss is None or not (self.data is None or self.data.full):
            with torch.no_grad():
                loss = float(self.data.loss(model))
            self._t0 += time.perf_counter() - now
        self.rows.append((float(gradients), now - self._t0, float(loss)))

    def step(self, run: Callable, count: Callable[[], float], model: torch.nn.Module) -> float:
        """``run(closure)`` on :attr:`data`'s next closure: charge the gradient evaluations
        it adds to ``count()``, weighted by the batch, add the point and record the loss."""
        closure, weight = self.data.next()
        before = count()
        f = run(closure)
        self.spent += weight * (count() - before)
        self.add(self.spent, f, model)
        self.data.record(f)
        return f

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


def run_rmtr(models, data: Data, cycles: int, args, nested: int = 0) -> Curve:
    """RMTR from the fine parameters, or (``nested`` > 0) after a nested iteration of
    ``nested`` cycles per coarse level on the first batch (its cost is the curve's first
    point)."""
    H, opt = rmtr_of(models, args)
    name = f"RMTR ({args.cycle}, {len(models)} levels)" + (f" + nested iteration ({nested})" if nested else "")
    curve = Curve(name, data)

    def count():
        return opt.gradient_evaluations
    curve.step((lambda c: opt.nested_iteration(c, nested)) if nested else opt.prepare, count, models[-1])
    for _ in range(cycles):
        curve.step(opt.step, count, models[-1])
    opt.destroy()
    H.destroy()
    return curve


def run_tr(model, data: Data, iterations: int, memory: int, curve: Curve | None = None,
           name: str = "TR (L-SR1, one level)") -> Curve:
    """Single-level TR from ``model``; ``curve`` carries on the curve (and the gradients
    spent) of what ran before it."""
    opt = TrustRegion(model, comm=SELF, memory=memory)
    if curve is None:
        curve = Curve(name, data)
        curve.add(data.weight, None, model)  # the start, charged TR's first evaluation
    last: list = [None, None]  # the closure of the last batch, and TR's closure of it (the same at full batch)

    def run(closure):
        if closure is not last[0]:
            last[:] = [closure, lambda: closure(model)]
        return opt.step(last[1])

    def count():
        return 0 if opt.evaluator is None else opt.evaluator.gradients
    for _ in range(iterations):
        curve.step(run, count, model)
    opt.destroy()
    return curve


def run_nested_tr(models, data: Data, iterations: int, args) -> Curve:
    """RMTR's nested iteration (``args.nested`` cycles per coarse level), then single-level
    TR on the finest level: what the multilevel start alone gives."""
    H, opt = rmtr_of(models, args)
    curve = Curve(f"nested iteration ({args.nested}) + TR", data)
    curve.step(lambda c: opt.nested_iteration(c, args.nested), lambda: opt.gradient_evaluations, models[-1])
    opt.destroy()
    H.destroy()
    return run_tr(models[-1], data, iterations, args.memory, curve)


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
    p.add_argument("--samples", type=int, default=512, help="regression and node: training points")
    p.add_argument("--hybrid", type=int, default=None, metavar="B",
                   help="hybrid mode for rmtr, nested, tr, nested-tr: mini-batches from B samples, growing")
    p.add_argument("--out", default="out/bench_rmtr")
    args, petsc_args = p.parse_known_args(argv[1:])
    for name, value in DEFAULTS[args.problem].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    methods = args.methods.split(",")
    if "tr" not in methods:
        p.error("--methods needs tr (its final loss is the target)")
    if args.hybrid is not None and {"tao", "adam"} & set(methods):
        p.error("--hybrid is for rmtr, nested, tr and nested-tr")
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make = {"digits": digits_problem,
            "regression": lambda *a: regression_problem(*a, samples=args.samples),
            "node": lambda *a: regression_problem(*a, network=EulerNeuralODE, samples=args.samples)}[args.problem]
    models, loss, n, accuracy = make(args.levels, args.coarse_blocks, args.width)
    if args.init == "smooth":
        smooth_in_depth(models)
    fine0 = copy.deepcopy(models[-1])
    curves, accuracies = [], {}
    if args.hybrid is not None:  # the full-batch TR too: the reference is the TR that ends lower
        methods.append("tr-full")

    def data():
        return Data(loss, n, args.hybrid)
    for name, run in (("rmtr", lambda m: run_rmtr(models, data(), args.cycles, args)),
                      ("nested", lambda m: run_rmtr(models, data(), args.cycles, args, args.nested)),
                      ("tr", lambda m: run_tr(m, data(), args.tr_iterations, args.memory,
                                              name="TR (L-SR1, one level" + (", hybrid)" if args.hybrid else ")"))),
                      ("tr-full", lambda m: run_tr(m, Data(loss, n, None), args.tr_iterations, args.memory,
                                                   name="TR (L-SR1, one level, full batch)")),
                      ("tao", lambda m: run_tao(m, loss, args.tr_iterations)),
                      ("adam", lambda m: run_adam(m, loss, args.tr_iterations, args.lr)),
                      ("nested-tr", lambda m: run_nested_tr(models, data(), args.tr_iterations, args))):
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
    tr = min((c for c in curves if c.name.startswith("TR")), key=lambda c: c.rows[-1][2])
    target, budget = tr.rows[-1][2], tr.rows[-1][0]
    report = {"problem": args.problem, "blocks": len(models[-1].blocks), "levels": args.levels, "init": args.init,
              "hybrid": args.hybrid, "samples": n,
              "parameters": sum(p.numel() for p in fine0.parameters()), "tr_final_loss": target,
              "tr_cost": tr.rows[-1][:2], "reference": tr.name, "methods": {}}
    for c in curves:
        reached = c.reach(target)
        report["methods"][c.name] = {
            "final_loss": c.rows[-1][2], "final_cost": c.rows[-1][:2], "reaches_tr_loss_at": reached,
            "loss_at_tr_budget": [f for g, _, f in c.rows if g <= budget][-1] if c.rows[0][0] <= budget else None,
            "gradient_ratio": budget / reached[0] if reached else None,
            "time_ratio": tr.rows[-1][1] / reached[1] if reached else None,
            "test_accuracy": accuracies.get(c.name), "steps_before_full_batch": c.data and c.data.steps_before_full}
    report["curves"] = {c.name: c.rows for c in curves}
    (out / f"{args.problem}.json").write_text(json.dumps(report, indent=1))
    plot(out / f"{args.problem}.png", curves, f"{args.problem}: {report['blocks']} blocks, {args.levels} levels")
    print(f"{args.problem}: {report['blocks']} residual blocks, {report['parameters']} parameters; "
          f"{tr.name}'s final loss {target:.4e} after {tr.rows[-1][0]:.0f} gradients, {tr.rows[-1][1]:.1f} s")
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
