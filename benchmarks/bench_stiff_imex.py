"""Stiff neural ODE: IMEX (implicit diffusion) vs explicit methods, seconds per gradient at equal accuracy.

    python benchmarks/bench_stiff_imex.py [--targets 1e-4 1e-6] [--repeats 3] [--diffusion 0.1]

Problem: ``u' = D u_xx + MLP(u)`` for ``u`` on ``N = 64`` periodic points of [0, 1)
(second-order central differences, ``D = 0.1`` by default: the Laplacian's eigenvalues
reach ``-4 D N^2 = -1638``, the stiff part, which bounds rk4's steps by 2.785 / 1638), a
batch of 4 initial conditions (random sine series, modes 1-8) and a pointwise MLP
(1-16-1, tanh, 49 parameters); ``t`` in [0, 1].

Accuracy: the relative max-norm error of ``u(T)`` against scipy's Radau at
``rtol = atol = 1e-12``. For every target error each method takes its cheapest setting
that meets it:

- IMEX ``method="arkimex"`` (tableaux ``l2`` and ``4``), ``implicit=`` the diffusion,
  explicit part the MLP: the loosest ``rtol = atol`` of the ladder 1e-2, 10^-2.5, ... 1e-10;
- ``dopri5`` (adaptive): the loosest ``rtol = atol`` of the same ladder;
- ``rk4`` with fixed steps ``T / n``: the smallest ``n`` (largest step) found by bisection.

Then one gradient (forward + backward with ``pnode.odeint_adjoint``, loss
``sum(u(T)**2)``, gradient w.r.t. ``u0`` and the MLP's parameters) per configuration is
timed, round-robin over the configurations, ``--repeats`` times after one warm-up, in this
one process (the median is reported). The gradient errors (relative 2-norm, w.r.t. ``u0``
and w.r.t. the MLP's parameters) are measured against rk4 with ``max(2000, 4 D N^2 T)``
fixed steps (``|h lambda| <= 1``, where rk4 damps even the fastest mode like the exact
flow). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import pnode

N, BATCH, T_END = 64, 4, 1.0
LADDER = [10.0 ** (-k / 2) for k in range(4, 21)]  # rtol = atol: 1e-2 ... 1e-10
DT = torch.float64


class Diffusion(torch.nn.Module):
    """``D u_xx`` on the periodic grid (the stiff, linear part)."""

    def __init__(self, coefficient: float):
        super().__init__()
        self.coefficient = coefficient

    def forward(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.coefficient * N ** 2 * (torch.roll(u, 1, -1) - 2 * u + torch.roll(u, -1, -1))


class Reaction(torch.nn.Module):
    """A pointwise MLP ``R(u)`` (the non-stiff part)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(DT)

    def forward(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.net(u[..., None])[..., 0]


class Full(torch.nn.Module):
    """``D u_xx + R(u)`` as one right-hand side (for explicit methods)."""

    def __init__(self, diffusion: Diffusion, reaction: Reaction):
        super().__init__()
        self.diffusion, self.reaction = diffusion, reaction

    def forward(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.diffusion(t, u) + self.reaction(t, u)


def initial_state() -> torch.Tensor:
    """``BATCH`` random sine series with modes 1-8 (amplitudes ~ 1/k)."""
    x = torch.arange(N, dtype=DT) / N
    k = torch.arange(1, 9, dtype=DT)
    amp = torch.randn(BATCH, 8, dtype=DT) / k
    return (amp[:, :, None] * torch.sin(2 * math.pi * k[None, :, None] * x)).sum(1)


def reference(full: Full, u0: torch.Tensor) -> torch.Tensor:
    """``u(T)`` from scipy's Radau at rtol = atol = 1e-12 (exact Jacobian by autograd)."""
    from scipy.integrate import solve_ivp

    def rhs(t, y):
        with torch.no_grad():
            return full(t, torch.from_numpy(y).view(u0.shape)).reshape(-1).numpy()

    def jac(t, y):
        flat = lambda z: full(t, z.view(u0.shape)).reshape(-1)
        return torch.autograd.functional.jacobian(flat, torch.from_numpy(y)).numpy()

    sol = solve_ivp(rhs, (0.0, T_END), u0.reshape(-1).numpy(), method="Radau", rtol=1e-12, atol=1e-12, jac=jac)
    return torch.from_numpy(sol.y[:, -1].copy()).view(u0.shape)


class Config:
    """One method with one setting: how to call ``odeint_adjoint`` and its step count."""

    def __init__(self, name: str, func, **kw):
        self.name, self.func, self.kw = name, func, kw

    @property
    def setting(self) -> str:
        if "step_size" in self.kw:
            return f"h = T/{round(T_END / self.kw['step_size'])}"
        return f"rtol=atol={self.kw['rtol']:.0e}"

    def solve(self, u0: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``u(T)`` without a graph and the number of accepted steps."""
        ode = pnode.NeuralODE(self.func, **self.kw)
        with torch.no_grad():
            out = ode(u0, torch.tensor([0.0, T_END], dtype=DT))
        return out[-1], ode.stats["steps"]

    def gradient(self, u0: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """One forward + backward through ``pnode.odeint_adjoint``."""
        out = pnode.odeint_adjoint(self.func, u0, torch.tensor([0.0, T_END], dtype=DT), **self.kw)
        return list(torch.autograd.grad(out[-1].pow(2).sum(), [u0, *params]))


def error(u: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative max-norm error."""
    return float((u - ref).abs().max() / ref.abs().max())


def gradient_errors(grad: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[float, float]:
    """Relative 2-norm errors of the gradient w.r.t. ``u0`` and w.r.t. the parameters."""
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
    pairs = ((grad[:1], ref[:1]), (grad[1:], ref[1:]))
    return tuple(float((flat(a) - flat(b)).norm() / flat(b).norm()) for a, b in pairs)


def solve_error(cfg: Config, u0: torch.Tensor, ref: torch.Tensor) -> tuple[float, int]:
    """(error of ``u(T)``, steps); an unstable run (non-finite state) has error inf."""
    try:
        u, steps = cfg.solve(u0)
    except pnode.ConvergenceError:
        return math.inf, -1
    return error(u, ref), steps


def loosest(make, u0, ref, target) -> tuple[Config, float, int]:
    """The first ladder tolerance whose solution meets ``target``."""
    for tol in LADDER:
        cfg = make(tol)
        err, steps = solve_error(cfg, u0, ref)
        if err <= target:
            return cfg, err, steps
    raise RuntimeError(f"{cfg.name} does not reach {target:g} on the ladder")


def fewest_steps(make, u0, ref, target, hi: int = 1 << 14) -> tuple[Config, float, int]:
    """The smallest number of fixed steps meeting ``target`` (bisection; the error falls
    with the step count once the step is stable)."""
    lo, best = 1, None
    while lo < hi:
        mid = (lo + hi) // 2
        err, steps = solve_error(make(T_END / mid), u0, ref)
        if err <= target:
            hi, best = mid, (err, steps)
        else:
            lo = mid + 1
    if best is None:
        raise RuntimeError(f"fixed steps do not reach {target:g} with {hi} steps")
    return make(T_END / hi), *best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[1e-4, 1e-6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--diffusion", type=float, default=0.1, help="D")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    diffusion, reaction = Diffusion(args.diffusion), Reaction()
    full = Full(diffusion, reaction)
    params = list(reaction.parameters())
    u0 = initial_state()
    ref = reference(full, u0)
    ref_steps = max(2000, math.ceil(4 * args.diffusion * N ** 2 * T_END))  # |h lambda| <= 1
    ref_grad = Config("rk4", full, method="rk4", step_size=T_END / ref_steps).gradient(u0.requires_grad_(True), params)

    families = {
        "IMEX arkimex l2": lambda tol: Config("IMEX arkimex l2", reaction, method="arkimex", implicit=diffusion,
                                              rtol=tol, atol=tol, options={"ts_arkimex_type": "l2"}),
        "IMEX arkimex 4": lambda tol: Config("IMEX arkimex 4", reaction, method="arkimex", implicit=diffusion,
                                             rtol=tol, atol=tol, options={"ts_arkimex_type": "4"}),
        "explicit dopri5": lambda tol: Config("explicit dopri5", full, method="dopri5", rtol=tol, atol=tol),
    }
    rows = []
    for target in args.targets:
        chosen = [loosest(make, u0, ref, target) for make in families.values()]
        chosen.append(fewest_steps(lambda h: Config("explicit rk4", full, method="rk4", step_size=h), u0, ref, target))
        for cfg, _, _ in chosen:
            cfg.gradient(u0, params)  # warm-up
        times: list[list[float]] = [[] for _ in chosen]
        grads = [ref_grad] * len(chosen)
        for _ in range(args.repeats):
            for i, (cfg, _, _) in enumerate(chosen):
                tic = time.perf_counter()
                grads[i] = cfg.gradient(u0, params)
                times[i].append(time.perf_counter() - tic)
        for (cfg, err, steps), ts, grad in zip(chosen, times, grads):
            rows.append((target, cfg.name, cfg.setting, steps, err, *gradient_errors(grad, ref_grad),
                         statistics.median(ts)))
    print(f"u' = D u_xx + MLP(u): N={N}, batch {BATCH}, D={args.diffusion}, T={T_END}; "
          f"error of u(T) vs scipy Radau rtol 1e-12; gradient errors vs rk4 with {ref_steps} steps; "
          f"median of {args.repeats} gradients (forward + backward)\n")
    print("| target | method | setting | steps | u(T) error | grad u0 error | grad params error "
          "| s / gradient | time / IMEX 4 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for target in args.targets:
        group = [r for r in rows if r[0] == target]
        imex = next(r[-1] for r in group if r[1] == "IMEX arkimex 4")
        for _, name, setting, steps, err, gerr0, gerrp, sec in group:
            print(f"| {target:.0e} | {name} | {setting} | {steps} | {err:.1e} | {gerr0:.1e} | {gerrp:.1e} "
                  f"| {sec:.3f} | {sec / imex:.1f} |")


if __name__ == "__main__":
    main()
