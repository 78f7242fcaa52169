"""pnode vs torchdiffeq, side by side: seconds per gradient, peak memory, gradient agreement.

    python benchmarks/bench_torchdiffeq.py [--case small|large|all] [--repeats 7] [--out DIR]

Every configuration runs in a fresh subprocess. Memory: the peak resident size during the
solves, warm-up included (Linux VmHWM, reset just before them; elsewhere ``ru_maxrss``)
and its increase over the resident size after setup (imports, PETSc, model, data). All runs
are float64 on one thread with rk4 at the fixed step 0.025; the loss is ``sum(y(T)**2)``.

torchdiffeq's ``"rk4"`` is the 3/8-rule variant, pnode's (PETSc TSRK ``4``) the classic
tableau. Timings use torchdiffeq's own ``"rk4"`` (same cost: 4 evaluations a step); the
gradient agreement is measured against torchdiffeq backpropagating through the classic
tableau (``rk4_step_func``, registered here as ``"rk4-classic"``), the same discrete
scheme as pnode's. Prints markdown tables; with ``--out`` also writes them, the raw
results (JSON) and the memory-vs-budget figure (PNG) there.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

STEP = 0.025
CASES = {
    "small": dict(n=2, hidden=50, batch=20, steps=40, cubic=True),
    "large": dict(n=64, hidden=512, batch=256, steps=200, cubic=False),
}
CONFIGS = ["torchdiffeq-backprop", "torchdiffeq-adjoint", "torchdiffeq-backprop-classic",
           "pnode-all", "pnode-solution", "pnode-budget"]
TABLE_BUDGET = 8
CURVE_BUDGETS = [4, 8, 16, 32, 64, 128]


class Field(torch.nn.Module):
    """f(t, y) = MLP(y**3) (small case) or MLP(y) (large case), tanh, float64."""

    def __init__(self, n: int, hidden: int, cubic: bool):
        super().__init__()
        self.cubic = cubic
        self.net = torch.nn.Sequential(torch.nn.Linear(n, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, n)).double()

    def forward(self, t, y):
        return self.net(y ** 3 if self.cubic else y)


def _register_classic_rk4() -> None:
    """Make torchdiffeq accept method="rk4-classic" (classic RK4 tableau, fixed grid)."""
    from torchdiffeq._impl.fixed_grid import FixedGridODESolver
    from torchdiffeq._impl.misc import Perturb
    from torchdiffeq._impl.rk_common import rk4_step_func

    class ClassicRK4(FixedGridODESolver):
        order = 4

        def _step_func(self, func, t0, dt, t1, y0):
            f0 = func(t0, y0, perturb=Perturb.NEXT if self.perturb else Perturb.NONE)
            return rk4_step_func(func, t0, dt, t1, y0, f0=f0, perturb=self.perturb), f0

    sys.modules["torchdiffeq._impl.odeint"].SOLVERS["rk4-classic"] = ClassicRK4


def _status_mib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MiB."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def _reset_peak() -> None:
    """Reset the peak resident size (VmHWM) to the current one, where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib() -> float:
    """Peak resident memory since the last :func:`_reset_peak` (else since start), MiB."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def problem(case: str, steps: int | None = None, batch: int | None = None):
    """``(f, y0, t, params)`` of ``case`` (``steps`` and ``batch`` override its own), on one
    torch thread and seed 0; ``params``: ``y0`` and ``f``'s parameters."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = {**CASES[case], **({"steps": steps} if steps else {}), **({"batch": batch} if batch else {})}
    f = Field(c["n"], c["hidden"], c["cubic"])
    y0 = (0.5 * torch.randn(c["batch"], c["n"], dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([0.0, STEP * c["steps"]], dtype=torch.float64)
    return f, y0, t, [y0, *f.parameters()]


def solver(config: str, f, y0: torch.Tensor, t: torch.Tensor, budget: int = TABLE_BUDGET):
    """A callable returning the solution at ``t`` for ``config`` (one of :data:`CONFIGS`),
    rk4 at the fixed step :data:`STEP`."""
    if config.startswith("torchdiffeq"):
        import torchdiffeq

        _register_classic_rk4()
        method = "rk4-classic" if config.endswith("classic") else "rk4"
        kw = dict(method=method, options={"step_size": STEP})
        if config.endswith("adjoint"):
            kw.update(adjoint_method=method, adjoint_options={"step_size": STEP})
            return lambda: torchdiffeq.odeint_adjoint(f, y0, t, **kw)
        return lambda: torchdiffeq.odeint(f, y0, t, **kw)
    import pnode

    mode = config.split("-", 1)[1]
    ck = pnode.Checkpoint(budget=budget) if mode == "budget" else pnode.Checkpoint(mode)
    ode = pnode.NeuralODE(f, method="rk4", step_size=STEP, checkpoint=ck)
    return lambda: ode(y0, t)


def run_one(case: str, config: str, repeats: int, warmup: int = 1, steps: int | None = None,
            batch: int | None = None, budget: int = TABLE_BUDGET) -> dict:
    """Time one configuration in this process: median seconds per gradient (after
    ``warmup`` solves), peak RSS during the solves and RSS before them (MiB), and the
    gradient (y0 and parameters, flat)."""
    f, y0, t, params = problem(case, steps, batch)
    if config.startswith("pnode"):
        import pnode

        pnode.check_build(verbose=False)  # PETSc's initialisation is setup, not solve memory
    run = solver(config, f, y0, t, budget)
    base = _status_mib("VmRSS") or _peak_mib()
    _reset_peak()
    times = []
    for i in range(warmup + repeats):
        tic = time.perf_counter()
        grads = torch.autograd.grad(run()[-1].pow(2).sum(), params)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return {"seconds": statistics.median(times), "rss_mib": _peak_mib(), "base_mib": base,
            "grad": torch.cat([g.reshape(-1) for g in grads]).tolist()}


def in_subprocess(case: str, config: str, repeats: int, **kw) -> dict:
    """:func:`run_one` in a fresh interpreter (its own peak memory)."""
    code = (f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_torchdiffeq as b; "
            f"print(json.dumps(b.run_one({case!r}, {config!r}, {repeats}, **{kw!r})))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{case}/{config} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def rel(a: list[float], b: list[float]) -> float:
    """||a - b|| / ||b||."""
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((ta - tb).norm() / tb.norm())


def machine() -> str:
    """CPU model, core count, library versions."""
    import os

    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from petsc4py import PETSc
    import torchdiffeq

    petsc = ".".join(map(str, PETSc.Sys.getVersion()))
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"torchdiffeq {torchdiffeq.__version__}, PETSc {petsc}; one torch thread")


def case_table(case: str, repeats: int) -> tuple[str, dict]:
    """Markdown table of every configuration for one case."""
    c = CASES[case]
    res = {cfg: in_subprocess(case, cfg, repeats) for cfg in CONFIGS}
    td, same = res["torchdiffeq-backprop"], res["torchdiffeq-backprop-classic"]
    lines = [f"### {case}: y in R^{c['n']}, MLP({c['n']}-{c['hidden']}-{c['n']}), batch {c['batch']}, "
             f"{c['steps']} rk4 steps (pnode budget K={TABLE_BUDGET})", "",
             "| configuration | s / gradient | time / td-backprop | peak RSS MiB | increase MiB "
             "| grad rel. diff vs td classic-rk4 backprop | vs td rk4 (3/8 rule) |",
             "|---|---|---|---|---|---|---|"]
    for cfg, r in res.items():
        lines.append(f"| {cfg} | {r['seconds']:.4f} | {r['seconds'] / td['seconds']:.2f} | {r['rss_mib']:.0f} "
                     f"| {r['rss_mib'] - r['base_mib']:.0f} | {rel(r['grad'], same['grad']):.1e} "
                     f"| {rel(r['grad'], td['grad']):.1e} |")
    return "\n".join(lines), res


def budget_curve(steps: int, batch: int) -> tuple[str, dict]:
    """Memory and time against the checkpoint budget for the large model over ``steps``."""
    rows = [(cfg, 0) for cfg in ["torchdiffeq-backprop", "torchdiffeq-adjoint", "pnode-all", "pnode-solution"]]
    rows += [("pnode-budget", k) for k in CURVE_BUDGETS]
    res = {}
    for cfg, k in rows:
        name = f"{cfg} K={k}" if k else cfg
        res[name] = in_subprocess("large", cfg, 1, warmup=0, steps=steps, batch=batch, budget=max(k, 1))
        res[name]["budget"] = k
    c = CASES["large"]
    lines = [f"### memory vs budget: MLP({c['n']}-{c['hidden']}-{c['n']}), batch {batch}, {steps} rk4 steps "
             f"(one gradient, no warm-up)", "",
             "| configuration | s / gradient | peak RSS MiB | increase MiB |", "|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['rss_mib']:.0f} | {r['rss_mib'] - r['base_mib']:.0f} |")
    return "\n".join(lines), res


def plot_curve(res: dict, path: Path, steps: int, batch: int) -> None:
    """Peak-memory increase and time against K, with the fixed configurations as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["budget"] for r in res.values() if r["budget"]]
    mem = [r["rss_mib"] - r["base_mib"] for r in res.values() if r["budget"]]
    sec = [r["seconds"] for r in res.values() if r["budget"]]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(ks, mem, "o-", label="pnode budget=K")
    ax[1].plot(ks, sec, "o-", label="pnode budget=K")
    for (name, r), style in zip(((n, r) for n, r in res.items() if not r["budget"]), ["r--", "m--", "g:", "b:"]):
        ax[0].axhline(r["rss_mib"] - r["base_mib"], color=style[0], ls=style[1:], label=name)
        ax[1].axhline(r["seconds"], color=style[0], ls=style[1:], label=name)
    for a, ylabel in zip(ax, ["peak RSS increase (MiB)", "seconds per gradient"]):
        a.set(xscale="log", yscale="log", xlabel="checkpoint budget K (stored states)", ylabel=ylabel)
        a.set_xticks(ks, [str(k) for k in ks])
    ax[0].legend(fontsize=8)
    fig.suptitle(f"MLP(64-512-64), batch {batch}, {steps} rk4 steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="all", choices=["small", "large", "all", "none"])
    p.add_argument("--repeats", type=int, default=7, help="timed repeats, small case (large: a third)")
    p.add_argument("--curve-steps", type=int, default=1000, help="0 skips the memory-vs-budget curve")
    p.add_argument("--curve-batch", type=int, default=64)
    p.add_argument("--out", default=None, help="folder for tables (markdown), results (JSON), figure (PNG)")
    args = p.parse_args()
    tic = time.perf_counter()
    parts, raw = [f"Machine: {machine()}"], {}
    print(parts[0], flush=True)
    cases = [] if args.case == "none" else list(CASES) if args.case == "all" else [args.case]
    for case in cases:
        table, raw[case] = case_table(case, args.repeats if case == "small" else max(1, args.repeats // 3))
        parts.append(table)
        print("\n" + table, flush=True)
    if args.curve_steps:
        table, raw["curve"] = budget_curve(args.curve_steps, args.curve_batch)
        parts.append(table)
        print("\n" + table, flush=True)
    print(f"\ntotal benchmark time {time.perf_counter() - tic:.0f} s")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "torchdiffeq.md").write_text("\n\n".join(parts) + "\n")
        for r in (r for v in raw.values() for r in v.values()):
            r.pop("grad", None)
        (out / "torchdiffeq.json").write_text(json.dumps(raw, indent=1))
        if "curve" in raw:
            plot_curve(raw["curve"], out / "memory_vs_budget.png", args.curve_steps, args.curve_batch)


if __name__ == "__main__":
    main()
