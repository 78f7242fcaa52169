"""Stiff forward solves: pnode's implicit methods against scipy's BDF and LSODA and diffrax.

    python benchmarks/bench_stiff.py [--repeats 5] [--problems rober vdp] [--no-diffrax]

Problems (float64, one thread, forward solves only, the state at the end compared):

- ROBER: ``y1' = -0.04 y1 + 1e4 y2 y3``, ``y2' = 0.04 y1 - 1e4 y2 y3 - 3e7 y2^2``,
  ``y3' = 3e7 y2^2``, ``y(0) = (1, 0, 0)``, ``t`` in [0, 1e5], rtol 1e-6, atol 1e-10;
- Van der Pol ``y1' = y2``, ``y2' = mu (1 - y1^2) y2 - y1``, mu = 1000, ``y(0) = (2, 0)``,
  ``t`` in [0, 3000], rtol 1e-6, atol 1e-8.

Error: ``max_i |y_i(T) - r_i| / max_i |r_i|`` against scipy's Radau at rtol 1e-12 (atol
1e-14 for ROBER, 1e-12 for Van der Pol) with the exact Jacobian. pnode solves the torch
right-hand side (``jacobian="dense"``, ``NeuralODE`` under ``torch.no_grad()``): ARKIMEX
tableaux ``4`` and ``5`` with the default Newton (:mod:`pnode.newton`: Jacobian reuse, WRMS
stopping), the same with a fresh Jacobian at every iteration and PETSc's Newton tests
(``full Newton``, pnode's behaviour before Jacobian reuse) when ``pnode.Newton`` exists,
and the forward-only TSBDF (PETSc's default order 2, and order 5) and TSROSW (``rodas3``: a
linearly implicit Rosenbrock-W method, one Jacobian per step and one linear solve per
stage). TSBDF order 5 also runs with the element-wise torch function (one torch call per
term, the form these rows used before), with the analytic torch Jacobian (``jac=``, as
scipy gets its numpy one) and, where its error at the common rtol exceeds scipy BDF's
(ROBER), at the tighter ``matched_rtol`` that gives scipy BDF's error. scipy solves a
numpy right-hand side with its analytic Jacobian (its fastest use) and, for BDF, also the
same torch function pnode solves.
diffrax (optional, the ``stiff-bench`` extra; skipped with a printed line when it is not
importable) solves the same equations written in ``jax.numpy`` with ``Kvaerno5`` and
``Kvaerno3`` (ESDIRK, its ``VeryChord`` Newton: one Jacobian and LU per attempted step),
``PIDController(rtol, atol)``, float64, one XLA thread; the solve is jit-compiled first
(compile seconds reported apart) and then timed like the others.
Every configuration runs once to warm up, then ``--repeats`` times round-robin; the median
is reported, with the ratios to scipy's BDF (numpy), LSODA and the fastest diffrax solver.
Counts: steps (accepted), Newton iterations, Jacobian evaluations (scipy: ``njev``;
diffrax: attempted steps), right-hand-side calls (pnode: counted in one extra run; each
call's cost is measured alone and its share of the time given).
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import pnode
from diffrax_setup import compiled, load_diffrax

DT = torch.float64
MU = 1000.0


# The torch right-hand sides and Jacobians are written as matrix-vector products of
# constant matrices with the state and its quadratic terms: a few torch calls (~5 us a
# call, one thread) instead of one per term (~20 us); the element-wise forms are kept for
# one row. ROBER: f = K1 y + K2 (y2 [y2, y3]), dg/du = J0 + Jy y; Van der Pol:
# f = A y + c y1^2 y2, dg/du = J0 + Jq (y1 [y1, y2]).
ROBER_K1 = torch.tensor([[-0.04, 0, 0], [0.04, 0, 0], [0, 0, 0]], dtype=DT)
ROBER_K2 = torch.tensor([[0, 1e4], [-3e7, -1e4], [3e7, 0]], dtype=DT)
ROBER_J0 = torch.tensor([-0.04, 0, 0, 0.04, 0, 0, 0, 0, 0], dtype=DT)
ROBER_JY = torch.tensor([[0, 0, 0], [0, 0, 1e4], [0, 1e4, 0], [0, 0, 0], [0, -6e7, -1e4], [0, -1e4, 0],
                         [0, 0, 0], [0, 6e7, 0], [0, 0, 0]], dtype=DT)
VDP_A = torch.tensor([[0, 1], [-1, MU]], dtype=DT)
VDP_C = torch.tensor([0, -MU], dtype=DT)
VDP_J0 = torch.tensor([0, 1, -1, MU], dtype=DT)
VDP_JQ = torch.tensor([[0, 0], [0, 0], [0, -2 * MU], [-MU, 0]], dtype=DT)


def rober_torch(t, y):
    return torch.addmv(torch.mv(ROBER_K1, y), ROBER_K2, y[1] * y[1:])


def rober_torch_jac(t, y):
    return torch.addmv(ROBER_J0, ROBER_JY, y).view(3, 3)


def rober_elementwise(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2])


def rober_np(t, y):
    y1, y2, y3 = y
    return np.array([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 ** 2, 3e7 * y2 ** 2])


def rober_jac(t, y):
    _, y2, y3 = y
    return np.array([[-0.04, 1e4 * y3, 1e4 * y2], [0.04, -1e4 * y3 - 6e7 * y2, -1e4 * y2], [0.0, 6e7 * y2, 0.0]])


def vdp_torch(t, y):
    return torch.addcmul(torch.mv(VDP_A, y), VDP_C, y[0] * y[0] * y[1])


def vdp_torch_jac(t, y):
    return torch.addmv(VDP_J0, VDP_JQ, y[0] * y).view(2, 2)


def vdp_elementwise(t, y):
    return torch.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_np(t, y):
    return np.array([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


def vdp_jac(t, y):
    return np.array([[0.0, 1.0], [-2 * MU * y[0] * y[1] - 1, MU * (1 - y[0] ** 2)]])


@dataclass(frozen=True)
class Problem:
    torch_rhs: Callable
    torch_jac: Callable
    elementwise: Callable
    numpy_rhs: Callable
    numpy_jac: Callable
    y0: tuple
    T: float
    rtol: float
    atol: float
    ref_atol: float
    matched_rtol: float | None  # pnode's rtol for scipy BDF's error (None: already as accurate)


PROBLEMS = {
    "rober": Problem(rober_torch, rober_torch_jac, rober_elementwise, rober_np, rober_jac, (1.0, 0.0, 0.0),
                     1e5, 1e-6, 1e-10, 1e-14, 1.5e-7),
    "vdp": Problem(vdp_torch, vdp_torch_jac, vdp_elementwise, vdp_np, vdp_jac, (2.0, 0.0), 3000.0, 1e-6, 1e-8,
                   1e-12, None),
}


class Counted(torch.nn.Module):
    """A right-hand side that counts its calls."""

    def __init__(self, func):
        super().__init__()
        self.func, self.calls = func, 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


def reference(name: str) -> np.ndarray:
    from scipy.integrate import solve_ivp

    p = PROBLEMS[name]
    sol = solve_ivp(p.numpy_rhs, (0.0, p.T), p.y0, method="Radau", rtol=1e-12, atol=p.ref_atol, jac=p.numpy_jac)
    return sol.y[:, -1]


def error(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


class PnodeCase:
    """A pnode solve of the torch right-hand side (``elementwise``: its element-wise form;
    ``rtol``: instead of the problem's, atol scaled with it; ``jac``: its torch Jacobian)."""

    def __init__(self, label: str, name: str, method: str, options: dict, elementwise: bool = False,
                 rtol: float | None = None, jac: bool = False, **kw):
        self.label, self.name = label, name
        p = PROBLEMS[name]
        func = p.elementwise if elementwise else p.torch_rhs
        rtol, atol = (p.rtol, p.atol) if rtol is None else (rtol, p.atol * rtol / p.rtol)
        if jac:
            kw["jac"] = p.torch_jac
        self.y0 = torch.tensor(p.y0, dtype=DT)
        self.t = torch.tensor([0.0, p.T], dtype=DT)
        self.make = lambda f: pnode.NeuralODE(f, method=method, rtol=rtol, atol=atol, options=options, **kw)
        self.ode, self.func = self.make(func), func

    def run(self) -> np.ndarray:
        with torch.no_grad():
            return self.ode(self.y0, self.t)[-1].numpy()

    def counts(self) -> dict:
        st = self.ode.stats
        counted = Counted(self.func)
        ode = self.make(counted)
        with torch.no_grad():
            ode(self.y0, self.t)
        return {"steps": st["steps"], "rejected": st["rejected"], "newton": st["newton_iterations"],
                "jacobians": st.get("jacobian_evaluations", st["newton_iterations"]), "rhs": counted.calls}


class ScipyCase:
    def __init__(self, label: str, name: str, method: str, torch_rhs: bool = False):
        from scipy.integrate import solve_ivp

        self.label, self.name = label, name
        p = PROBLEMS[name]
        f = p.numpy_rhs
        if torch_rhs:
            def f(t, y, ft=p.torch_rhs):
                with torch.no_grad():
                    return ft(t, torch.from_numpy(y)).numpy()
        self.solve = lambda: solve_ivp(f, (0.0, p.T), p.y0, method=method, rtol=p.rtol, atol=p.atol,
                                       jac=p.numpy_jac)

    def run(self) -> np.ndarray:
        self.sol = self.solve()
        return self.sol.y[:, -1]

    def counts(self) -> dict:
        sol = self.sol
        return {"steps": len(sol.t) - 1, "rejected": None, "newton": None, "jacobians": sol.njev,
                "rhs": sol.nfev}


def jax_rhs(name: str, jnp):
    """The right-hand side of problem ``name`` in ``jax.numpy`` (diffrax's ``(t, y, args)``)."""
    if name == "rober":
        return lambda t, y, args: jnp.stack([-0.04 * y[0] + 1e4 * y[1] * y[2],
                                             0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2])
    return lambda t, y, args: jnp.stack([y[1], MU * (1 - y[0] ** 2) * y[1] - y[0]])


class DiffraxCase:
    """A diffrax ESDIRK solve, compiled once (``compile_s``), then timed per call."""

    def __init__(self, label: str, name: str, solver: str, jx):
        jax, jnp, dfx = jx
        self.label, self.name = label, name
        p = PROBLEMS[name]
        T = p.T
        term, method = dfx.ODETerm(jax_rhs(name, jnp)), getattr(dfx, solver)()
        control = dfx.PIDController(rtol=p.rtol, atol=p.atol)

        def solve(y):
            return dfx.diffeqsolve(term, method, 0.0, T, None, y, stepsize_controller=control,
                                   saveat=dfx.SaveAt(t1=True), max_steps=1_000_000)

        self.y0 = jnp.asarray(p.y0, dtype=jnp.float64)
        self.solve, self.compile_s = compiled(jax, solve, self.y0)

    def run(self) -> np.ndarray:
        self.sol = self.solve(self.y0)
        return np.asarray(self.sol.ys[-1])

    def counts(self) -> dict:
        st = {k: int(v) for k, v in self.sol.stats.items()}
        return {"steps": st["num_accepted_steps"], "rejected": st["num_rejected_steps"], "newton": None,
                "jacobians": st["num_steps"], "rhs": None}


def cases(name: str, jx) -> list:
    out = []
    for tableau in ("4", "5"):
        opts = {"ts_arkimex_type": tableau}
        out.append(PnodeCase(f"pnode ARKIMEX {tableau}", name, "arkimex", opts, jacobian="dense"))
        if hasattr(pnode, "Newton"):
            out.append(PnodeCase(f"pnode ARKIMEX {tableau}, full Newton", name, "arkimex", opts, jacobian="dense",
                                 newton=pnode.Newton(reuse=False, test="petsc")))
    if hasattr(pnode, "Newton"):  # before it, NeuralODE refused forward-only types
        out.append(PnodeCase("pnode BDF (TSBDF)", name, "bdf", {}, jacobian="dense"))
        bdf5 = {"ts_bdf_order": 5}
        out.append(PnodeCase("pnode BDF order 5 (TSBDF)", name, "bdf", bdf5, jacobian="dense"))
        out.append(PnodeCase("pnode BDF order 5, element-wise rhs", name, "bdf", bdf5, elementwise=True,
                             jacobian="dense"))
        out.append(PnodeCase("pnode BDF order 5, jac=", name, "bdf", bdf5, jac=True, jacobian="dense"))
        r = PROBLEMS[name].matched_rtol
        if r is not None:
            out.append(PnodeCase(f"pnode BDF order 5, rtol {r:g}", name, "bdf", bdf5, rtol=r, jacobian="dense"))
            out.append(PnodeCase(f"pnode BDF order 5, jac=, rtol {r:g}", name, "bdf", bdf5, rtol=r, jac=True,
                                 jacobian="dense"))
        out.append(PnodeCase("pnode Rosenbrock-W rodas3", name, "rosw", {"ts_rosw_type": "rodas3"}, jacobian="dense"))
    out += [ScipyCase("scipy BDF", name, "BDF"), ScipyCase("scipy BDF, torch rhs", name, "BDF", torch_rhs=True),
            ScipyCase("scipy LSODA", name, "LSODA")]
    if jx is not None:
        out += [DiffraxCase(f"diffrax {solver}", name, solver, jx) for solver in ("Kvaerno5", "Kvaerno3")]
    return out


def rhs_cost(func: Callable, y0: tuple) -> float:
    """Seconds per call of a torch right-hand side alone."""
    y, t = torch.tensor(y0, dtype=DT), torch.zeros((), dtype=DT)
    with torch.no_grad():
        for _ in range(100):
            func(t, y)
        tic = time.perf_counter()
        for _ in range(2000):
            func(t, y)
    return (time.perf_counter() - tic) / 2000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    ap.add_argument("--no-diffrax", action="store_true", help="leave diffrax out even where it is installed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    jx = None if args.no_diffrax else load_diffrax()
    for name in args.problems:
        ref = reference(name)
        group = cases(name, jx)
        errors = {c.label: error(c.run(), ref) for c in group}  # warm-up
        times: dict[str, list[float]] = {c.label: [] for c in group}
        for _ in range(args.repeats):
            for c in group:
                tic = time.perf_counter()
                c.run()
                times[c.label].append(time.perf_counter() - tic)
        p = PROBLEMS[name]
        cost, cost_elementwise = rhs_cost(p.torch_rhs, p.y0), rhs_cost(p.elementwise, p.y0)
        median = {label: statistics.median(v) for label, v in times.items()}
        bases = {"scipy BDF": median["scipy BDF"], "LSODA": median["scipy LSODA"]}
        compiled_cases = [c for c in group if isinstance(c, DiffraxCase)]
        if compiled_cases:
            bases["diffrax best"] = min(median[c.label] for c in compiled_cases)
        print(f"\n{name}: t in [0, {p.T:g}], rtol {p.rtol:g}, atol {p.atol:g}; median of {args.repeats}; "
              f"torch rhs {cost * 1e6:.1f} us a call (element-wise form {cost_elementwise * 1e6:.1f} us)\n")
        print("| solver | seconds | " + " | ".join(f"/ {b}" for b in bases)
              + " | steps | rejected | Newton its | Jacobians | rhs calls | rhs share | error |")
        print("|---|---|" + "---|" * len(bases) + "---|---|---|---|---|---|---|")
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        for c in group:
            sec = median[c.label]
            k = c.counts()
            each = cost_elementwise if isinstance(c, PnodeCase) and c.func is p.elementwise else cost
            share = f"{k['rhs'] * each / sec:.0%}" if isinstance(c, PnodeCase) or "torch" in c.label else "-"
            ratios = " | ".join(f"{sec / b:.2f}" for b in bases.values())
            print(f"| {c.label} | {sec:.4f} | {ratios} | {k['steps']} | {fmt(k['rejected'])} "
                  f"| {fmt(k['newton'])} | {k['jacobians']} | {fmt(k['rhs'])} | {share} | {errors[c.label]:.1e} |")
        for c in compiled_cases:
            print(f"\n{c.label}: compiled in {c.compile_s:.2f} s (not in its seconds); Jacobians = attempted "
                  "steps (VeryChord: one Jacobian and LU per step); diffrax does not count Newton iterations")


if __name__ == "__main__":
    main()
