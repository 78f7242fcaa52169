"""Neural-Galerkin Allen-Cahn: u_t = 1e-4 u_xx - 5 u^3 + 5 u, u0 = x^2 cos(pi x), periodic on
[-1, 1], t in [0, 1], against the PETSc Fourier method-of-lines reference
(pnode.pinn.reference.allen_cahn_reference).

The network U(x; theta) is an MLP on periodic features [cos(k pi x), sin(k pi x)], k = 1..modes
(exactly periodic), fitted to u0 by Levenberg-Marquardt (TAO brgn), then theta(t) is marched by
PETSc TS through M(theta) theta' = F(t, theta): an explicit adaptive method (dopri5) and an
implicit adaptive one (arkimex, fully implicit, --arkimex-type 4 by default, dense Newton
Jacobian of the solved form),
at the same tolerances, in windows of --window (tqdm; each window's theta is saved, so a
run resumes where it stopped). It prints the relative L2 error at t = 1 and the steps of each.
The defaults (8 modes, one tanh layer of 16, 512 samples, dopri5 at rtol 1e-7) reach 5.7e-5;
``--methods dopri5,arkimex`` adds the implicit march (about 18x dearer per step).

    python examples/galerkin_allen_cahn.py --out out/galerkin_allen_cahn [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import pnode
from pnode.pinn.galerkin import GalerkinProblem, PeriodicFeatures
from pnode.pinn.reference import allen_cahn_reference

METHODS = ("dopri5", "arkimex")


@dataclass
class Config:
    width: int = 16
    depth: int = 1
    modes: int = 8
    samples: int = 512
    T: float = 1.0
    window: float = 0.1
    rtol: float = 1e-7
    regularization: float = 1e-8
    fit_iters: int = 200
    arkimex_type: str = "4"
    methods: str = "dopri5"
    seed: int = 0


QUICK = {"width": 6, "depth": 1, "modes": 3, "samples": 32, "T": 0.002, "window": 0.001, "rtol": 1e-5,
         "fit_iters": 60, "methods": "dopri5,arkimex"}


def initial(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1)
    return x ** 2 * torch.cos(math.pi * x)


class AllenCahn(torch.nn.Module):
    """``f = 1e-4 u_xx - 5 u^3 + 5 u``."""

    def forward(self, t, x, u, du, d2u):
        return 1e-4 * d2u[:, 0] - 5 * u ** 3 + 5 * u


def build(cfg: Config) -> GalerkinProblem:
    torch.manual_seed(cfg.seed)
    layers, width = [PeriodicFeatures(2.0, cfg.modes)], 2 * cfg.modes
    for _ in range(cfg.depth):
        layers += [torch.nn.Linear(width, cfg.width), torch.nn.Tanh()]
        width = cfg.width
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).double()
    points = -1 + 2 * torch.arange(cfg.samples, dtype=torch.float64) / cfg.samples
    return GalerkinProblem(net, AllenCahn(), points, derivatives=2, regularization=cfg.regularization)


def march(problem: GalerkinProblem, theta0: torch.Tensor, cfg: Config, method: str, out: Path | None):
    """theta at the end of each window (resuming from ``out``), the steps, rejections and seconds."""
    from tqdm import tqdm

    windows = max(1, round(cfg.T / cfg.window))
    edges = torch.linspace(0, cfg.T, windows + 1, dtype=torch.float64)
    path = None if out is None else out / f"{method}.pt"
    state = torch.load(path) if path is not None and path.exists() else {"thetas": [theta0], "steps": 0,
                                                                         "rejected": 0, "seconds": 0.0}
    kw = {"jacobian": "dense", "options": {"ts_arkimex_type": cfg.arkimex_type}} if method == "arkimex" else {}
    for k in tqdm(range(len(state["thetas"]) - 1, windows), desc=method, initial=len(state["thetas"]) - 1,
                  total=windows):
        node = pnode.NeuralODE(problem, method=method, rtol=cfg.rtol, atol=cfg.rtol * 1e-2, **kw)
        start = time.perf_counter()
        with torch.no_grad():
            theta = node(state["thetas"][-1], edges[k:k + 2])[-1]
        state["seconds"] += time.perf_counter() - start
        state["steps"] += node.stats["steps"]
        state["rejected"] += node.stats["rejected"]
        state["thetas"].append(theta)
        if path is not None:
            torch.save(state, path)
    return state


def rel_l2(u: torch.Tensor, ref: torch.Tensor) -> float:
    return float((u - ref).norm() / ref.norm())


def run(cfg: Config, out: Path | None = None) -> dict:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    problem = build(cfg)
    fit_path = None if out is None else out / "fit.pt"
    start = time.perf_counter()
    if fit_path is not None and fit_path.exists():
        theta0, fit_loss = torch.load(fit_path)
    else:
        # brgn: 289 parameters on 512 samples, loss 3.5e-12 in 200 iterations (measured;
        # docs/benchmarks.md)
        theta0, fit = problem.fit(initial, max_it=cfg.fit_iters, solver="brgn", progress=True)
        fit_loss = fit.loss
        if fit_path is not None:
            torch.save((theta0, fit_loss), fit_path)
    x = torch.linspace(-1, 1, 513, dtype=torch.float64)[:-1]
    with torch.no_grad():
        metrics = {"parameters": problem.numel, "fit_loss": fit_loss, "fit_seconds": time.perf_counter() - start,
                   "fit_rel": rel_l2(problem.solution(theta0, x), initial(x))}
    ref = torch.as_tensor(allen_cahn_reference(x.numpy(), [cfg.T])[0])
    finals = {}
    methods = cfg.methods.split(",")
    if not set(methods) <= set(METHODS):
        raise SystemExit(f"--methods takes a comma-separated subset of {METHODS}, got {cfg.methods!r}")
    for method in methods:
        state = march(problem, theta0, cfg, method, out)
        with torch.no_grad():
            finals[method] = problem.solution(state["thetas"][-1], x)
        metrics[f"{method}_rel"] = rel_l2(finals[method], ref)
        for key in ("steps", "rejected", "seconds"):
            metrics[f"{method}_{key}"] = state[key]
    if "dopri5_steps" in metrics and "arkimex_steps" in metrics:
        metrics["step_ratio"] = metrics["dopri5_steps"] / max(metrics["arkimex_steps"], 1)
    if out is not None:
        figure(x, initial(x), ref, finals, cfg, out / "galerkin_allen_cahn.png")
        (out / "metrics.json").write_text(json.dumps({"config": asdict(cfg), **metrics}, indent=1))
    return metrics


def figure(x, u0, ref, finals, cfg: Config, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(x, u0, label="u0")
    left.plot(x, ref, "k--", label=f"reference at t={cfg.T:g}")
    for method, u in finals.items():
        left.plot(x, u, ":", label=f"{method} at t={cfg.T:g}")
        right.semilogy(x, (u - ref).abs().clamp_min(1e-17), label=method)
    left.set_xlabel("x")
    left.legend(fontsize=8)
    right.set_xlabel("x")
    right.set_title("|U(x; theta(T)) - u_ref(x, T)|")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/galerkin_allen_cahn")
    parser.add_argument("--quick", action="store_true", help="a tiny network to t=0.002")
    for name, value in asdict(Config()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv[1:] if argv else None)
    cfg = replace(Config(), **(QUICK if args.quick else {}))
    cfg = replace(cfg, **{k: v for k, v in vars(args).items() if k in asdict(cfg) and v is not None})
    metrics = run(cfg, Path(args.out))
    for key, value in metrics.items():
        print(f"{key}: {value:.6e}" if isinstance(value, float) else f"{key}: {value}")
    return metrics


if __name__ == "__main__":
    main()
