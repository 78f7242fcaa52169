"""Neural-Galerkin KdV: two solitons of u_t + 6 u u_x + u_xxx = 0 overtaking each other.

The exact solution is Hirota's two-soliton (pnode.pinn.exact.kdv_two_soliton) with wave
numbers 1 and 2 (heights 2 and 8, speeds 4 and 16): the tall fast soliton starts behind
the small one, overtakes it near t = 0.4 and leaves it behind shifted forward, the small
one shifted back. The domain [-15, 15] holds both for t in [0, 1] with tails below 1e-8
at its ends, so no boundary condition enters (the ansatz lives on the whole line).

The network is a tau-function ansatz: U(x; theta) = 2 (log f)_xx with
f = 1 + sum_{j=1..3} exp(p_j x + q_j), theta = (p, q) (six parameters). One term alone
is a sech^2 soliton (height p^2 / 2, width 2 / p, at -q / p); three hold the two solitons
and their interaction (the exact solution has p_3 = p_1 + p_2), so every two-soliton
state lies in the class and the error at T measures the time integration and the
regularised solve, not the ansatz. theta(0) is fitted to u0 by Levenberg-Marquardt
(pnode.solvers) from a guess read off u0's two peaks (heights and positions), then marched by
PETSc TS (rk4 with fixed steps, dopri5 adaptive) through M(theta) theta' = F with
f = -6 u u_x - u_xxx (the third derivative by torch.func).

--ansatz sech marches a plain sum of two sech^2 units (height, width, position each)
instead: it holds the separated solitons but not their interaction.

    python examples/galerkin_kdv.py --out out/galerkin_kdv [--quick]
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import pnode
from galerkin_common import TimeProgress, main_from_config, save, two_panels
from pnode.pinn.exact import kdv_two_soliton
from pnode.pinn.galerkin import GalerkinProblem

DT = torch.float64
KAPPA = (1.0, 2.0)
CENTERS = (-3.0, -7.0)  # at t = 0: the fast soliton at -7, the slow one at -3 + log(9) / 2


@dataclass
class Config:
    ansatz: str = "tau"
    samples: int = 256
    lower: float = -15.0
    upper: float = 15.0
    T: float = 1.0
    outputs: int = 11
    rk4_steps: int = 200
    rtol: float = 1e-8
    regularization: float = 1e-12
    fit_iters: int = 100


QUICK = {"T": 0.5, "outputs": 6, "rk4_steps": 50, "rtol": 1e-7, "samples": 160}


class TauAnsatz(torch.nn.Module):
    """``U(x) = 2 (log f)_xx``, ``f = 1 + sum_j exp(p_j x + q_j)``: with the weights
    ``w = softmax(0, p x + q)`` it is ``2 sum_j w_j (p_j - pbar)^2`` (slopes ``p_0 = 0``),
    evaluated without overflow. Points ``(n, 1)`` -> values ``(n,)``."""

    def __init__(self, slopes: torch.Tensor, offsets: torch.Tensor):
        super().__init__()
        self.slopes = torch.nn.Parameter(slopes.detach().clone())
        self.offsets = torch.nn.Parameter(offsets.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1)
        zero = torch.zeros_like(x)
        logits = torch.cat([zero, x * self.slopes + self.offsets], dim=-1)
        slopes = torch.cat([zero[:1, 0], self.slopes])
        w = torch.softmax(logits, dim=-1)
        mean = (w * slopes).sum(-1, keepdim=True)
        return 2 * (w * (slopes - mean) ** 2).sum(-1)


class SechSum(torch.nn.Module):
    """``U(x) = sum_k a_k sech^2(w_k (x - c_k))``, one unit per soliton (the comparison:
    it holds separated solitons but not their interaction). Points ``(n, 1)`` -> ``(n,)``."""

    def __init__(self, heights: torch.Tensor, widths: torch.Tensor, centers: torch.Tensor):
        super().__init__()
        self.heights = torch.nn.Parameter(heights.detach().clone())
        self.widths = torch.nn.Parameter(widths.detach().clone())
        self.centers = torch.nn.Parameter(centers.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.widths * (x.reshape(-1, 1) - self.centers)
        return (self.heights / torch.cosh(z) ** 2).sum(-1)


ANSATZES = ("tau", "sech")


class KdV(torch.nn.Module):
    """``f = -6 u u_x - u_xxx``."""

    def forward(self, t, x, u, du, d2u, d3u):
        return -6 * u * du[:, 0] - d3u[:, 0]


def u0(x: torch.Tensor) -> torch.Tensor:
    return kdv_two_soliton(x.reshape(-1), 0.0, KAPPA, CENTERS)


def exact(x: torch.Tensor, t: float) -> torch.Tensor:
    return kdv_two_soliton(x.reshape(-1), t, KAPPA, CENTERS)


def peaks(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights and positions of the two highest local maxima of ``u`` on the grid ``x``,
    left to right."""
    inner = (u[1:-1] > u[:-2]) & (u[1:-1] >= u[2:])
    idx = torch.nonzero(inner).reshape(-1) + 1
    top = idx[u[idx].argsort(descending=True)[:2]].sort().values
    return u[top], x[top]


def initial_network(ansatz: str, x: torch.Tensor, u: torch.Tensor) -> torch.nn.Module:
    """The ansatz set from ``u``'s two peaks: a soliton of height ``h`` at ``s`` is
    ``h sech^2(k (x - s))``, ``k = sqrt(h / 2)``, and in the tau form the step of ``log f``
    by ``exp(2 k (x - s))``; the tau terms are the left soliton's, the product of both
    (as in Hirota's form) and the right one's."""
    heights, centers = peaks(x, u)
    k = torch.sqrt(heights / 2)
    if ansatz == "sech":
        return SechSum(heights, k, centers)
    p, q = 2 * k, -2 * k * centers
    return TauAnsatz(torch.stack([p[0], p[0] + p[1], p[1]]), torch.stack([q[0], q[0] + q[1], q[1]]))


def build(cfg: Config, comm=None) -> GalerkinProblem:
    """The ansatz (``cfg.ansatz``, set from u0's peaks) and the Galerkin problem on ``cfg.samples``
    grid points of ``[lower, upper]``."""
    points = torch.linspace(cfg.lower, cfg.upper, cfg.samples, dtype=DT)
    if cfg.ansatz not in ANSATZES:
        raise ValueError(f"ansatz must be one of {ANSATZES}, got {cfg.ansatz!r}")
    net = initial_network(cfg.ansatz, points, u0(points))
    return GalerkinProblem(net, KdV(), points, derivatives=3, regularization=cfg.regularization, comm=comm)


def rel_l2(problem: GalerkinProblem, theta: torch.Tensor, x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((problem.solution(theta, x) - ref).norm() / ref.norm())


def march(problem: GalerkinProblem, theta0: torch.Tensor, cfg: Config, method: str):
    """theta at ``cfg.outputs`` times in [0, T], the solver's counts and seconds."""
    kw = {"step_size": cfg.T / cfg.rk4_steps} if method == "rk4" else {"rtol": cfg.rtol, "atol": cfg.rtol * 1e-2}
    progress = TimeProgress(problem, cfg.T, method)
    node = pnode.NeuralODE(progress, method=method, **kw)
    t = torch.linspace(0, cfg.T, cfg.outputs, dtype=DT)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            theta = node(theta0, t)
    finally:
        progress.close()
    return t, theta, node.stats, time.perf_counter() - start


def run(cfg: Config, out: Path | None = None) -> dict:
    problem = build(cfg)
    theta0, fit = problem.fit(u0, max_it=cfg.fit_iters, progress=True)
    x = torch.linspace(cfg.lower, cfg.upper, 1201, dtype=DT)
    metrics = {"fit_loss": fit.loss, "fit_rel": rel_l2(problem, theta0, x, u0(x)), "fit_iterations": fit.iterations,
               "parameters": problem.numel}
    paths = {}
    for method in ("rk4", "dopri5"):
        t, theta, stats, seconds = march(problem, theta0, cfg, method)
        errors = [rel_l2(problem, th, x, exact(x, float(ti))) for ti, th in zip(t, theta)]
        paths[method] = (theta, errors)
        metrics[f"{method}_rel"] = errors[-1]
        metrics[f"{method}_max_rel"] = max(errors)
        metrics[f"{method}_steps"] = stats["steps"]
        metrics[f"{method}_seconds"] = seconds
        if method == "dopri5":
            metrics["dopri5_rejected"] = stats["rejected"]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        figure(problem, t, paths, x, cfg, out / "galerkin_kdv.png")
        (out / "metrics.json").write_text(json.dumps(
            {"config": asdict(cfg), **metrics, "times": t.tolist(),
             "errors": {m: e for m, (_, e) in paths.items()}}, indent=1))
    return metrics


def figure(problem, t, paths, x, cfg: Config, path: Path) -> None:
    fig, (left, right) = two_panels((11, 3.8))
    theta = paths["dopri5"][0]
    show = sorted({0, len(t) // 3, (2 * len(t)) // 5, len(t) - 1})
    with torch.no_grad():
        for k in show:
            left.plot(x, problem.solution(theta[k], x), label=f"t = {float(t[k]):.2f}")
            left.plot(x, exact(x, float(t[k])), "k:", lw=1)
    left.set_xlabel("x")
    left.set_title("U(x; theta(t)) (dopri5), exact dotted")
    left.legend(fontsize=8)
    for method, (_, errors) in paths.items():
        right.semilogy(t, [max(e, 1e-17) for e in errors], "o-", label=method)
    right.set_xlabel("t")
    right.set_title("relative L2 error against the exact two-soliton")
    right.legend(fontsize=8)
    save(fig, path)


def main(argv=None) -> dict:
    return main_from_config(__doc__, "out/galerkin_kdv", Config(), QUICK, run, argv)


if __name__ == "__main__":
    main()
